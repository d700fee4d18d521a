"""The LATR-vs-stochastic experiment: table and plot from run directories; the script end to end (slow)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest

from latr_sglang.bench import experiment

REPO = Path(__file__).resolve().parents[2]
COLUMNS = [
    "train/global_step",
    "skipped_step",
    "timing/step_total",
    "rollout/response_length_mean",
    "latr/pairwise_edit_distance",
    "latr/reward_tie_fraction",
]


def write_run(root: Path, name: str, ties: list[float], evals: dict[str, float], step_s: float = 2.0) -> Path:
    """A run directory as the local trainer writes it: metrics.csv, eval_*.json, summary.json."""
    run = root / name
    run.mkdir(parents=True)
    with open(run / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for i, tie in enumerate(ties):
            w.writerow([i + 1, 1.0 if tie == 1.0 else 0.0, step_s, 9.0 + i, 0.5, tie])
    for tag, p1 in evals.items():
        (run / f"eval_{tag}.json").write_text(json.dumps({"n": 8, "pass@1": p1, "pass@8": min(1, 3 * p1)}))
    (run / "summary.json").write_text(json.dumps({"train_s": step_s * len(ties), "total_s": 99.0}))
    return run


def test_aggregates_over_seeds_and_finds_steps_to_target(tmp_path):
    write_run(tmp_path, "latr-seed1", [0.5, 0.25, 0.0, 0.0], {"before": 0.1, "step2": 0.3, "after": 0.4})
    write_run(tmp_path, "latr-seed2", [0.5, 0.5, 0.25, 0.25], {"before": 0.1, "step2": 0.2, "after": 0.3})
    write_run(
        tmp_path, "stochastic-seed1", [1.0, 0.75, 0.5, 0.5], {"before": 0.1, "step2": 0.1, "after": 0.2}
    )
    (tmp_path / "latr-seed1.log").write_text("a log beside the runs is not a run\n")
    runs = experiment.read_runs(tmp_path)
    assert [(r.arm, r.seed) for r in runs] == [("latr", 1), ("latr", 2), ("stochastic", 1)]
    assert sorted(runs[0].evals) == [0, 2, 4]  # before = step 0, step2, after = the last logged step
    assert runs[0].evals[2] == {"pass@1": 0.3, "pass@n": pytest.approx(0.9)}
    agg = experiment.aggregate(runs, target=0.25)
    latr, sto = agg["arms"]["latr"], agg["arms"]["stochastic"]
    assert latr["steps_to_target"] == [2, 4] and latr["reached"] == 2
    assert sto["steps_to_target"] == [None] and sto["reached"] == 0
    assert latr["pass@1_after"]["mean"] == pytest.approx(0.35)
    assert latr["gain"]["mean"] == pytest.approx(0.25)
    assert latr["nontied_mean"]["mean"] == pytest.approx(1 - (0.75 / 4 + 1.5 / 4) / 2)
    assert latr["per_step"]["nontied"][1]["mean"] == pytest.approx(0.5)
    assert sto["skipped_steps"] == [1]  # the all-tied step 1
    assert latr["curve"]["pass@1"][2]["min"] == pytest.approx(0.2)
    assert latr["curve"]["pass@1"][2]["max"] == pytest.approx(0.3)
    text = experiment.table(agg)
    assert "| latr | 2 (2) |" in text and "2, 4 (2/2 reached)" in text and "- (0/1 reached)" in text
    assert "pass@8 after" in text


def test_main_writes_table_json_and_plot(tmp_path, capsys):
    write_run(tmp_path, "latr-seed1", [0.5, 0.25], {"before": 0.1, "after": 0.3})
    write_run(tmp_path, "stochastic-seed1", [0.75, 0.5], {"before": 0.1, "after": 0.2})
    assert experiment.main([str(tmp_path), "--target-pass1", "0.3"]) == 0
    assert (tmp_path / "experiment.png").stat().st_size > 10_000
    data = json.loads((tmp_path / "experiment.json").read_text())
    assert data["arms"]["latr"]["steps_to_target"] == [2]
    assert (tmp_path / "experiment.md").read_text().startswith("| arm |")
    assert "stochastic" in capsys.readouterr().out


def test_unreadable_roots_fail_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        experiment.main([str(tmp_path)])
    assert "no run directories" in capsys.readouterr().err
    (tmp_path / "latr-seed1").mkdir()
    with pytest.raises(SystemExit):
        experiment.main([str(tmp_path)])
    assert "no metrics.csv" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        experiment.main([str(tmp_path), "--target-pass1", "2"])
    assert "--target-pass1 2" in capsys.readouterr().err
    (tmp_path / "latr-seed1" / "metrics.csv").write_text(
        "train/global_step,latr/reward_tie_fraction\n1,0.5\n"
    )
    for content, needle in (
        ("[1, 2]", "expected a JSON object, got list"),
        ("{nope", "not valid JSON"),
        ('{"n": 8}', "no pass@1"),
        ('{"pass@1": "high"}', "pass@1 must be numbers"),
        ('{"pass@1": 0.5, "n": -2}', "n=-2 is not a positive integer"),
    ):
        (tmp_path / "latr-seed1" / "eval_after.json").write_text(content)
        with pytest.raises(SystemExit):
            experiment.main([str(tmp_path)])
        err = capsys.readouterr().err
        assert f"{tmp_path / 'latr-seed1' / 'eval_after.json'}: {needle}" in err and "Traceback" not in err


@pytest.mark.slow
def test_experiment_script_smoke_runs_both_arms_and_reports(tmp_path):
    """SMOKE=1: the real trainer on a tiny random model, one seed per arm, 2 steps; then the report."""
    env = {**os.environ, "SMOKE": "1", "SMOKE_SEEDS": "1", "OUT": str(tmp_path / "exp")}
    done = subprocess.run(
        [str(REPO / "scripts" / "experiment-cpu.sh")], env=env, capture_output=True, text=True, timeout=1500
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = tmp_path / "exp"
    for arm in ("latr", "stochastic"):
        assert (out / f"{arm}-seed1" / "eval_after.json").exists()
    data = json.loads((out / "experiment.json").read_text())
    assert set(data["arms"]) == {"latr", "stochastic"}
    assert (out / "experiment.png").exists()
    # a second call keeps the finished runs and only rebuilds the report
    again = subprocess.run(
        [str(REPO / "scripts" / "experiment-cpu.sh")], env=env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0 and again.stdout.count("done before, kept") == 2
