"""`latr-sglang report RUN_DIR...`: training logs of one or more runs -> one CSV, PNG plots and a summary.

A run directory holds the local trainer's `metrics.csv` (and `config.json`, `eval_before.json` /
`eval_after.json`), or TensorBoard event files (OpenRLHF's Ray trainer, `--logger.tensorboard_dir`). Plots
put the runs side by side against the training step: reward and accuracy, held-out evaluation over steps
when the run logged one, response length, LATR tree and diversity metrics, optimization, and the before/after
evaluation. Steps the trainer skipped (no informative group) are shaded; lines that give a number its
meaning (the countdown reward of a well-formed wrong answer, the tie level of a group) are drawn dashed.
`summary.md` beside the PNGs is one page: each run's settings, its steps, the before/after table, examples.

A folder that is not itself a run but holds runs below it (`runs/` of `runs/a/metrics.csv` and
`runs/b/tensorboard/...`) stands for those runs: `report` reports each as a run of its own, side by side, and
says so; their logs are never merged into one run named after the folder (see find_runs).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# (file, title, [(metric, label)]) per figure; metrics no run has are left out, empty figures not drawn
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    (
        "reward",
        "reward and accuracy on the training rollouts",
        [
            ("rollout/reward_mean", "reward (shaped)"),
            ("rollout/accuracy_mean", "accuracy = pass@1 (rollouts)"),
            ("train/reward", "reward (OpenRLHF)"),
            ("train/score", "score (OpenRLHF)"),
            ("dynamic_filtering_pass_rate", "groups kept (dynamic sampling)"),
        ],
    ),
    (
        "heldout",
        "held-out evaluation during training",
        [],  # filled per report from the runs' eval/* series (see _heldout_metrics)
    ),
    (
        "response_length",
        "responses",
        [
            ("rollout/response_length_mean", "response length (tokens)"),
            ("rollout/truncated_rate", "truncated fraction"),
            ("train/response_length", "response length (OpenRLHF)"),
        ],
    ),
    (
        "tree",
        "LATR tree and group diversity",
        [
            ("latr/branches_created", "branches created / prompt"),
            ("latr/branches_pruned", "branches pruned / prompt"),
            ("latr/pairwise_edit_distance", "pairwise edit distance"),
            ("latr/distinct_2", "distinct-2"),
            ("latr/reward_tie_fraction", "groups with tied rewards"),
        ],
    ),
    (
        "optimization",
        "optimization",
        [
            ("policy_loss", "policy loss"),
            ("kl", "KL to the initial policy"),
            ("grad_norm", "grad norm"),
            ("timing/step_total", "step time (s)"),
        ],
    ),
]
EVAL_KEYS = ["reward_mean", "pass@1", "well_formed_rate", "distinct_answers_mean"]
SKIP_KEY = "skipped_step"
# Shares and rates live in [0, 1]: their axes start at 0 so that a flat zero is a visible line, not a frame.
UNIT_METRICS = (
    "accuracy",
    "pass@",
    "rate",
    "fraction",
    "distinct_",
    "edit_distance",
    "score",
    "well_formed",
)


@dataclass
class Run:
    name: str
    path: Path
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # metric -> [(step, value)]
    evals: dict[str, dict] = field(default_factory=dict)  # "before"/"after" -> metrics
    summary: dict[str, Any] = field(default_factory=dict)  # the local trainer's summary.json (CIs, times)
    config: dict[str, Any] = field(default_factory=dict)  # config.json of a local run

    @property
    def skipped_steps(self) -> list[int]:
        return sorted(step for step, value in self.series.get(SKIP_KEY, []) if value >= 0.5)

    @property
    def steps(self) -> list[int]:
        return sorted(
            {s for k, points in self.series.items() if not k.startswith(HELDOUT) for s, _ in points}
        )


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _read_config(path: Path) -> dict[str, Any]:
    config = path / "config.json"
    if not config.is_file():
        return {}
    try:
        data = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_json(file: Path) -> Any:
    """A JSON file's value; a ValueError naming the file when it is not UTF-8 or not JSON."""
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{file}: not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}: not valid JSON ({e.msg})") from None


# the numbers of an evaluation file the report reads (tables, bars, held-out series); other keys pass as-is
_EVAL_NUMBER = re.compile(
    r"(pass|mean)@\d+|reward_mean|well_formed_rate|distinct_answers_mean|response_length_\w+"
)


def _check_eval(file: Path, data: Any) -> dict[str, Any]:
    """`data` if it has the shape of an evaluation (latr_sglang.evaluate's results), else a ValueError
    naming the file and the first bad key: a list or a string there would fail deep in a table or a plot."""
    if not isinstance(data, dict):
        raise ValueError(
            f"{file}: expected a JSON object with numeric pass@k fields, got {type(data).__name__}"
        )
    for key in ("n", "prompts"):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"{file}: {key}={value!r}, expected a non-negative integer")
    for key, value in data.items():
        if _EVAL_NUMBER.fullmatch(key) and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"{file}: {key}={value!r}, expected a number")
    for key in ("examples", "correct_examples"):
        value = data.get(key)
        if value is not None and (not isinstance(value, list) or not all(isinstance(x, dict) for x in value)):
            raise ValueError(f"{file}: {key} must be a list of objects")
    return data


def _run_name(path: Path, config: dict[str, Any]) -> str:
    train = config.get("train")
    if isinstance(train, dict) and train.get("algo") and train.get("sampler"):
        return f"{path.name} ({train.get('algo')}+{train.get('sampler')})"
    return path.name


# Folders that hold a run's TensorBoard logs: the local trainer writes RUN/tensorboard/events.*, the scripts
# point OpenRLHF's --logger.tensorboard_dir at RUN/tensorboard, under which it writes RUN/tensorboard/NAME/
TENSORBOARD_FOLDERS = ("tensorboard", "tb")
EVENTS = "events.out.tfevents."


def _tensorboard_run(events: Path, top: Path) -> Path:
    """The run folder a folder of event files belongs to, at or below `top` (the folder the user named)."""
    if events.name in TENSORBOARD_FOLDERS:
        run = events.parent
    elif events.parent.name in TENSORBOARD_FOLDERS:
        run = events.parent.parent
    else:
        run = events
    if run == top or top in run.parents:
        return run
    # `top` is a run's tensorboard folder (or lies in one): each folder of event files in it is a run, as
    # TensorBoard shows them; the folder of event files itself when it is `top`
    return events


def find_runs(path: str | Path) -> dict[Path, list[Path]]:
    """The runs at or below `path`, in path order: run folder -> its folders of TensorBoard event files
    (none listed for a local run: its metrics.csv is what is read).

    A folder with a metrics.csv is a local run (what lies below it is its own: tensorboard/, checkpoints/);
    elsewhere event files belong to the run folder above their tensorboard/ (or tb/) folder, else each folder
    of them is a run. Several event folders of one run (a resumed Ray run, whose default wandb run name has a
    new time stamp) are one run. So `{path: [...]}` when `path` is a run, several entries (or one below it)
    when it is a folder of runs, {} when it holds no logs at all."""
    path = Path(path)
    if (path / "metrics.csv").exists():
        return {path: []}
    runs: dict[Path, list[Path]] = {}
    for folder, subfolders, files in os.walk(path):
        here = Path(folder)
        if here != path and "metrics.csv" in files:
            runs[here] = []
            subfolders.clear()  # its tensorboard/ and checkpoints are part of it
            continue
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        if any(name.startswith(EVENTS) for name in files):
            runs.setdefault(_tensorboard_run(here, path), []).append(here)
    return dict(sorted(runs.items()))


def _names(runs: list[Path], top: Path, most: int = 6) -> str:
    """'2 runs (a, b)': how many runs `top` holds and their folders below it."""
    names = [run.relative_to(top).as_posix() for run in runs]
    more = f", and {len(names) - most} more" if len(names) > most else ""
    return f"{len(names)} run{'s' if len(names) != 1 else ''} ({', '.join(names[:most])}{more})"


def expand_runs(run_dirs: list[str | Path]) -> list[Path]:
    """The run folders of `run_dirs`: a folder of runs (not a run itself) stands for the runs in it, each
    reported as a run of its own (a note says which); a run named twice is reported once."""
    expanded: list[Path] = []
    for run_dir in run_dirs:
        path = Path(run_dir)
        runs = list(find_runs(path)) if path.is_dir() else []
        if runs and runs != [path]:
            each = "each reported as a run of its own" if len(runs) > 1 else "reported as that run"
            print(f"{path} is not a run but holds {_names(runs, path)}: {each}")
            expanded += runs
        else:
            expanded.append(path)  # a run, or a folder load_run names as holding none
    seen: set[Path] = set()
    unique = []
    for path in expanded:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def load_run(path: str | Path) -> Run:
    """The run in the folder `path`; a ValueError when `path` is a folder of runs (expand_runs lists them)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"run directory {str(path)!r} does not exist")
    runs = find_runs(path)
    if runs and path not in runs:
        raise ValueError(
            f"{path} is not a run but holds {_names(list(runs), path)}: pass them as separate run directories"
        )
    config = _read_config(path)
    run = Run(_run_name(path, config), path, config=config)
    metrics_csv = path / "metrics.csv"
    if metrics_csv.exists():
        by_step: dict[int, dict[str, float]] = {}
        try:
            with open(metrics_csv, newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    step = _float(row.get("train/global_step", ""))
                    if step is None:
                        continue
                    # a resumed run may log a step twice: the later row is the one that counts
                    by_step[int(step)] = {
                        key: value
                        for key, text in row.items()
                        if isinstance(key, str)
                        and key
                        and key != "train/global_step"
                        and isinstance(text, str)  # a row longer than the header holds a list here
                        and (value := _float(text)) is not None
                    }
        except UnicodeDecodeError as e:
            raise ValueError(f"{metrics_csv}: not UTF-8 text (byte {e.start})") from None
        except csv.Error as e:  # e.g. a NUL byte
            raise ValueError(f"{metrics_csv}: not readable as CSV ({e})") from None
        for step, values in sorted(by_step.items()):
            for key, value in values.items():
                run.series.setdefault(key, []).append((step, value))
        if not run.series:  # the file is there: saying "no metrics.csv" would send the reader elsewhere
            raise ValueError(f"{metrics_csv}: no row with a numeric train/global_step and a numeric metric")
    else:
        _load_tensorboard(runs.get(path, []), run)
    if not run.series:
        raise ValueError(f"{path}: no metrics.csv and no TensorBoard scalars found")
    for tag in ("before", "after"):
        file = path / f"eval_{tag}.json"
        if file.exists():
            run.evals[tag] = _check_eval(file, _read_json(file))
    summary = path / "summary.json"
    if summary.is_file():
        try:  # optional extras: a damaged summary.json leaves them out, as before
            data = _read_json(summary)
            run.summary = data if isinstance(data, dict) else {}
        except ValueError:
            run.summary = {}
    _add_before_after(run)
    return run


def _load_tensorboard(event_dirs: list[Path], run: Run) -> None:
    """The scalars of a run's folders of event files, one value per step: the latest written (a resumed run
    logs the steps after its checkpoint again, in the same folder or in a new one)."""
    if not event_dirs:
        return
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    latest: dict[str, dict[int, tuple[float, float]]] = {}  # tag -> step -> (wall time, value)
    for directory in event_dirs:
        acc = EventAccumulator(str(directory), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            points = latest.setdefault(tag, {})
            for e in acc.Scalars(tag):
                step = int(e.step)
                if step not in points or e.wall_time >= points[step][0]:
                    points[step] = (float(e.wall_time), float(e.value))
    for tag, points in latest.items():
        run.series[tag] = [(step, value) for step, (_, value) in sorted(points.items())]


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


HELDOUT = "heldout/"  # series built from eval_before/after.json: before at step 0, after at the last step


def _add_before_after(run: Run) -> None:
    """Held-out evaluations as series: before RL at step 0, eval_step{K}.json at K, after RL at the end."""
    last = max(run.steps, default=0)
    evals = [(0, run.evals.get("before"))]
    for file in run.path.glob("eval_step*.json"):
        step = file.stem.removeprefix("eval_step")
        if step.isdigit():
            try:
                evals.append((int(step), json.loads(file.read_text(encoding="utf-8"))))
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # a file being written while the report runs
    evals.append((last, run.evals.get("after")))
    evals = [(step, e) for step, e in evals if isinstance(e, dict)]
    # eval_step files are read leniently (one may be half-written): an n that is no count is no n
    n = next((e.get("n") for _, e in evals if type(e.get("n")) is int and e.get("n") > 0), None)
    for key in ("pass@1", f"pass@{n}"):
        points = {step: float(e[key]) for step, e in evals if isinstance(e.get(key), (int, float))}
        if points:
            run.series[HELDOUT + key] = sorted(points.items())


def _heldout_metrics(runs: list[Run]) -> list[tuple[str, str]]:
    """Held-out evaluation over steps: what a trainer logged during training (eval/*, OpenRLHF's eval_*),
    and the before/after evaluation as points at step 0 and the last step."""
    keys = sorted({k for run in runs for k in run.series if k.startswith(("eval/", "eval_", HELDOUT))})
    preferred = [k for k in keys if "pass@1" in k or "pass1" in k or "accuracy" in k]
    chosen = preferred + [k for k in keys if k not in preferred]
    return [
        (k, f"held-out {k.split('/', 1)[-1]}" + (" (step 0 = before RL)" if k.startswith(HELDOUT) else ""))
        for k in chosen[:4]
    ]


def _task(run: Run) -> str | None:
    train = run.config.get("train", {}) if isinstance(run.config.get("train"), dict) else {}
    task = train.get("task")
    if isinstance(task, str):
        return task
    return None


def reference_lines(metric: str, runs: list[Run]) -> list[tuple[float, str]]:
    """Dashed lines that say what a value of `metric` means, where the runs make one meaningful."""
    lines = []
    shaped = [r for r in runs if (r.config.get("train") or {}).get("reward", "shaped") == "shaped"]
    countdown = [r for r in shaped if (_task(r) or "countdown").startswith("countdown")]
    if metric in ("rollout/reward_mean", "train/reward") and countdown:
        # countdown's shaped reward: 1 correct, 0.1 well-formed but wrong, 0 otherwise
        lines.append((0.1, "0.1 = format only (well-formed, wrong)"))
    if metric == "latr/reward_tie_fraction":
        lines.append((1.0, "all groups tied: no learning signal"))
    if metric == "dynamic_filtering_pass_rate":
        lines.append((0.0, "no group kept: step skipped"))
    return lines


def _is_unit(metric: str) -> bool:
    return any(word in metric for word in UNIT_METRICS) or metric in ("rollout/reward_mean", "train/reward")


def _shade_skipped(ax, steps: list[int], label: str | None) -> None:
    for i, step in enumerate(steps):
        ax.axvspan(step - 0.5, step + 0.5, color="0.6", alpha=0.25, lw=0, label=label if i == 0 else None)


def plot(runs: list[Run], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    written = []
    many = len(runs) > 1
    skipped = {run.name: run.skipped_steps for run in runs}
    for file_name, title, metrics in PANELS:
        if file_name == "heldout":
            metrics = _heldout_metrics(runs)
        present = [(m, label) for m, label in metrics if any(m in run.series for run in runs)]
        if not present:
            continue
        width = max(4.4 * len(present), 7.0)  # room for the title of a one-panel figure
        fig, axes = plt.subplots(1, len(present), figsize=(width, 3.6), squeeze=False)
        for ax, (metric, label) in zip(axes[0], present):
            for k, run in enumerate(runs):
                points = sorted(run.series.get(metric, []))
                color = f"C{k}"
                if points:
                    xs, ys = [s for s, _ in points], [v for _, v in points]
                    ax.plot(xs, ys, marker=".", color=color, label=run.name)
                    # a skipped step trained nothing: its point is hollow
                    skip = set(skipped[run.name])
                    hollow = [(s, v) for s, v in points if s in skip]
                    if hollow:
                        ax.plot(
                            [s for s, _ in hollow],
                            [v for _, v in hollow],
                            "o",
                            mfc="white",
                            color=color,
                            label=f"{run.name}: skipped step" if many else "skipped step (trained nothing)",
                        )
                if not many and skipped[run.name]:
                    _shade_skipped(ax, skipped[run.name], None)
            for y, text in reference_lines(metric, runs):
                ax.axhline(y, color="0.3", ls="--", lw=1, label=text)
            if _is_unit(metric):
                values = [v for run in runs for _, v in run.series.get(metric, [])]
                top = max([*values, 0.0]) if values else 1.0
                ax.set_ylim(-0.03 * max(top, 0.1), max(top * 1.15, 0.1))
            ax.set_title(label, fontsize=10)
            ax.set_xlabel("training step")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole: no tick at 1.2
            ax.grid(alpha=0.3)
            handles, _ = ax.get_legend_handles_labels()
            if handles and (many or ax is axes[0][0] or reference_lines(metric, runs)):
                ax.legend(fontsize=7, loc="best")
        fig.suptitle(title + _skip_note(runs), fontsize=11)
        fig.tight_layout()
        file = out / f"{file_name}.png"
        fig.savefig(file, dpi=110)
        plt.close(fig)
        written.append(file)
    with_eval = [run for run in runs if run.evals]
    if with_eval:
        written.append(_plot_eval(plt, with_eval, out))
    return written


def _skip_note(runs: list[Run]) -> str:
    notes = [
        f"{run.name}: {len(run.skipped_steps)} of {len(run.steps)} steps skipped"
        for run in runs
        if run.skipped_steps
    ]
    return ("\n(" + "; ".join(notes) + ", shaded/hollow)") if notes else ""


def _plot_eval(plt, runs: list[Run], out: Path) -> Path:
    n = next((r.evals[t].get("n") for r in runs for t in ("before", "after") if t in r.evals), None)
    keys = [*EVAL_KEYS[:2], *([f"pass@{n}"] if n and n > 1 else []), *EVAL_KEYS[2:]]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.6), squeeze=False)
    width = 0.8 / len(runs)
    for ax, key in zip(axes[0], keys):
        top = 0.0
        for i, run in enumerate(runs):
            values = [run.evals.get(tag, {}).get(key, float("nan")) for tag in ("before", "after")]
            xs = [x + i * width for x in (0, 1)]
            bars = ax.bar(xs, values, width, label=run.name, color=f"C{i}")
            # the value on each bar: a 0 is a number, not a missing bar
            ax.bar_label(bars, labels=[f"{v:.3f}" if math.isfinite(v) else "n/a" for v in values], fontsize=7)
            top = max([top, *[v for v in values if math.isfinite(v)]])
        ax.set_xticks([x + width * (len(runs) - 1) / 2 for x in (0, 1)], ["before RL", "after RL"])
        ax.set_title(f"held-out {key}", fontsize=10)
        ax.set_ylim(0, max(top * 1.25, 0.1 if key != "distinct_answers_mean" else 1.0))
        ax.grid(alpha=0.3, axis="y")
        if len(runs) > 1 or ax is axes[0][0]:
            ax.legend(fontsize=7)
    prompts = next((r.evals[t].get("prompts") for r in runs for t in r.evals), None)
    fig.suptitle(f"evaluation before and after training ({prompts} held-out prompts x n={n})", fontsize=11)
    fig.tight_layout()
    file = out / "eval.png"
    fig.savefig(file, dpi=110)
    plt.close(fig)
    return file


def _eval_columns(run: Run) -> list[str]:
    keys = ["reward_mean", "pass@1", "well_formed_rate", "distinct_answers_mean", "response_length_mean"]
    n = next(iter(run.evals.values())).get("n")
    return [*keys, f"pass@{n}"] if n and n > 1 else keys


def eval_table(runs: list[Run]) -> str:
    """Before/after evaluation of each run that has one, as a text table."""
    lines = []
    for run in runs:
        if not run.evals:
            continue
        n = next(iter(run.evals.values())).get("n")
        cols = _eval_columns(run)
        lines.append(f"{run.name}: {next(iter(run.evals.values())).get('prompts')} held-out prompts x n={n}")
        lines.append(f"  {'':8}" + "".join(f"{c:>22}" for c in cols))
        for tag in ("before", "after"):
            values = run.evals.get(tag, {})
            lines.append(f"  {tag:8}" + "".join(f"{values.get(c, float('nan')):>22.4f}" for c in cols))
        for tag in ("before", "after"):
            for example in run.evals.get(tag, {}).get("examples", [])[:2]:
                response = str(example.get("response", ""))
                lines.append(f"  {tag} sample (label {example.get('label')}): {response[:100]!r}")
    return "\n".join(lines)


# Settings worth a line in the summary, by the local trainer's config names (others are in config.json)
SUMMARY_SETTINGS = (
    "model",
    "task",
    "algo",
    "sampler",
    "reward",
    "steps",
    "prompts_per_step",
    "n_samples_per_prompt",
    "max_new_tokens",
    "learning_rate",
    "temperature",
    "response_prefix",
    "dynamic_filtering",
    "dynamic_filtering_metric",
    "seed",
)
SUMMARY_LATR = (
    "tau_abs",
    "tau_rel",
    "rel_rule",
    "tree_sampling",
    "lookahead_steps",
    "chunk_size",
    "exit_scope",
)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


def task_prefix(train: dict[str, Any]) -> str:
    """The response prefix a local run without --local.response_prefix used: its task's default, derived as
    openrlhf_ext.local.config.LocalTrainConfig.prefix derives it (' <answer>' for the built-in
    countdown-fewshot task, else none; tests/test_report.py checks the two agree)."""
    builtin = train.get("prompts") is None
    return " <answer>" if builtin and train.get("task", "countdown-fewshot") == "countdown-fewshot" else ""


def _setting(key: str, value: Any, train: dict[str, Any]) -> str:
    """A settings table cell: the value, or for a prefix left unset the one the run used."""
    if key == "response_prefix":  # quoted: its leading space is part of it
        if value is None:
            prefix = task_prefix(train)
            return f"`{prefix!r}` (task default{'' if prefix else ': none'})"
        return f"`{value!r}`"
    return f"`{_fmt(value)}`"


def summary_markdown(runs: list[Run], images: list[Path]) -> str:
    """One page: per run its settings, steps trained and skipped, last values, the before/after table."""
    lines = ["# Training report", ""]
    for run in runs:
        lines += [f"## {run.name}", "", f"Run directory: `{run.path}`", ""]
        train = run.config.get("train") if isinstance(run.config.get("train"), dict) else {}
        latr = run.config.get("latr") if isinstance(run.config.get("latr"), dict) else {}
        settings = [(k, train[k]) for k in SUMMARY_SETTINGS if k in train]
        if train.get("sampler", "latr") == "latr":
            settings += [(f"latr.{k}", latr[k]) for k in SUMMARY_LATR if k in latr]
        if settings:
            lines += ["| setting | value |", "|---|---|"]
            lines += [f"| {k} | {_setting(k, v, train)} |" for k, v in settings]
            lines += ["", "Every setting: `config.json` in the run directory.", ""]
        steps, skipped = run.steps, run.skipped_steps
        if steps:
            skip_text = (
                f"{len(skipped)} skipped ({', '.join(map(str, skipped[:20]))})" if skipped else "none skipped"
            )
            timing = sum(v for _, v in run.series.get("timing/step_total", []))
            took = f" Training took {timing / 60:.1f} min (sum of step times)." if timing else ""
            lines += [f"Steps logged: {len(steps)} ({steps[0]}..{steps[-1]}), {skip_text}.{took}", ""]
        last = [
            (label, run.series[m][-1][1])
            for _, _, metrics in PANELS
            for m, label in metrics
            if run.series.get(m)
        ]
        if last:
            lines += ["| last logged value | |", "|---|---|"]
            lines += [f"| {label} | {value:.4g} |" for label, value in last]
            lines.append("")
        if run.evals:
            first = next(iter(run.evals.values()))
            cols = _eval_columns(run)
            lines += [f"Held-out evaluation: {first.get('prompts')} prompts x n={first.get('n')}.", ""]
            lines += ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
            for tag in ("before", "after"):
                values = run.evals.get(tag)
                if values is not None:
                    cells = [_fmt(values.get(c, float("nan"))) for c in cols]
                    lines.append(f"| {tag} RL | " + " | ".join(cells) + " |")
            # confidence intervals, under whatever key the evaluator wrote them (e.g. pass@1_ci95)
            ci = [
                f"{tag} {key} {_fmt(value)}"
                for tag in ("before", "after")
                for key, value in (run.evals.get(tag) or {}).items()
                if "ci" in key.lower().split("_")[-1] or key.lower().endswith("ci95")
            ]
            if ci:
                lines += ["", "Intervals: " + "; ".join(ci)]
            gain = run.summary.get("gain") if isinstance(run.summary.get("gain"), dict) else None
            if gain and isinstance(gain.get("pass@1_ci95"), list):
                lo, hi = gain["pass@1_ci95"]
                lines += [
                    "",
                    f"pass@1 gain from RL: {_fmt(gain.get('pass@1'))} (95% interval {_fmt(lo)}..{_fmt(hi)})",
                ]
            if isinstance(run.summary.get("total_s"), (int, float)):
                lines += ["", f"Time in all (training and evaluation): {run.summary['total_s'] / 60:.1f} min"]
            examples = (
                run.evals.get("after", {}).get("correct_examples")
                or run.evals.get("after", {}).get("examples", [])
            )[:3]
            if examples:
                lines += ["", "Answers after training (correct ones when there are any):", ""]
                for ex in examples:
                    text = " ".join(str(ex.get("response", "")).split())[:160]
                    reward = f", reward {_fmt(ex['reward'])}" if "reward" in ex else ""
                    lines.append(f"- label `{ex.get('label')}`{reward}: `{text}`")
            lines.append("")
    if images:
        lines += ["## Plots", ""]
        lines += [f"![{p.stem}]({p.name})" for p in images]
        lines.append("")
    return "\n".join(lines)


def report(run_dirs: list[str], output: str | Path) -> tuple[Path, list[Path]]:
    """The runs of `run_dirs` -> the combined CSV, PNGs and summary.md (a folder of runs stands for each run
    in it: expand_runs)."""
    runs = [load_run(d) for d in expand_runs(run_dirs)]
    names = [run.name for run in runs]
    for run in runs:  # two runs named alike (a/final, b/final) must stay apart in legends
        if names.count(run.name) > 1:
            run.name = f"{run.path.parent.name}/{run.name}"
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output {out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    combined = out / "metrics_combined.csv"
    write_combined_csv(runs, combined)
    table = eval_table(runs)
    if table:
        print(table)
    images = plot(runs, out)
    summary = out / "summary.md"
    summary.write_text(summary_markdown(runs, images))
    return combined, [*images, summary]
