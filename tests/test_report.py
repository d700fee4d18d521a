"""latr-sglang report: runs' logs -> one CSV and plots; TensorBoard runs (OpenRLHF's Ray trainer) too."""

import csv
import subprocess
import sys

import pytest

from latr_sglang.report import eval_table, load_run, report


def write_metrics(path, rows):
    path.mkdir(parents=True)
    keys = sorted({k for r in rows for k in r})
    with open(path / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows(rows)


def test_two_runs_side_by_side(tmp_path):
    write_metrics(
        tmp_path / "latr", [{"train/global_step": s, "rollout/reward_mean": 0.1 * s} for s in (1, 2)]
    )
    write_metrics(
        tmp_path / "stoch", [{"train/global_step": s, "rollout/reward_mean": 0.05 * s} for s in (1, 2)]
    )
    combined, images = report([str(tmp_path / "latr"), str(tmp_path / "stoch")], tmp_path / "out")
    with open(combined, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["run"], r["step"]) for r in rows] == [
        ("latr", "1"),
        ("latr", "2"),
        ("stoch", "1"),
        ("stoch", "2"),
    ]
    assert float(rows[1]["rollout/reward_mean"]) == pytest.approx(0.2)
    assert [p.name for p in images] == ["reward.png"]


def test_tensorboard_runs_are_read(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "ray_run" / "tensorboard"))
    for step in range(1, 4):
        writer.add_scalar("train/reward", 0.2 * step, step)
        writer.add_scalar("latr/branches_created", 2.0, step)
    writer.close()
    run = load_run(tmp_path / "ray_run")
    assert sorted(run.series["train/reward"]) == [
        (1, pytest.approx(0.2)),
        (2, pytest.approx(0.4)),
        (3, pytest.approx(0.6)),
    ]
    assert eval_table([run]) == ""


def test_bad_run_directories_are_named(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "latr_sglang.cli", "report", str(tmp_path / "missing")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "missing" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no metrics\.csv"):
        load_run(tmp_path / "empty")
