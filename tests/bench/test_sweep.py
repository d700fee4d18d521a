"""The LATR sweep (latr_sglang.bench.sweep) on a tiny random model, and its parsing of settings."""

from __future__ import annotations

import json
import math

import pytest

from latr_sglang.algorithm import fork_tokens
from latr_sglang.bench import sweep
from latr_sglang.config import ConfigError, LATRConfig


def test_grid_is_the_cartesian_product_parsed_like_the_flags():
    settings = sweep.grid_settings(["tau_abs=0.1|0.2", "lookahead_steps=2,4|8", "tree_sampling=sample"])
    assert len(settings) == 4
    assert settings[0] == {"tau_abs": 0.1, "lookahead_steps": (2, 4), "tree_sampling": "sample"}
    assert {s["lookahead_steps"] for s in settings} == {(2, 4), (8,)}


def test_config_setting_keeps_commas_inside_a_value():
    setting = sweep.config_setting("tau_abs=0.05,lookahead_steps=2,4,8,chunk_size=4")
    assert setting == {"tau_abs": 0.05, "lookahead_steps": (2, 4, 8), "chunk_size": 4}
    assert sweep.build_config("countdown", setting).lookahead_steps == (2, 4, 8)


@pytest.mark.parametrize(
    "item, needle",
    [("tau_abz=0.1", "tau_abz"), ("tau_abs", "FIELD=V1"), ("chunk_size=four", "chunk_size")],
)
def test_bad_grid_items_name_the_value(item, needle):
    with pytest.raises(ConfigError, match=needle):
        sweep.grid_settings([item])


def test_out_of_range_values_fail_in_the_config_validation():
    with pytest.raises(ConfigError, match="tau_abs"):
        sweep.build_config("countdown", sweep.config_setting("tau_abs=1.5"))


def test_the_main_jobs_task_is_scored_by_the_countdown_reward(tiny_engine):
    tok = tiny_engine.tokenizer
    task = sweep.make_task("countdown-fewshot", tok, 20, seed=3, max_new_tokens=None)
    assert len(task.prompt_ids) == 20 and task.max_new_tokens == 14
    assert task.stop_token_ids and all("\n" in tok.decode([t]) for t in task.stop_token_ids)
    for i, (numbers, target) in enumerate(task.labels):
        assert len(numbers) == 2 and all(1 <= x <= 12 for x in numbers) and target >= 1
        assert task.texts[i].endswith(f"Numbers: {numbers[0]} {numbers[1]}. Target: {target}. Answer:")
        assert tok.decode(task.prompt_ids[i]).endswith("Answer: <answer>")  # the prefill is in the prompt
    (a, b), target = task.labels[0]
    op = next(op for op in "+-*" if {"+": a + b, "-": a - b, "*": a * b}[op] == target)
    assert task.score(0, f" {a} {op} {b} </answer>") == (1.0, True, f"{a}{op}{b}")
    assert task.score(0, f" {a} / {b} + 0 </answer>")[:2] == (0.1, False)  # well formed, wrong numbers
    assert task.score(0, f" {a} {op} {b}") == (0.0, False, None)  # never closed: no answer


def test_paired_difference_and_its_interval():
    mean, half = sweep.paired_diff([3, 4, 5, 6], [2, 2, 2, 2])
    assert mean == 2.5 and 0 < half < 2.5
    assert sweep.paired_diff([1.0], [0.0])[0] == 1.0


def test_sweep_on_a_tiny_model_reports_every_setting_against_stochastic(tiny_engine):
    task = sweep.make_task("countdown-fewshot", tiny_engine.tokenizer, 3, seed=0, max_new_tokens=6)
    wide = LATRConfig.preset("countdown", tau_abs=0.0, tau_rel=1.0, lookahead_steps=(2, 4), chunk_size=4)
    never = LATRConfig.preset("countdown", tau_abs=1.0, lookahead_steps=(2, 4), chunk_size=4)
    summary = sweep.run_sweep(
        tiny_engine, task, [("wide", wide), ("never", never)], n=4, stochastic_every=1, prompts_per_batch=2
    )
    rows = {r["name"]: r for r in summary["rows"]}
    assert set(rows) == {"stochastic", "wide", "never"}
    assert rows["stochastic"]["runs"] == 3  # before, between and after the two settings
    assert rows["never"]["forks"] == 0  # no candidate has p > 1
    assert rows["wide"]["forks"] == 3  # every position qualifies: the tree fills its 4 slots
    for name in ("wide", "never"):
        r = rows[name]
        assert r["wall_ratio"] > 0 and r["cpu_ratio"] > 0
        assert 0 <= r["edit_distance"] <= 1 and 1 <= r["distinct_responses"] <= 4
    # a tree that never forks is one greedy branch plus stochastic fills from its prefix: never more distinct
    # responses than n, and its root is the greedy continuation
    assert rows["never"]["distinct_responses"] <= 4
    text = sweep.table(summary["rows"])
    assert text.count("\n") == 4 and "| wide |" in text and "(3 runs)" in text
    assert len(summary["arms"]) == 5


def test_main_writes_table_and_json(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "sweep.json"
    code = sweep.main(
        [
            "--model",
            str(tiny_model_dir),
            "--num-prompts",
            "2",
            "--n",
            "3",
            "--max-new-tokens",
            "4",
            "--grid",
            "chunk_size=2|4",
            "--config",
            "tau_abs=0.0,tau_rel=1.0,lookahead_steps=2",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "| chunk_size=2 |" in printed and "| tau_abs=0.0 tau_rel=1.0 lookahead_steps=2 |" in printed
    data = json.loads(out.read_text())
    assert data["rows"][0]["name"] == "stochastic" and len(data["rows"]) == 4
    assert data["rows"][3]["config"]["lookahead_steps"] == [2]


def test_main_rejects_bad_input_with_one_line(capsys):
    with pytest.raises(SystemExit):
        sweep.main(["--grid", "tau_abs=0.1|x"])
    assert "tau_abs='x'" in capsys.readouterr().err


# ---- the preset `small` (the main job's LATR setting, chosen by this sweep) ----------------------------
# Raw top-3 distributions of SmolLM2-135M-Instruct on countdown-fewshot answers (greedy, 2026-12-01): the
# operator of "7 + 7" and of "7 + 10", and the first digit of "6 * 10".
OPERATOR_CLOSE = [(10, math.log(0.40)), (11, math.log(0.34)), (12, math.log(0.14))]
OPERATOR_CLEAR = [(10, math.log(0.67)), (12, math.log(0.18)), (11, math.log(0.09))]
DIGIT = [(20, math.log(0.77)), (21, math.log(0.19)), (22, math.log(0.01))]


def test_small_preset_is_valid_and_round_trips(tmp_path):
    cfg = LATRConfig.preset("small")
    assert cfg.max_branch_per_token == 3 and cfg.tau_abs == 0.05 and cfg.tree_sampling == "greedy"
    # pruning checks must fall inside the main job's answers (<= 14 new tokens), unlike the released 20/30/50
    assert max(cfg.lookahead_steps) < 14
    path = tmp_path / "small.json"
    cfg.save(path)
    assert LATRConfig.load(path) == cfg
    assert LATRConfig.from_dict({"preset": "small", "tau_abs": 0.1}).tau_abs == 0.1


def test_small_forks_where_the_small_model_hesitates_and_the_released_thresholds_do_not():
    small, released = LATRConfig.preset("small"), LATRConfig.preset("countdown")
    assert fork_tokens(OPERATOR_CLOSE, small) == [11, 12]
    assert fork_tokens(OPERATOR_CLOSE, released) == [11]
    assert fork_tokens(OPERATOR_CLEAR, small) == [12, 11]
    assert fork_tokens(OPERATOR_CLEAR, released) == []
    assert fork_tokens(DIGIT, small) == [21]  # p = 0.01 stays below tau_abs
    assert fork_tokens(DIGIT, released) == []


@pytest.mark.slow
def test_small_groups_hold_more_distinct_answers_than_plain_sampling_on_smollm2():
    """The preset's claim, re-measured on 8 prompts of the main job's task (about a minute on 2 cores)."""
    from latr_sglang.engines.torch_engine import TorchEngine

    engine = TorchEngine.from_pretrained("smollm2")
    try:
        task = sweep.make_task("countdown-fewshot", engine.tokenizer, 8, seed=2, max_new_tokens=None)
        summary = sweep.run_sweep(
            engine, task, [("small", LATRConfig.preset("small"))], n=8, prompts_per_batch=4
        )
    finally:
        engine.close_sync()
    sto, small = summary["rows"]
    assert small["forks"] >= 5  # the tree fills most of its 8 slots
    assert small["distinct_answers"] >= sto["distinct_answers"] + 1.5
    assert small["d_distinct_answers"] - small["d_distinct_answers_ci"] > 0
