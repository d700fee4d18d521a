import warnings

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


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        # not a list: tuple(20) raised a bare TypeError, a dict or a string became steps silently
        ({"lookahead_steps": 20}, "lookahead_steps=20: must be a list"),
        ({"lookahead_steps": None}, "lookahead_steps=None: must be a list"),
        ({"lookahead_steps": {5: 1}}, r"lookahead_steps=\{5: 1\}: must be a list"),
        ({"lookahead_steps": "20"}, "lookahead_steps='20': must be a list"),
        # a number or None crashed the first prune check mid-run
        ({"exempt_chars": 5}, "exempt_chars=5: must be a string"),
        ({"exempt_chars": None}, "exempt_chars=None: must be a string"),
        # True is an int to Python, never a count, a step, a threshold or a mix ratio here
        ({"max_branch_per_token": True}, "max_branch_per_token=True"),
        ({"chunk_size": True}, "chunk_size=True"),
        ({"force_return_step": True}, "force_return_step=True"),
        ({"prune_edit_distance_below": True}, "prune_edit_distance_below=True"),
        ({"mix_ratio_schedule": {0: True}}, "value True at step 0"),
    ],
)
def test_values_of_the_wrong_type_are_named(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        LATRConfig(**kwargs)
    assert LATRConfig(lookahead_steps=[2, 4]).lookahead_steps == (2, 4)  # a list (YAML, JSON) still is one


def test_an_unknown_preset_or_field_is_a_config_error_everywhere():
    with pytest.raises(ConfigError, match="unknown LATR preset 'nope'; known: countdown, math, small"):
        LATRConfig.from_dict({"preset": "nope"})
    with pytest.raises(ConfigError, match="unknown LATR preset"):
        LATRConfig.from_dict({"preset": ["countdown"]})
    with pytest.raises(ConfigError, match=r"unknown LATR config field.*bogus"):
        LATRConfig.preset("countdown", bogus=1)


def test_load_names_the_file_and_what_is_wrong(tmp_path):
    cases = {
        "la.yaml": ("lookahead_steps: 20\n", "lookahead_steps=20"),
        "list.json": ("[1, 2]", "must hold a mapping"),
        "bad.json": ("{nope", "not valid JSON"),
        "bin.json": (b"\xff\xfe", "not UTF-8"),
        # a billion-laughs file: 10 levels of 10 aliases, refused while parsing (built, it is 10**10 values)
        "bomb.yaml": (
            "exempt_chars:\n  - &a0 [1,1,1,1,1,1,1,1,1,1]\n"
            + "".join(f"  - &a{i} [{','.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10)),
            "uses YAML aliases",
        ),
        "huge.yaml": ("tree_part_interval: 100000000000000000000\n", "must be at most 2147483647 tokens"),
    }
    for name, (text, needle) in cases.items():
        path = tmp_path / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(ConfigError, match=needle) as e:
            LATRConfig.load(path)
        assert str(path) in str(e.value)
    with pytest.raises(ConfigError, match="no such file"):
        LATRConfig.load(tmp_path / "missing.yaml")


def test_a_tree_phase_too_short_for_any_prune_check_is_warned_about():
    with pytest.warns(
        UserWarning, match=r"lookahead_steps=\[20, 30\] start at or after force_return_step=20"
    ):
        LATRConfig(lookahead_steps=(20, 30), force_return_step=20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LATRConfig(lookahead_steps=(20, 30), force_return_step=21)


def test_a_huge_value_is_named_in_a_bounded_message():
    with pytest.raises(ConfigError) as e:
        LATRConfig(exempt_chars=[[list(range(1000))] * 1000] * 1000)
    assert len(str(e.value)) < 300 and "must be a string" in str(e.value)
