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
    # the run's own evaluation: what `eval --run` uses unless told otherwise
    assert (settings.max_new_tokens, settings.temperature, settings.n) == (
        cfg.max_new_tokens,
        cfg.temperature,
        cfg.eval_n,
    )
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        run_settings(tmp_path / "nothing")


def test_a_run_config_value_of_the_wrong_type_is_named_with_the_file(tmp_path):
    import dataclasses
    import json

    from openrlhf_ext.local.data import run_settings
    from openrlhf_ext.local_trainer import LocalTrainConfig

    train = {**dataclasses.asdict(LocalTrainConfig()), "countdown_numbers": 5}
    (tmp_path / "config.json").write_text(json.dumps({"train": train}, default=str))
    with pytest.raises(ValueError, match=r"config.json: train.countdown_numbers=5: expected a list of 2"):
        run_settings(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"train": [1]}))
    with pytest.raises(ValueError, match=r"'train' is not an object"):
        run_settings(tmp_path)


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
