"""LATR vs stochastic sampling over seeds: the runs of `scripts/experiment-cpu.sh` -> one table and one plot.

    python -m latr_sglang.bench.experiment outputs/experiment [--target-pass1 0.25] [--output DIR]

The root holds one directory per run, named `<arm>-seed<k>` (e.g. `latr-seed1`, `stochastic-seed1`), each
the output of the local trainer: `metrics.csv` (one row per step), `eval_before.json`, optional
`eval_step<K>.json` (held-out evaluations during training), `eval_after.json`, `summary.json`. Per arm, over
its seeds (mean and spread = sample standard deviation; plots: min..max band):
- held-out pass@1 and pass@n by step (step 0 = before training, the last step = after);
- steps to reach a fixed held-out pass@1 (`--target-pass1`): the first evaluated step at or above it;
- per training step: the share of groups with non-tied rewards (1 - latr/reward_tie_fraction, over every
  group sampled in the step, dynamic-sampling rounds included), within-group pairwise edit distance,
  response length, wall-clock per step; and the total training time.
Writes `experiment.md` (the table), `experiment.json` (the numbers) and `experiment.png` (the plot) to
--output (default: the root).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUN_NAME = re.compile(r"^(?P<arm>[A-Za-z0-9_.]+)-seed(?P<seed>-?\d+)$")
STEP_EVAL = re.compile(r"^eval_step(?P<step>\d+)\.json$")
PER_STEP = (  # (key in the run's series, label)
    ("nontied", "groups with non-tied rewards"),
    ("edit_distance", "within-group edit distance"),
    ("length", "response length (tokens)"),
    ("step_s", "wall-clock per step (s)"),
)


@dataclass
class Run:
    arm: str
    seed: int
    path: Path
    steps: list[int] = field(default_factory=list)  # training steps logged
    series: dict[str, list[float]] = field(default_factory=dict)  # per logged step
    skipped: list[bool] = field(default_factory=list)
    evals: dict[int, dict[str, float]] = field(default_factory=dict)  # step -> {"pass@1", "pass@n"}
    n: int | None = None  # samples per held-out problem
    train_s: float | None = None
    total_s: float | None = None
    finished: bool = False


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _json_object(file: Path) -> dict[str, Any]:
    """A run's JSON file as a dict, or a ValueError naming the file."""
    try:
        data = json.loads(file.read_bytes())
    except (ValueError, RecursionError) as e:  # not JSON, not UTF-8
        raise ValueError(f"{file}: not valid JSON ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(data).__name__}")
    return data


def _eval_point(data: dict[str, Any], file: Path) -> tuple[dict[str, float], int | None]:
    n = data.get("n")
    try:
        point = {"pass@1": float(data["pass@1"])}
        if n is not None and f"pass@{n}" in data:
            point["pass@n"] = float(data[f"pass@{n}"])
    except KeyError:
        raise ValueError(f"{file}: no pass@1 (not an evaluation the trainer wrote?)") from None
    except (TypeError, ValueError):
        raise ValueError(f"{file}: pass@1{f' / pass@{n}' if n else ''} must be numbers") from None
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(f"{file}: n={n!r} is not a positive integer")
    return point, n


def read_run(path: Path) -> Run:
    match = RUN_NAME.match(path.name)
    if match is None:
        raise ValueError(f"{path}: a run directory is named <arm>-seed<k>")
    run = Run(match["arm"], int(match["seed"]), path)
    metrics = path / "metrics.csv"
    if not metrics.exists():
        raise ValueError(f"{path}: no metrics.csv (the run did not start training)")
    with open(metrics, newline="") as f:
        rows = list(csv.DictReader(f))
    heldout: dict[int, dict[str, float]] = {}
    for i, row in enumerate(rows):
        step_value = _float(row.get("train/global_step")) if row.get("train/global_step") else i + 1
        if not math.isfinite(step_value):
            raise ValueError(f"{metrics}: row {i + 1}: train/global_step {row.get('train/global_step')!r}")
        step = int(step_value)
        run.steps.append(step)
        tie = _float(row.get("latr/reward_tie_fraction"))
        values = {
            "nontied": 1.0 - tie if not math.isnan(tie) else math.nan,
            "edit_distance": _float(row.get("latr/pairwise_edit_distance")),
            "length": _float(row.get("rollout/response_length_mean")),
            "step_s": _float(row.get("timing/step_total")),
        }
        for key, value in values.items():
            run.series.setdefault(key, []).append(value)
        run.skipped.append(_float(row.get("skipped_step")) == 1.0)
        p1 = _float(row.get("eval/pass@1"))  # a trainer that logs held-out evaluations as metrics
        if not math.isnan(p1):
            heldout[step] = {"pass@1": p1}
            pn = [k for k in row if k.startswith("eval/pass@") and k != "eval/pass@1"]
            if pn and not math.isnan(_float(row[pn[0]])):
                heldout[step]["pass@n"] = _float(row[pn[0]])
    run.evals.update(heldout)
    last = max(run.steps) if run.steps else 0
    for file in sorted(path.glob("eval_*.json")):
        data = _json_object(file)
        if file.name == "eval_before.json":
            step = 0
        elif file.name == "eval_after.json":
            step = last
        elif (m := STEP_EVAL.match(file.name)) is not None:
            step = int(m["step"])
        else:
            continue
        run.evals[step], n = _eval_point(data, file)
        run.n = n or run.n
    summary = path / "summary.json"
    if summary.exists():
        data = _json_object(summary)
        run.train_s, run.total_s = (
            value if isinstance(value, int | float) and not isinstance(value, bool) else None
            for value in (data.get("train_s"), data.get("total_s"))
        )
        run.finished = (path / "eval_after.json").exists()
    if run.train_s is None:
        run.train_s = sum(v for v in run.series.get("step_s", []) if not math.isnan(v))
    return run


def read_runs(root: Path) -> list[Run]:
    runs = [read_run(p) for p in sorted(root.iterdir()) if p.is_dir() and RUN_NAME.match(p.name)]
    runs = [r for r in runs if r.steps]
    if not runs:
        raise ValueError(f"{root}: no run directories <arm>-seed<k> with a metrics.csv")
    return sorted(runs, key=lambda r: (r.arm != "latr", r.arm, r.seed))


def _stats(values: Sequence[float]) -> dict[str, float]:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return {"mean": math.nan, "sd": math.nan, "min": math.nan, "max": math.nan, "count": 0}
    return {
        "mean": statistics.fmean(vals),
        "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        "min": min(vals),
        "max": max(vals),
        "count": len(vals),
    }


def steps_to(run: Run, target: float) -> int | None:
    """The first evaluated step whose held-out pass@1 reaches the target (None: never)."""
    for step in sorted(run.evals):
        if run.evals[step]["pass@1"] >= target:
            return step
    return None


def aggregate(runs: Sequence[Run], target: float) -> dict[str, Any]:
    arms: dict[str, list[Run]] = {}
    for r in runs:
        arms.setdefault(r.arm, []).append(r)
    out: dict[str, Any] = {"target_pass1": target, "arms": {}}
    for arm, rs in arms.items():
        eval_steps = sorted({s for r in rs for s in r.evals})
        curve = {
            key: {s: _stats([r.evals[s].get(key, math.nan) for r in rs if s in r.evals]) for s in eval_steps}
            for key in ("pass@1", "pass@n")
        }
        all_steps = sorted({s for r in rs for s in r.steps})
        per_step = {
            key: {s: _stats([r.series[key][r.steps.index(s)] for r in rs if s in r.steps]) for s in all_steps}
            for key, _ in PER_STEP
        }
        reached = [steps_to(r, target) for r in rs]
        first = {r.seed: min(r.evals) if r.evals else None for r in rs}
        last = {r.seed: max(r.evals) if r.evals else None for r in rs}
        out["arms"][arm] = {
            "seeds": [r.seed for r in rs],
            "finished": [r.finished for r in rs],
            "n": next((r.n for r in rs if r.n), None),
            "steps_logged": [len(r.steps) for r in rs],
            "skipped_steps": [sum(r.skipped) for r in rs],
            "pass@1_before": _stats([r.evals[first[r.seed]]["pass@1"] for r in rs if first[r.seed] == 0]),
            "pass@1_after": _stats([r.evals[last[r.seed]]["pass@1"] for r in rs if last[r.seed]]),
            "pass@n_after": _stats(
                [r.evals[last[r.seed]].get("pass@n", math.nan) for r in rs if last[r.seed]]
            ),
            "gain": _stats(
                [
                    r.evals[last[r.seed]]["pass@1"] - r.evals[0]["pass@1"]
                    for r in rs
                    if last[r.seed] and 0 in r.evals
                ]
            ),
            "steps_to_target": reached,
            "reached": sum(s is not None for s in reached),
            "steps_to_target_mean": statistics.fmean(s for s in reached if s is not None)
            if any(s is not None for s in reached)
            else None,
            **{
                f"{key}_mean": _stats(
                    [
                        statistics.fmean(v for v in r.series[key] if not math.isnan(v))
                        for r in rs
                        if _has(r, key)
                    ]
                )
                for key, _ in PER_STEP
            },
            "train_s": _stats([r.train_s or math.nan for r in rs]),
            "total_s": _stats([r.total_s or math.nan for r in rs]),
            "curve": curve,
            "per_step": per_step,
        }
    return out


def _has(run: Run, key: str) -> bool:
    return any(not math.isnan(v) for v in run.series.get(key, []))


def _ms(s: dict[str, float], digits: int = 3) -> str:
    if not s or s.get("count", 0) == 0 or math.isnan(s["mean"]):
        return "-"
    return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}"


def table(agg: dict[str, Any]) -> str:
    """One Markdown table: a row per arm, mean ± sd over its seeds."""
    arms = agg["arms"]
    n = next((a["n"] for a in arms.values() if a["n"]), "n")
    head = [
        "arm",
        "seeds (finished)",
        "pass@1 before",
        "pass@1 after",
        f"pass@{n} after",
        "gain",
        f"steps to pass@1 >= {agg['target_pass1']:g}",
        "non-tied groups",
        "edit distance",
        "response tokens",
        "s / step",
        "train s",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, a in arms.items():
        reached = a["steps_to_target"]
        steps = ", ".join("-" if s is None else str(s) for s in reached)
        lines.append(
            "| "
            + " | ".join(
                [
                    arm,
                    f"{len(a['seeds'])} ({sum(a['finished'])})",
                    _ms(a["pass@1_before"]),
                    _ms(a["pass@1_after"]),
                    _ms(a["pass@n_after"]),
                    _ms(a["gain"]),
                    f"{steps} ({a['reached']}/{len(reached)} reached)",
                    _ms(a["nontied_mean"], 2),
                    _ms(a["edit_distance_mean"], 3),
                    _ms(a["length_mean"], 1),
                    _ms(a["step_s_mean"], 1),
                    _ms(a["train_s"], 0),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def plot(agg: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = next((a["n"] for a in agg["arms"].values() if a["n"]), "n")
    panels = [("pass@1", "held-out pass@1"), ("pass@n", f"held-out pass@{n}"), *PER_STEP]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, (key, title) in zip(axes.flat, panels):
        for arm, a in agg["arms"].items():
            data = a["curve"][key] if key in ("pass@1", "pass@n") else a["per_step"][key]
            steps = [s for s in sorted(data) if data[s]["count"]]
            if not steps:
                continue
            mean = [data[s]["mean"] for s in steps]
            low = [data[s]["min"] for s in steps]
            high = [data[s]["max"] for s in steps]
            (line,) = ax.plot(steps, mean, marker="o" if key.startswith("pass") else None, label=arm)
            ax.fill_between(steps, low, high, alpha=0.2, color=line.get_color())
        if key == "pass@1":
            ax.axhline(agg["target_pass1"], color="grey", linestyle="--", linewidth=1, label="target")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    seeds = {arm: len(a["seeds"]) for arm, a in agg["arms"].items()}
    fig.suptitle(f"LATR vs stochastic sampling: mean over seeds {seeds}, band = min..max")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", help="the directory holding <arm>-seed<k> run directories")
    ap.add_argument("--target-pass1", type=float, default=0.25, help="the fixed held-out pass@1 to reach")
    ap.add_argument("--output", default=None, help="where experiment.{md,json,png} go (default: root)")
    args = ap.parse_args(argv)
    root = Path(args.root)
    if not root.is_dir():
        ap.error(f"{root}: not a directory")
    if not 0.0 <= args.target_pass1 <= 1.0:
        ap.error(f"--target-pass1 {args.target_pass1}: must be in [0, 1]")
    try:
        runs = read_runs(root)
    except ValueError as e:
        ap.error(str(e))
    agg = aggregate(runs, args.target_pass1)
    out = Path(args.output) if args.output else root
    out.mkdir(parents=True, exist_ok=True)
    text = table(agg)
    (out / "experiment.md").write_text(text + "\n")
    (out / "experiment.json").write_text(json.dumps(agg, indent=1, default=str))
    plot(agg, out / "experiment.png")
    print(text)
    print(f"wrote {out / 'experiment.md'}, {out / 'experiment.json'}, {out / 'experiment.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
