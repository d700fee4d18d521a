"""A sweep of LATR settings against plain stochastic sampling: same engine, prompts, n, lengths; one process.

    python -m latr_sglang.bench.sweep              # SmolLM2, the main job's task, a default grid
    python -m latr_sglang.bench.sweep --grid 'tau_abs=0.1|0.2' --grid 'tree_sampling=greedy|sample' \
        --grid 'lookahead_steps=2,4|4,8' --num-prompts 16 --json /tmp/sweep.json
    python -m latr_sglang.bench.sweep --config 'preset=small' --config 'tau_abs=0.05,tau_rel=1.0'
    python -m latr_sglang.bench.sweep --model tiny --num-prompts 2 --grid 'chunk_size=2|4'   # a quick check

Every LATR setting is a preset (`--base`, default `countdown`) plus overrides: `--grid FIELD=V1|V2|...` (the
cartesian product over all --grid flags) and/or `--config FIELD=V,FIELD=V` (one setting each; the values parse
as the matching `--latr.FIELD` flag does; `preset=NAME` switches the preset of that setting).
Stochastic sampling (eta = 0) runs before, between and after the LATR settings (every `--stochastic-every`
settings), each time with a new seed: a setting's wall-time ratio is against the mean of the stochastic runs
next to it (the CPU is shared, and load drifts), and its diversity is compared prompt by prompt with the mean
over all stochastic runs (a paired difference with a 95% confidence interval).

Per setting: forks (branches created) and prunes per prompt, mean pairwise token edit distance, distinct
answers and distinct responses per group, the share of groups with non-tied rewards (the project's countdown
reward), pass@1 and pass@n, response length, wall time and process CPU time, both as ratios to stochastic.

Tasks: `countdown-fewshot` (default; the main job's, latr_sglang.tasks.countdown_fewshot): a raw few-shot
prompt, 2 numbers in 1..12, the response starts after " <answer>" and ends at a newline; `countdown`: the
paper's chat prompt (3-4 numbers), the setting of `latr_sglang.bench.rollout`. Both are scored by the
project's countdown reward (latr_sglang.tasks.countdown.score).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from latr_sglang.argtypes import (
    bench_parser,
    check_output_flags,
    model_argument,
    positive_float,
    positive_int,
    seed_int,
)
from latr_sglang.config import _PARSERS, PRESETS, ConfigError, LATRConfig
from latr_sglang.driver import GroupResult, LATRSampler
from latr_sglang.engines.base import SamplingParams
from latr_sglang.metrics import pairwise_edit_distance
from latr_sglang.tasks import countdown

# A small default grid in the few-shot regime (responses of ~6 tokens): thresholds low enough to fork at the
# operator and digit choices, short lookahead ages, both tree modes.
DEFAULT_GRID = (
    "tau_abs=0.25|0.1|0.05",
    "tau_rel=0.15|0.5|1.0",
    "tree_sampling=greedy|sample",
    "lookahead_steps=2,4,8",
    "chunk_size=8",
)


# ---- tasks -------------------------------------------------------------------------------------------------
@dataclass
class Task:
    """Prompts with their labels, the text the response starts with, and where generation stops."""

    name: str
    texts: list[str]
    prompt_ids: list[list[int]]  # the prompt and the response prefix (a prefill), tokenized
    labels: list[tuple[tuple[int, ...], int]]  # (numbers, target)
    max_new_tokens: int
    stop_token_ids: tuple[int, ...]
    response_prefix: str = ""  # the reward sees it before the response

    def score(self, i: int, response: str) -> tuple[float, bool, str | None]:
        """(reward, correct, the answer without whitespace) of one response to prompt i, by the countdown
        reward (latr_sglang.tasks.countdown.score)."""
        text = self.response_prefix + response
        numbers, target = self.labels[i]
        reward, info = countdown.score(text, numbers, target)
        answer = countdown.extract_answer(text)
        answer = "".join(answer.split()) if answer is not None else None
        return reward, bool(info["correct"]), answer or None


def make_task(name: str, tokenizer: Any, count: int, seed: int, max_new_tokens: int | None) -> Task:
    """countdown-fewshot: the main job's task (latr_sglang.tasks.countdown_fewshot: a raw few-shot prompt,
    2 numbers, the response starts after ' <answer>' and ends at a newline); countdown: the paper's chat
    prompt, 3-4 numbers, up to EOS."""
    from latr_sglang.tasks.prompts import encode_prompts, newline_token_ids, task_problems

    if name == "countdown-fewshot":
        from latr_sglang.tasks.countdown_fewshot import RESPONSE_PREFIX

        pairs = task_problems(name, count, seed)
        texts = [p for p, _ in pairs]
        return Task(
            name,
            texts,
            encode_prompts(tokenizer, texts, chat=False, response_prefix=RESPONSE_PREFIX),
            [_label(lab) for _, lab in pairs],
            max_new_tokens or 14,
            newline_token_ids(tokenizer),
            RESPONSE_PREFIX,
        )
    if name == "countdown":
        pairs = task_problems(name, count, seed, chat=True)
        texts = [p for p, _ in pairs]
        return Task(
            name,
            texts,
            encode_prompts(tokenizer, texts, chat=True),
            [_label(lab) for _, lab in pairs],
            max_new_tokens or 128,
            (),
        )
    raise ValueError(f"--task {name!r}: known tasks are countdown-fewshot, countdown")


def _label(label: str) -> tuple[tuple[int, ...], int]:
    data = json.loads(label)
    return tuple(data["numbers"]), int(data["target"])


# ---- settings ----------------------------------------------------------------------------------------------
def parse_value(name: str, text: str) -> Any:
    """A LATRConfig field's value from text, parsed as its --latr.<field> flag is."""
    fields = {f.name: f for f in dataclasses.fields(LATRConfig)}
    if name not in fields:
        raise ConfigError(f"unknown LATR config field {name!r} (known: {', '.join(sorted(fields))})")
    parser = _PARSERS.get(str(fields[name].type), str)
    try:
        return parser(text)
    except (ValueError, argparse.ArgumentTypeError) as e:
        raise ConfigError(f"LATRConfig.{name}={text!r}: {e}") from None


def grid_settings(grid: Sequence[str]) -> list[dict[str, Any]]:
    """The cartesian product of 'FIELD=V1|V2' items, as override dicts."""
    axes: list[list[tuple[str, Any]]] = []
    for item in grid:
        name, sep, values = item.partition("=")
        name = name.strip()
        if not sep or not values.strip():
            raise ConfigError(f"--grid {item!r}: expected FIELD=V1|V2|...")
        raw = [v.strip() for v in values.split("|")]
        axes.append([(name, v if name == "preset" else parse_value(name, v)) for v in raw])
    return [dict(combo) for combo in itertools.product(*axes)] if axes else []


def config_setting(text: str) -> dict[str, Any]:
    """'FIELD=V,FIELD=V' (a value may hold commas, as lookahead_steps=2,4,8: a comma starts a new field only
    when a FIELD= follows it)."""
    out: dict[str, Any] = {}
    parts: list[str] = []
    for piece in text.split(","):
        if "=" in piece or not parts:
            parts.append(piece)
        else:
            parts[-1] += "," + piece
    for part in parts:
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep:
            raise ConfigError(f"--config {text!r}: expected FIELD=VALUE items, got {part!r}")
        out[name] = value.strip() if name == "preset" else parse_value(name, value.strip())
    return out


def build_config(base: str, overrides: dict[str, Any]) -> LATRConfig:
    overrides = dict(overrides)
    preset = overrides.pop("preset", base)
    return LATRConfig.preset(preset, **overrides)


def setting_name(base: str, overrides: dict[str, Any]) -> str:
    parts = []
    for key, value in overrides.items():
        if isinstance(value, tuple):
            value = ",".join(map(str, value))
        parts.append(f"{key}={value}")
    return " ".join(parts) if parts else f"preset={base}"


# ---- one arm -----------------------------------------------------------------------------------------------
@dataclass
class ArmResult:
    name: str
    is_latr: bool
    seed: int
    wall_s: float
    cpu_s: float  # CPU time of the whole process (every thread: engine, torch, driver)
    per_prompt: list[dict[str, float]]  # one row per prompt
    tokens_decoded: int
    tokens_delivered: int
    config: dict[str, Any] | None = None
    samples: list[list[str]] = field(default_factory=list)  # a few groups' responses, for reading
    wall_ratio: float = math.nan
    cpu_ratio: float = math.nan

    def mean(self, key: str) -> float:
        return statistics.fmean(r[key] for r in self.per_prompt)


def group_row(task: Task, i: int, group: GroupResult, decode: Callable[[list[int]], str]) -> dict[str, float]:
    texts = [decode(t.token_ids) for t in group.trajectories]
    scored = [task.score(i, text) for text in texts]
    rewards = [r for r, _, _ in scored]
    correct = [c for _, c, _ in scored]
    answers = {a for _, _, a in scored if a is not None}
    n = len(texts)
    return {
        "forks": float(max(len(group.branches) - 1, 0)),
        "pruned": float(sum(b.pruned_at is not None for b in group.branches)),
        "edit_distance": pairwise_edit_distance([t.token_ids for t in group.trajectories]),
        "distinct_answers": float(len(answers)),
        "distinct_responses": float(len({tuple(t.token_ids) for t in group.trajectories})),
        "mixed_rewards": float(len(set(rewards)) > 1),
        "mixed_accuracy": float(len(set(correct)) > 1),
        "reward": statistics.fmean(rewards),
        "pass1": sum(correct) / n,
        "passn": float(any(correct)),
        "length": statistics.fmean(len(t.token_ids) for t in group.trajectories),
        "tree_exit_step": float(group.exit_step or 0),
    }


def run_arm(
    name: str,
    sampler: LATRSampler,
    task: Task,
    n: int,
    eta: float,
    seed: int,
    prompts_per_batch: int,
    decode: Callable[[list[int]], str],
    keep_samples: int = 2,
) -> ArmResult:
    groups: list[GroupResult] = []

    async def main() -> None:
        for start in range(0, len(task.prompt_ids), prompts_per_batch):
            batch = task.prompt_ids[start : start + prompts_per_batch]
            groups.extend(await sampler.sample(batch, n, eta=eta, seed=seed + start))

    cpu0, t0 = time.process_time(), time.perf_counter()
    asyncio.run(main())
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    rows = [group_row(task, i, g, decode) for i, g in enumerate(groups)]
    return ArmResult(
        name,
        eta > 0,
        seed,
        wall,
        cpu,
        rows,
        sum(g.decoded_tokens for g in groups),
        sum(g.delivered_tokens for g in groups),
        samples=[[decode(t.token_ids) for t in g.trajectories] for g in groups[:keep_samples]],
    )


# ---- the sweep ---------------------------------------------------------------------------------------------
METRICS = (
    ("forks", "forks/prompt"),
    ("pruned", "pruned/prompt"),
    ("edit_distance", "edit dist"),
    ("distinct_answers", "answers/grp"),
    ("distinct_responses", "distinct/grp"),
    ("mixed_rewards", "mixed rwd"),
    ("mixed_accuracy", "mixed acc"),
    ("pass1", "pass@1"),
    ("passn", "pass@n"),
    ("length", "tokens"),
)


def paired_diff(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean of a - b over prompts and the half-width of its 95% confidence interval (normal approximation)."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, math.nan
    return mean, 1.96 * statistics.stdev(diffs) / math.sqrt(len(diffs))


def summarize(arms: list[ArmResult]) -> dict[str, Any]:
    """Ratios of each LATR arm to its neighbouring stochastic runs, and paired diversity differences to the
    mean of all stochastic runs, prompt by prompt."""
    sto_idx = [i for i, a in enumerate(arms) if not a.is_latr]
    if not sto_idx:
        raise ValueError("a sweep needs at least one stochastic run")
    for i, arm in enumerate(arms):
        before = [j for j in sto_idx if j < i]
        after = [j for j in sto_idx if j > i]
        near = ([before[-1]] if before else []) + ([after[0]] if after else [])
        if arm.is_latr:
            arm.wall_ratio = arm.wall_s / statistics.fmean(arms[j].wall_s for j in near)
            arm.cpu_ratio = arm.cpu_s / statistics.fmean(arms[j].cpu_s for j in near)
    sto = [arms[j] for j in sto_idx]
    n_prompts = len(sto[0].per_prompt)
    sto_mean = {
        key: [statistics.fmean(a.per_prompt[p][key] for a in sto) for p in range(n_prompts)]
        for key, _ in METRICS
    }
    rows = []
    stochastic_row = {key: statistics.fmean(sto_mean[key]) for key, _ in METRICS}
    stochastic_row.update(
        name="stochastic",
        runs=len(sto),
        wall_s=statistics.fmean(a.wall_s for a in sto),
        cpu_s=statistics.fmean(a.cpu_s for a in sto),
        wall_ratio=1.0,
        cpu_ratio=1.0,
    )
    rows.append(stochastic_row)
    for arm in arms:
        if not arm.is_latr:
            continue
        row: dict[str, Any] = {key: arm.mean(key) for key, _ in METRICS}
        for key in ("edit_distance", "distinct_answers", "mixed_rewards"):
            mean, half = paired_diff([r[key] for r in arm.per_prompt], sto_mean[key])
            row[f"d_{key}"], row[f"d_{key}_ci"] = mean, half
        row.update(
            name=arm.name,
            config=arm.config,
            wall_s=arm.wall_s,
            cpu_s=arm.cpu_s,
            wall_ratio=arm.wall_ratio,
            cpu_ratio=arm.cpu_ratio,
            decoded_per_delivered=arm.tokens_decoded / max(arm.tokens_delivered, 1),
        )
        rows.append(row)
    return {"rows": rows}


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table: one row per setting, stochastic first."""
    head = ["setting", *(label for _, label in METRICS), "d answers [95% CI]", "d edit [95% CI]"]
    head += ["wall x", "cpu x"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["name"]] + [f"{r[key]:.2f}" if key != "length" else f"{r[key]:.1f}" for key, _ in METRICS]
        if "d_distinct_answers" in r:
            cells.append(f"{r['d_distinct_answers']:+.2f} ±{r['d_distinct_answers_ci']:.2f}")
            cells.append(f"{r['d_edit_distance']:+.3f} ±{r['d_edit_distance_ci']:.3f}")
        else:
            cells += [f"({r['runs']} runs)", ""]
        cells += [f"{r['wall_ratio']:.2f}", f"{r['cpu_ratio']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_sweep(
    engine: Any,
    task: Task,
    settings: list[tuple[str, LATRConfig]],
    n: int = 8,
    seed: int = 0,
    prompts_per_batch: int = 8,
    stochastic_every: int = 4,
    temperature: float = 1.0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Stochastic runs around every `stochastic_every` settings; returns the summary and every arm."""
    tok = engine.tokenizer
    sampling = SamplingParams(
        max_new_tokens=task.max_new_tokens, temperature=temperature, stop_token_ids=task.stop_token_ids
    )

    def decode(ids: list[int]) -> str:
        return tok.decode(ids, skip_special_tokens=True)

    def sampler(cfg: LATRConfig) -> LATRSampler:
        return LATRSampler(engine, cfg, sampling, engine.eos_ids, lambda t: tok.decode([t]))

    plain = sampler(LATRConfig())
    arms: list[ArmResult] = []
    sto_runs = 0
    # warm-up (not recorded): the first forwards of a fresh engine are slow (allocation, kernel selection)
    warm = dataclasses.replace(task, prompt_ids=task.prompt_ids[:prompts_per_batch])
    run_arm("warm-up", plain, warm, n, 0.0, seed - 1, prompts_per_batch, decode)

    def stochastic() -> None:
        nonlocal sto_runs
        engine.flush_cache_sync()
        arm = run_arm("stochastic", plain, task, n, 0.0, seed + 7_000 * sto_runs, prompts_per_batch, decode)
        sto_runs += 1
        arms.append(arm)
        if log:
            log(f"stochastic run {sto_runs}: {arm.wall_s:.1f} s wall, {arm.cpu_s:.1f} s CPU")

    stochastic()
    for k, (name, cfg) in enumerate(settings):
        engine.flush_cache_sync()
        arm = run_arm(name, sampler(cfg), task, n, 1.0, seed, prompts_per_batch, decode)
        arm.config = cfg.to_dict()
        arms.append(arm)
        if log:
            log(
                f"[{k + 1}/{len(settings)}] {name}: {arm.wall_s:.1f} s, forks {arm.mean('forks'):.2f}, "
                f"answers {arm.mean('distinct_answers'):.2f}, edit {arm.mean('edit_distance'):.3f}"
            )
        if (k + 1) % stochastic_every == 0 or k + 1 == len(settings):
            stochastic()
    summary = summarize(arms)
    summary["arms"] = [dataclasses.asdict(a) for a in arms]
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = bench_parser(__doc__)
    ap.add_argument(
        "--model",
        type=model_argument,
        default="smollm2",
        help="'smollm2' (embedded), 'tiny' or a local HF folder",
    )
    ap.add_argument("--task", default="countdown-fewshot", choices=["countdown-fewshot", "countdown"])
    ap.add_argument("--num-prompts", type=positive_int, default=16)
    ap.add_argument("--n", type=positive_int, default=8, help="trajectories per prompt")
    ap.add_argument(
        "--max-new-tokens",
        type=positive_int,
        default=None,
        help="default: countdown-fewshot 14, countdown 128",
    )
    ap.add_argument("--temperature", type=positive_float, default=1.0, help="training sampling temperature")
    ap.add_argument(
        "--base", default="countdown", help=f"preset the settings start from ({', '.join(PRESETS)})"
    )
    ap.add_argument("--grid", action="append", default=None, help="FIELD=V1|V2|... (repeatable; product)")
    ap.add_argument("--config", action="append", default=[], help="FIELD=V,FIELD=V: one setting (repeatable)")
    ap.add_argument(
        "--stochastic-every", type=positive_int, default=4, help="a stochastic run after every k settings"
    )
    ap.add_argument(
        "--prompts-per-batch", type=positive_int, default=4, help="prompts sampled together (the main job: 4)"
    )
    ap.add_argument("--max-batch-size", type=positive_int, default=64, help="engine batch size")
    ap.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch threads (default: torch's; on a shared, loaded CPU 1 is several times faster)",
    )
    ap.add_argument("--seed", type=seed_int, default=0)
    ap.add_argument("--json", default=None, help="write the summary and every arm's numbers here")
    args = ap.parse_args(argv)
    check_output_flags(ap, json=args.json)

    try:
        grid = args.grid if args.grid is not None else ([] if args.config else list(DEFAULT_GRID))
        overrides = grid_settings(grid) + [config_setting(c) for c in args.config]
        settings = [(setting_name(args.base, o), build_config(args.base, o)) for o in overrides]
    except (ConfigError, TypeError) as e:
        ap.error(str(e))
    if not settings:
        ap.error("no LATR setting to run: give --grid or --config")

    import torch

    from latr_sglang.engines.torch_engine import TorchEngine
    from latr_sglang.tiny import make_tiny_model

    if args.threads:
        torch.set_num_threads(args.threads)
    path = make_tiny_model(tempfile.mkdtemp(prefix="latr-tiny-")) if args.model == "tiny" else args.model
    engine = TorchEngine.from_pretrained(path, max_batch_size=args.max_batch_size, seed=args.seed)
    try:
        task = make_task(args.task, engine.tokenizer, args.num_prompts, args.seed, args.max_new_tokens)
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        t0 = time.perf_counter()
        summary = run_sweep(
            engine,
            task,
            settings,
            n=args.n,
            seed=args.seed,
            prompts_per_batch=args.prompts_per_batch,
            stochastic_every=args.stochastic_every,
            temperature=args.temperature,
            log=lambda s: print(s, file=sys.stderr, flush=True),
        )
    finally:
        engine.close_sync()
    header = (
        f"{args.model}, task {task.name}: {len(task.prompt_ids)} prompts x n={args.n}, "
        f"<= {task.max_new_tokens} new tokens, T={args.temperature}, {args.prompts_per_batch} prompts per "
        f"batch, base preset {args.base}; "
        f"LATR at eta 1.0; {started}, {time.perf_counter() - t0:.0f} s in all"
    )
    print(header)
    print(table(summary["rows"]))
    if args.json:
        summary.update(header=header, argv=sys.argv[1:] if argv is None else list(argv))
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
