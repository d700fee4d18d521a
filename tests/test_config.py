import pytest

from latr_sglang.config import PRESETS, ConfigError, LATRConfig


def test_presets_hold_the_released_values():
    countdown = LATRConfig.preset("countdown")
    assert (countdown.tau_abs, countdown.tau_rel, countdown.prune_edit_distance_below) == (0.25, 0.15, 0.4)
    assert countdown.force_return_step == 512 and countdown.lookahead_steps == (20, 30, 50)
    math_cfg = LATRConfig.preset("math")
    assert (math_cfg.tau_abs, math_cfg.tau_rel) == (0.15, 0.25)
    assert (math_cfg.prune_suffix_match_above, math_cfg.prune_rouge_l_above) == (0.2, 0.5)
    assert math_cfg.prune_edit_distance_below is None and math_cfg.force_return_step == 1024
    assert math_cfg.mix_ratio_schedule == {0: 1.0, 100: 0.75, 200: 0.5, 300: 0.25}
    assert LATRConfig.preset("math", chunk_size=8).chunk_size == 8


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"tau_abs": 1.5}, "tau_abs"),
        ({"tau_rel": -0.1}, "tau_rel"),
        ({"max_branch_per_token": 0}, "max_branch_per_token"),
        ({"lookahead_steps": ()}, "lookahead_steps"),
        ({"lookahead_steps": (30, 20)}, "lookahead_steps"),
        ({"lookahead_steps": (0, 20)}, "lookahead_steps"),
        ({"mix_ratio_schedule": {"a": 1.0}}, "mix_ratio_schedule"),
        ({"mix_ratio_schedule": {0: 2.0}}, "mix_ratio_schedule"),
        ({"mix_ratio_schedule": {5: 1.0}}, "step 0"),
        ({"rel_rule": "reversed"}, "rel_rule"),
        ({"tree_sampling": "beam"}, "tree_sampling"),
        ({"exit_scope": "global"}, "exit_scope"),
        ({"exit_age_rule": "children"}, "exit_age_rule"),
        ({"exempt_rule": "set"}, "exempt_rule"),
        ({"admission_order": "random"}, "admission_order"),
        ({"fill_after_finished_root": "drop"}, "fill_after_finished_root"),
        ({"fork_between_stops": "no"}, "fork_between_stops"),
        ({"prune_rouge_l_above": 3}, "prune_rouge_l_above"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_bad_values_are_named(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        LATRConfig(**kwargs)


def test_unknown_preset_and_fields_are_named():
    with pytest.raises(ConfigError, match="gsm8k"):
        LATRConfig.preset("gsm8k")
    with pytest.raises(ConfigError, match="tau_abz"):
        LATRConfig.from_dict({"tau_abz": 0.1})


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_save_load_round_trip(tmp_path, preset, suffix):
    cfg = LATRConfig.preset(preset, tree_sampling="sample", exit_scope="batch")
    path = tmp_path / f"latr{suffix}"
    cfg.save(path)
    assert LATRConfig.load(path) == cfg


def test_from_dict_layers_overrides_on_a_preset():
    cfg = LATRConfig.from_dict(
        {"preset": "math", "tau_abs": 0.3, "mix_ratio_schedule": {"0": 1.0, "50": 0.5}}
    )
    assert cfg.tau_abs == 0.3 and cfg.tau_rel == 0.25 and cfg.mix_ratio_schedule == {0: 1.0, 50: 0.5}


def test_every_field_has_help():
    import dataclasses

    for f in dataclasses.fields(LATRConfig):
        assert f.metadata.get("help"), f.name
