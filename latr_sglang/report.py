"""`latr-sglang report RUN_DIR...`: training logs of one or more runs -> one CSV and PNG plots.

A run directory holds the local trainer's `metrics.csv` (and `eval_before.json` / `eval_after.json`), or
TensorBoard event files (OpenRLHF's Ray trainer, `--logger.tensorboard_dir`). Plots put the runs side by
side: reward and accuracy, response length, LATR tree and diversity metrics against the step, and the
before/after evaluation when there is one.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

# (title, [(metric, label)]) per figure; a metric a run lacks is left out of its panel
PANELS: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "reward",
        [
            ("rollout/reward_mean", "reward (shaped)"),
            ("rollout/accuracy_mean", "accuracy = pass@1"),
            ("train/reward", "reward (OpenRLHF)"),
            ("train/score", "score (OpenRLHF)"),
        ],
    ),
    (
        "response_length",
        [
            ("rollout/response_length_mean", "response length (tokens)"),
            ("rollout/truncated_rate", "truncated fraction"),
            ("train/response_length", "response length (OpenRLHF)"),
        ],
    ),
    (
        "tree",
        [
            ("latr/branches_created", "branches created / prompt"),
            ("latr/branches_pruned", "branches pruned / prompt"),
            ("latr/pairwise_edit_distance", "pairwise edit distance"),
            ("latr/distinct_2", "distinct-2"),
        ],
    ),
    (
        "optimization",
        [
            ("policy_loss", "policy loss"),
            ("grad_norm", "grad norm"),
            ("dynamic_filtering_pass_rate", "groups kept (dynamic sampling)"),
            ("timing/step_total", "step time (s)"),
        ],
    ),
]
EVAL_KEYS = ["reward_mean", "pass@1", "well_formed_rate", "distinct_answers_mean"]


@dataclass
class Run:
    name: str
    path: Path
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # metric -> [(step, value)]
    evals: dict[str, dict] = field(default_factory=dict)  # "before"/"after" -> metrics


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _run_name(path: Path) -> str:
    config = path / "config.json"
    if config.exists():
        try:
            train = json.loads(config.read_text()).get("train", {})
            return f"{path.name} ({train.get('algo')}+{train.get('sampler')})"
        except (json.JSONDecodeError, AttributeError):
            pass
    return path.name


def load_run(path: str | Path) -> Run:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"run directory {str(path)!r} does not exist")
    run = Run(_run_name(path), path)
    metrics_csv = path / "metrics.csv"
    if metrics_csv.exists():
        with open(metrics_csv, newline="") as f:
            for row in csv.DictReader(f):
                step = _float(row.get("train/global_step", ""))
                if step is None:
                    continue
                for key, text in row.items():
                    value = _float(text)
                    if value is not None and key != "train/global_step":
                        run.series.setdefault(key, []).append((int(step), value))
    else:
        _load_tensorboard(path, run)
    if not run.series:
        raise ValueError(f"{path}: no metrics.csv and no TensorBoard scalars found")
    for tag in ("before", "after"):
        file = path / f"eval_{tag}.json"
        if file.exists():
            run.evals[tag] = json.loads(file.read_text())
    return run


def _load_tensorboard(path: Path, run: Run) -> None:
    event_dirs = sorted({p.parent for p in path.rglob("events.out.tfevents.*")})
    if not event_dirs:
        return
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for directory in event_dirs:
        acc = EventAccumulator(str(directory), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            run.series.setdefault(tag, []).extend((int(e.step), float(e.value)) for e in acc.Scalars(tag))


def write_combined_csv(runs: list[Run], path: Path) -> int:
    keys = sorted({k for run in runs for k in run.series})
    rows: dict[tuple[str, int], dict[str, float]] = {}
    for run in runs:
        for key, points in run.series.items():
            for step, value in points:
                rows.setdefault((run.name, step), {})[key] = value
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "step", *keys])
        for (name, step), values in sorted(rows.items()):
            writer.writerow([name, step, *(values.get(k, "") for k in keys)])
    return len(rows)


def plot(runs: list[Run], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for title, metrics in PANELS:
        present = [(m, label) for m, label in metrics if any(m in run.series for run in runs)]
        if not present:
            continue
        fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.4), squeeze=False)
        for ax, (metric, label) in zip(axes[0], present):
            for run in runs:
                points = sorted(run.series.get(metric, []))
                if points:
                    ax.plot([s for s, _ in points], [v for _, v in points], marker=".", label=run.name)
            ax.set_title(label, fontsize=10)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        file = out / f"{title}.png"
        fig.savefig(file, dpi=110)
        plt.close(fig)
        written.append(file)
    with_eval = [run for run in runs if run.evals]
    if with_eval:
        fig, axes = plt.subplots(1, len(EVAL_KEYS), figsize=(4.2 * len(EVAL_KEYS), 3.4), squeeze=False)
        for ax, key in zip(axes[0], EVAL_KEYS):
            width = 0.8 / len(with_eval)
            for i, run in enumerate(with_eval):
                values = [run.evals.get(tag, {}).get(key, float("nan")) for tag in ("before", "after")]
                ax.bar([x + i * width for x in (0, 1)], values, width, label=run.name)
            ax.set_xticks([x + width * (len(with_eval) - 1) / 2 for x in (0, 1)], ["before", "after"])
            ax.set_title(f"eval: {key}", fontsize=10)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3, axis="y")
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        file = out / "eval.png"
        fig.savefig(file, dpi=110)
        plt.close(fig)
        written.append(file)
    return written


def eval_table(runs: list[Run]) -> str:
    """Before/after evaluation of each run that has one, as a text table."""
    keys = ["reward_mean", "pass@1", "well_formed_rate", "distinct_answers_mean", "response_length_mean"]
    lines = []
    for run in runs:
        if not run.evals:
            continue
        n = next(iter(run.evals.values())).get("n")
        cols = [*keys, f"pass@{n}"] if n else keys
        lines.append(f"{run.name}: {next(iter(run.evals.values())).get('prompts')} held-out prompts x n={n}")
        lines.append(f"  {'':8}" + "".join(f"{c:>22}" for c in cols))
        for tag in ("before", "after"):
            values = run.evals.get(tag, {})
            lines.append(f"  {tag:8}" + "".join(f"{values.get(c, float('nan')):>22.4f}" for c in cols))
        for tag in ("before", "after"):
            for example in run.evals.get(tag, {}).get("examples", [])[:2]:
                lines.append(f"  {tag} sample (label {example['label']}): {example['response'][:100]!r}")
    return "\n".join(lines)


def report(run_dirs: list[str], output: str | Path) -> tuple[Path, list[Path]]:
    runs = [load_run(d) for d in run_dirs]
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    combined = out / "metrics_combined.csv"
    write_combined_csv(runs, combined)
    table = eval_table(runs)
    if table:
        print(table)
    return combined, plot(runs, out)
