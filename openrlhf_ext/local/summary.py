"""The end-of-run summary: held-out pass@1 before vs after training with 95% confidence intervals (pass@1's in
[0, 1]: proportion_ci; the paired gain's in [-1, 1]: gain_ci), pass@k, example correct answers and the time
taken (printed, and written as summary.json)."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Z95 = 1.959964  # two-sided 95% normal quantile


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): a 95% interval for the mean of per-problem values (normal approximation; the
    problems are the independent units, a problem's samples are not)."""
    if not values:
        raise ValueError("mean_ci needs at least one value")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean, mean
    half = Z95 * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def proportion_ci(fractions: Sequence[float], n: int) -> tuple[float, float, float]:
    """(mean, low, high): a 95% interval for pass@1, the mean over problems of each problem's fraction of
    `n` samples correct; it lies in [0, 1].

    A Wilson score interval with the effective sample size of clustered data (Korn & Graubard 1998): the
    problems are the independent units (a problem's n samples are not: an easy problem is solved by most of
    them), so the interval's width comes from the spread of the per-problem fractions, as the normal
    interval's does: effective size p(1-p) / (var over problems / problems). It is capped at the
    problems x n samples drawn (a design effect below 1 is not credited), so all-wrong or all-right results
    get an interval of that many independent samples, not [0, 0] or [1, 1]. Away from 0 and 1 it is about
    the normal interval mean +- 1.96 s / sqrt(problems) (mean_ci, used before: it went below 0 near 0)."""
    if not fractions:
        raise ValueError("proportion_ci needs at least one problem")
    problems = len(fractions)
    p = statistics.fmean(fractions)
    p = min(max(p, 0.0), 1.0)  # float sums of fractions in [0, 1]
    drawn = problems * n
    variance = statistics.variance(fractions) / problems if problems > 1 else 0.0
    size = min(drawn, p * (1 - p) / variance) if variance > 0 else drawn
    z2 = Z95 * Z95
    center = (p + z2 / (2 * size)) / (1 + z2 / size)
    half = Z95 / (1 + z2 / size) * math.sqrt(p * (1 - p) / size + z2 / (4 * size * size))
    return p, max(0.0, center - half), min(1.0, center + half)


def pass1_ci(result: dict[str, Any]) -> tuple[float, float, float]:
    """pass@1 of an evaluation result and its 95% interval over problems, in [0, 1] (proportion_ci)."""
    n = result["n"]
    return proportion_ci([c / n for c in result["correct_per_prompt"]], n)


def gain_ci(before: dict[str, Any], after: dict[str, Any]) -> tuple[float, float, float]:
    """after - before pass@1 on the same problems, paired per problem, with its 95% interval: the normal
    interval of the per-problem differences (mean_ci), cut to [-1, 1], where a difference of two
    proportions lies (on a few problems the normal interval can reach past it)."""
    b, a = before["correct_per_prompt"], after["correct_per_prompt"]
    if len(a) != len(b):
        raise ValueError(f"before and after were evaluated on different problem counts ({len(b)}, {len(a)})")
    gain, low, high = mean_ci([ca / after["n"] - cb / before["n"] for ca, cb in zip(a, b)])
    return gain, max(low, -1.0), min(high, 1.0)


def _problem(label: Any) -> str:
    try:
        p = json.loads(label) if isinstance(label, str) else label
        return f"numbers {' '.join(map(str, p['numbers']))}, target {p['target']}"
    except (TypeError, ValueError, KeyError):
        return str(label)[:60]


def summarize(
    before: dict[str, Any] | None,
    after: dict[str, Any],
    *,
    steps: int,
    trained_steps: int,
    train_s: float,
    total_s: float,
) -> tuple[str, dict[str, Any]]:
    """The summary text and the numbers behind it."""
    n = after["n"]
    k = f"pass@{n}"
    fmt = "{:.3f} [{:.3f}, {:.3f}]"
    lines = [f"==== summary: {after['prompts']} held-out problems x {n} samples, scored by the task reward"]
    out: dict[str, Any] = {
        "problems": after["prompts"],
        "n": n,
        "steps": steps,
        "trained_steps": trained_steps,
        "train_s": train_s,
        "total_s": total_s,
    }
    a = pass1_ci(after)
    out["after"] = {"pass@1": a[0], "pass@1_ci95": [a[1], a[2]], k: after[k]}
    if before is not None:
        b = pass1_ci(before)
        g = gain_ci(before, after)
        out["before"] = {"pass@1": b[0], "pass@1_ci95": [b[1], b[2]], k: before[k]}
        out["gain"] = {"pass@1": g[0], "pass@1_ci95": [g[1], g[2]]}
        lines += [
            f"pass@1  before {fmt.format(*b)}  after {fmt.format(*a)}  (95% CI over problems)",
            f"gain    {g[0]:+.3f} [{g[1]:+.3f}, {g[2]:+.3f}] (paired per problem, 95% CI)",
            f"{k:7} before {before[k]:.3f}  after {after[k]:.3f}",
            f"distinct answers per problem  before {before['distinct_answers_mean']:.2f}  "
            f"after {after['distinct_answers_mean']:.2f}",
        ]
    else:
        lines += [f"pass@1  after {fmt.format(*a)}", f"{k:7} after {after[k]:.3f}"]
    lines.append(
        f"steps   {trained_steps} of {steps} trained ({steps - trained_steps} skipped); "
        f"time: training {train_s:.0f} s, whole run {total_s:.0f} s"
    )
    examples = after.get("correct_examples", [])
    out["correct_examples"] = examples
    if examples:
        lines.append("correct answers after training:")
        lines += [f"  {_problem(e['label'])}: {e['response'].strip()}" for e in examples[:6]]
    else:
        lines.append("no held-out problem was solved after training")
    return "\n".join(lines), out


def write_summary(path: str | Path, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


def nothing_trained_message(cfg: Any, history: list[dict[str, float]]) -> str:
    """Why a run whose every step was skipped trained nothing, and which flags make groups differ."""
    if all(m.get("nonfinite_step") for m in history):  # no step tied: the hints below do not apply
        return (
            f"nothing trained: all {len(history)} steps were skipped: the loss or gradient was not finite "
            f"({nonfinite_causes(cfg, history)}). The policy is unchanged and was not saved."
        )
    if any(m.get("nonfinite_step") for m in history):
        why = f"the loss or gradient was not finite ({nonfinite_causes(cfg, history)})"
    else:
        acc = statistics.fmean(m["rollout/accuracy_mean"] for m in history)
        why = (
            f"no group had rewards that differ (every sample of a prompt scored the same; mean accuracy "
            f"{acc:.3f}), so every advantage was 0"
        )
    hints = [
        "--local.task countdown-fewshot (a task the embedded 135M model solves about 1 time in 8)",
        "--rollout.temperature 1.0 or higher",
        "--rollout.n_samples_per_prompt 8 or more",
        "--algo.dynamic_filtering_enable --dapo.max_sampling_rounds 4 (over-sample until groups differ)",
    ]
    if cfg.reward == "accuracy" or cfg.dynamic_filtering_metric == "score":
        hints.append("--dapo.dynamic_filtering_metric reward (keep groups whose shaped reward differs)")
    return (
        f"nothing trained: all {len(history)} steps were skipped: {why}. The policy is unchanged and "
        f"was not saved. Flags that make groups differ: " + "; ".join(hints)
    )


def nonfinite_causes(cfg: Any, history: list[dict[str, float]]) -> str:
    """What in the run can make its loss or gradient non-finite: the settings that look suspicious (with
    their values), or, when none does, every setting that can, with its value."""
    rewards = [m["rollout/reward_mean"] for m in history if "rollout/reward_mean" in m]
    suspicious = []
    if any(not math.isfinite(r) for r in rewards):
        suspicious.append("the rewards were not finite (rollout/reward_mean in metrics.csv)")
    if cfg.learning_rate > 1e-3:
        suspicious.append(f"--actor.adam.lr {cfg.learning_rate:g} (RL fine-tuning uses about 1e-6 to 1e-5)")
    if cfg.kl_coef > 10:
        suspicious.append(f"--algo.kl.init_coef {cfg.kl_coef:g} (the released runs use 0.01)")
    if cfg.overlong_buffer_len and cfg.overlong_penalty_factor > 10:
        suspicious.append(
            f"--reward.overlong_penalty_factor {cfg.overlong_penalty_factor:g} (DAPO uses 1; the rewards are "
            "about 1)"
        )
    if not cfg.grad_clip <= 100:
        suspicious.append(f"--local.grad_clip {cfg.grad_clip:g} (1 is usual)")
    if suspicious:
        return "check: " + "; ".join(suspicious)
    settings = [
        f"--actor.adam.lr {cfg.learning_rate:g}",
        f"--local.grad_clip {cfg.grad_clip:g}",
        f"--algo.kl.init_coef {cfg.kl_coef:g}",
    ]
    if cfg.overlong_buffer_len:
        settings.append(f"--reward.overlong_penalty_factor {cfg.overlong_penalty_factor:g}")
    return "nothing set looks extreme; what can cause it: " + ", ".join(settings) + ", or the reward function"


def diverged_message(cfg: Any, history: list[dict[str, float]], first_bad: int, last_trained: int) -> str:
    """One line: the run diverged (non-finite losses once it had trained), where, and what to check."""
    earlier = ", earlier checkpoints may hold them already" if cfg.save_steps else ""
    return (
        f"training diverged at step {first_bad}: step {last_trained} trained, then every step from "
        f"{first_bad} on had a non-finite loss or gradient, so the weights are broken; the policy was not "
        f"saved{earlier} ({nonfinite_causes(cfg, history)})"
    )
