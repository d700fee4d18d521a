"""Reading a local training run's settings for an evaluation of its policy (`latr-sglang eval --run DIR`)."""

import pytest


def test_an_evaluation_can_take_a_local_runs_prompt_settings(tmp_path):
    import dataclasses
    import json

    from openrlhf_ext.local.data import run_settings
    from openrlhf_ext.local_trainer import LocalTrainConfig

    cfg = LocalTrainConfig(eval_prompts=3)
    (tmp_path / "config.json").write_text(
        json.dumps({"train": dataclasses.asdict(cfg), "latr": {}}, default=str)
    )
    settings = run_settings(tmp_path)
    assert (settings.chat, settings.response_prefix, settings.stop_at_newline) == (
        cfg.chat,
        cfg.prefix,
        cfg.stops_at_newline,
    )
    assert settings.held_out is not None and len(settings.held_out) == 3
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        run_settings(tmp_path / "nothing")


def test_a_malformed_label_is_refused_at_load_time_naming_the_row(tmp_path):
    """A label the reward cannot use would score 0 on every sample and train on nothing (F12)."""
    import json

    from openrlhf_ext.local.data import load_problems
    from openrlhf_ext.local_trainer import LocalTrainConfig

    good = {"prompt": "a", "label": {"numbers": ["19", 36, 55, 7], "target": "65"}}  # integer strings: fine
    path = tmp_path / "p.jsonl"
    path.write_text(
        json.dumps(good) + "\n" + json.dumps({"prompt": "b", "label": {"numbers": "x", "target": 3}})
    )
    with pytest.raises(
        ValueError, match=r"row 2: label: label.numbers='x': must be a non-empty list of integers"
    ):
        load_problems(LocalTrainConfig(prompts=str(path)))
    path.write_text(json.dumps(good) + "\n" + json.dumps({"prompt": "b", "label": [1, 2]}))
    with pytest.raises(ValueError, match=r"row 2: label: label=\[1, 2\]: expected a math answer"):
        load_problems(LocalTrainConfig(prompts=str(path)))
    path.write_text(json.dumps(good))
    assert load_problems(LocalTrainConfig(prompts=str(path)))[0] == [("a", good["label"])]
