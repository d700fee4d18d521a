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
