"""latr-sglang report: runs' logs -> one CSV and plots; TensorBoard runs (OpenRLHF's Ray trainer) too."""

import csv
import json
import subprocess
import sys
from pathlib import Path

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
    assert [p.name for p in images] == ["reward.png", "summary.md"]


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


def _local_run(path, sampler="latr", skipped=(3,), after_pass=0.0):
    rows = [
        {
            "train/global_step": s,
            "rollout/reward_mean": 0.01 * s,
            "rollout/accuracy_mean": 0.0,
            "skipped_step": 1.0 if s in skipped else 0.0,
            "timing/step_total": 30.0,
        }
        for s in range(1, 6)
    ]
    write_metrics(path, rows)
    (path / "config.json").write_text(
        json.dumps({"train": {"task": "countdown", "algo": "dapo", "sampler": sampler, "reward": "shaped",
                              "learning_rate": 3e-05, "steps": 5}, "latr": {"tau_abs": 0.25}})
    )  # fmt: skip
    for tag, value in (("before", 0.0), ("after", after_pass)):
        (path / f"eval_{tag}.json").write_text(
            json.dumps({"prompts": 16, "n": 8, "pass@1": value, "pass@8": value, "reward_mean": 0.05,
                        "well_formed_rate": 0.5, "distinct_answers_mean": 2.0, "response_length_mean": 9.0,
                        "examples": [{"label": "3", "response": "<answer> 3 </answer>", "reward": 0.1}]})
        )  # fmt: skip


def test_skipped_steps_heldout_points_and_a_summary(tmp_path):
    _local_run(tmp_path / "demo", skipped=(2, 4), after_pass=0.25)
    run = load_run(tmp_path / "demo")
    assert run.skipped_steps == [2, 4] and run.steps == [1, 2, 3, 4, 5]
    # the evaluation before/after becomes a held-out accuracy series at step 0 and the last step
    assert run.series["heldout/pass@1"] == [(0, 0.0), (5, 0.25)]
    _, files = report([str(tmp_path / "demo")], tmp_path / "out")
    names = [f.name for f in files]
    assert names == ["reward.png", "heldout.png", "optimization.png", "eval.png", "summary.md"]
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| sampler | `latr` |" in summary and "| learning_rate | `3e-05` |" in summary
    assert "2 skipped (2, 4)" in summary
    assert "| before RL | 0.05 | 0 |" in summary and "| after RL | 0.05 | 0.25 |" in summary
    assert "![reward](reward.png)" in summary


def test_reference_lines_follow_the_runs_reward():
    from latr_sglang.report import Run, reference_lines

    shaped = Run("a", Path("a"), config={"train": {"task": "countdown", "reward": "shaped"}})
    accuracy_only = Run("b", Path("b"), config={"train": {"task": "countdown", "reward": "accuracy"}})
    assert [y for y, _ in reference_lines("rollout/reward_mean", [shaped])] == [0.1]
    assert reference_lines("rollout/reward_mean", [accuracy_only]) == []
    assert [y for y, _ in reference_lines("latr/reward_tie_fraction", [accuracy_only])] == [1.0]


def test_runs_with_the_same_folder_name_stay_apart(tmp_path):
    _local_run(tmp_path / "a" / "final")
    _local_run(tmp_path / "b" / "final", sampler="stochastic")
    combined, _ = report([str(tmp_path / "a" / "final"), str(tmp_path / "b" / "final")], tmp_path / "out")
    with open(combined, newline="") as f:
        runs = {r["run"] for r in csv.DictReader(f)}
    assert runs == {"final (dapo+latr)", "final (dapo+stochastic)"}
    _local_run(tmp_path / "c" / "final")
    combined, _ = report([str(tmp_path / "a" / "final"), str(tmp_path / "c" / "final")], tmp_path / "out2")
    with open(combined, newline="") as f:
        runs = {r["run"] for r in csv.DictReader(f)}
    assert runs == {"a/final (dapo+latr)", "c/final (dapo+latr)"}


def test_a_resumed_run_logs_each_step_once(tmp_path):
    write_metrics(
        tmp_path / "r",
        [{"train/global_step": s, "rollout/reward_mean": v} for s, v in ((1, 0.1), (2, 0.2), (2, 0.3))],
    )
    assert load_run(tmp_path / "r").series["rollout/reward_mean"] == [(1, 0.1), (2, 0.3)]


def test_evaluations_during_training_join_the_heldout_series(tmp_path):
    _local_run(tmp_path / "r", after_pass=0.5)
    (tmp_path / "r" / "eval_step3.json").write_text(json.dumps({"n": 8, "pass@1": 0.25, "pass@8": 0.5}))
    (tmp_path / "r" / "eval_stepX.json").write_text("{}")  # not a step: ignored
    run = load_run(tmp_path / "r")
    assert run.series["heldout/pass@1"] == [(0, 0.0), (3, 0.25), (5, 0.5)]
    assert run.series["heldout/pass@8"] == [(0, 0.0), (3, 0.5), (5, 0.5)]


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("eval_before.json", b"[1, 2]", "expected a JSON object with numeric pass@k fields, got list"),
        ("eval_after.json", b'"hi"', "expected a JSON object with numeric pass@k fields, got str"),
        ("eval_after.json", b'{"n": "x", "pass@1": "y"}', "n='x', expected a non-negative integer"),
        ("eval_after.json", b'{"n": 4, "pass@1": "y"}', "pass@1='y', expected a number"),
        ("eval_after.json", b'{"n": 4, "examples": [1]}', "examples must be a list of objects"),
        ("eval_before.json", b"\xff\xfe", "not UTF-8 text"),
        ("metrics.csv", b"\xff\xfe", "not UTF-8 text"),
        (
            "metrics.csv",
            b"train/global_step,rollout/reward_mean\n",
            "no row with a numeric train/global_step",
        ),
    ],
)
def test_badly_shaped_or_undecodable_run_files_are_named(tmp_path, name, content, needle):
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.csv").write_text("train/global_step,rollout/reward_mean\n1,0.5\n")
    (run / name).write_bytes(content)
    with pytest.raises(ValueError, match=needle) as e:
        load_run(run)
    assert str(e.value).startswith(f"{run / name}: "), e.value


def _tensorboard(folder, points, walltime=1000.0):
    """Event files in `folder`: {tag: [(step, value)]}, written at walltime + step."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(folder))
    for tag, values in points.items():
        for step, value in values:
            writer.add_scalar(tag, value, step, walltime=walltime + step)
    writer.close()


def test_a_folder_of_runs_is_reported_as_its_runs_not_merged(tmp_path, capsys):
    from latr_sglang.cli import main

    parent = tmp_path / "runs"
    # a local run as the trainer leaves it: metrics.csv, config.json, evaluations and tensorboard/ events
    _local_run(parent / "a")
    _tensorboard(parent / "a" / "tensorboard", {"rollout/reward_mean": [(s, 0.01 * s) for s in range(1, 6)]})
    # a Ray run: --logger.tensorboard_dir b/tensorboard, OpenRLHF writes b/tensorboard/RUN_NAME/
    _tensorboard(parent / "b" / "tensorboard" / "ppo_0101T10:00", {"train/reward": [(1, 0.2), (2, 0.4)]})
    assert main(["report", str(parent), "--output", str(tmp_path / "out")]) == 0
    assert f"{parent} is not a run but holds 2 runs (a, b): each reported as a run of its own" in (
        capsys.readouterr().out
    )
    with open(tmp_path / "out" / "metrics_combined.csv", newline="") as f:
        rows = [(r["run"], r["step"]) for r in csv.DictReader(f)]
    assert [step for run, step in rows if run == "a (dapo+latr)"] == ["0", "1", "2", "3", "4", "5"]
    assert [step for run, step in rows if run == "b"] == ["1", "2"] and len(rows) == 8  # step 0: before RL
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "## a (dapo+latr)" in summary and "## b" in summary and "## runs" not in summary
    # a's own settings, steps, time (5 steps x 30 s) and before/after evaluation, not the two runs summed
    assert "| sampler | `latr` |" in summary and "| after RL | 0.05 | 0 |" in summary
    assert "Steps logged: 5 (1..5)" in summary and "Training took 2.5 min" in summary
    with pytest.raises(
        ValueError, match=r"runs is not a run but holds 2 runs \(a, b\): pass them as separate"
    ):
        load_run(parent)  # one run is asked for: the folder is named as holding several

    # one run one level down is that run (its name, its config), and naming it and its folder reports it once
    _local_run(tmp_path / "one" / "demo")
    report([str(tmp_path / "one"), str(tmp_path / "one" / "demo")], tmp_path / "out1")
    assert "one is not a run but holds 1 run (demo): reported as that run" in capsys.readouterr().out
    summary = (tmp_path / "out1" / "summary.md").read_text()
    assert summary.count("## demo (dapo+latr)") == 1 and "## one" not in summary
    assert "| task | `countdown` |" in summary


def test_which_folders_are_runs(tmp_path):
    from latr_sglang.report import find_runs

    def runs(path):
        return {run.relative_to(tmp_path).as_posix(): len(dirs) for run, dirs in find_runs(path).items()}

    _local_run(tmp_path / "local")
    _tensorboard(tmp_path / "local" / "tensorboard", {"x": [(1, 1.0)]})
    (tmp_path / "local" / "checkpoints" / "step1").mkdir(parents=True)
    for name in ("ppo_0101T10:00", "ppo_0101T12:00"):  # a resumed Ray run: a new time-stamped run name
        _tensorboard(tmp_path / "ray" / "tensorboard" / name, {"x": [(1, 1.0)]})
    _tensorboard(tmp_path / "shared_tb" / "tb" / "run1", {"x": [(1, 1.0)]})
    assert runs(tmp_path / "local") == {"local": 0}  # a local run is read from its metrics.csv
    assert runs(tmp_path / "ray") == {"ray": 2}  # both event folders are the one run's
    assert runs(tmp_path / "local" / "tensorboard") == {"local/tensorboard": 1}  # the events passed as such
    # a tensorboard folder named itself: each folder of event files in it is a run, as TensorBoard shows it
    assert runs(tmp_path / "ray" / "tensorboard") == {
        "ray/tensorboard/ppo_0101T10:00": 1,
        "ray/tensorboard/ppo_0101T12:00": 1,
    }
    assert runs(tmp_path) == {"local": 0, "ray": 2, "shared_tb": 1}
    (tmp_path / "nothing").mkdir()
    assert runs(tmp_path / "nothing") == {}


def test_a_resumed_tensorboard_run_logs_each_step_once(tmp_path):
    tb = tmp_path / "ray" / "tensorboard"
    _tensorboard(tb / "ppo_0101T10:00", {"train/reward": [(1, 0.1), (2, 0.2), (3, 0.3)]}, walltime=100)
    # resumed from the step-2 checkpoint: step 3 again, then 4; the later value of step 3 counts
    _tensorboard(tb / "ppo_0101T12:00", {"train/reward": [(3, 0.35), (4, 0.4)]}, walltime=900)
    run = load_run(tmp_path / "ray")
    assert run.name == "ray" and run.series["train/reward"] == [
        (1, pytest.approx(0.1)),
        (2, pytest.approx(0.2)),
        (3, pytest.approx(0.35)),
        (4, pytest.approx(0.4)),
    ]


def test_step_axes_have_whole_number_ticks(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from latr_sglang.report import plot

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figures plot() draws to look at them
    write_metrics(tmp_path / "r", [{"train/global_step": s, "rollout/reward_mean": 0.1 * s} for s in (1, 2)])
    (tmp_path / "out").mkdir()
    plot([load_run(tmp_path / "r")], tmp_path / "out")
    axes = [ax for fig in figures for ax in fig.axes if ax.get_xlabel() == "training step"]
    assert axes
    for ax in axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    monkeypatch.undo()
    for fig in figures:
        plt.close(fig)


@pytest.mark.parametrize(
    ("train", "cell"),
    [
        ({"task": "countdown-fewshot", "response_prefix": None}, "`' <answer>'` (task default)"),
        ({"task": "countdown", "response_prefix": None}, "`''` (task default: none)"),
        ({"task": "countdown-fewshot", "response_prefix": "<a>"}, "`'<a>'`"),
        (
            {"task": "countdown-fewshot", "prompts": "p.jsonl", "response_prefix": None},
            "`''` (task default: none)",
        ),
    ],
)
def test_the_settings_show_the_response_prefix_the_run_used(tmp_path, train, cell):
    _local_run(tmp_path / "r")
    (tmp_path / "r" / "config.json").write_text(json.dumps({"train": {"sampler": "stochastic", **train}}))
    report([str(tmp_path / "r")], tmp_path / "out")
    assert f"| response_prefix | {cell} |" in (tmp_path / "out" / "summary.md").read_text()
    # the trainer's own derivation of the default agrees
    from latr_sglang.report import task_prefix
    from openrlhf_ext.local.config import LocalTrainConfig

    cfg = LocalTrainConfig(**train, eval_prompts=0)
    assert cfg.prefix == (
        train["response_prefix"] if train["response_prefix"] is not None else task_prefix(train)
    )
