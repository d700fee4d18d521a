"""LATR vs stochastic sampling on the same prompts, n and engine (the `sample` CLI, the rollout benchmark)."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latr_sglang.driver import GroupResult, LATRSampler
from latr_sglang.metrics import rollout_metrics
from latr_sglang.tasks.prompts import encode_prompts, load_prompts, read_jsonl  # noqa: F401 (re-exported)

COUNTDOWN_TEMPLATE = (
    "Using the numbers {numbers}, create an equation that equals {target}. You can use basic arithmetic "
    "operations (+, -, *, /) and each number can only be used once. Show your work in <think> </think> tags. "
    "And return the final answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>."
)


def builtin_countdown_prompts(count: int, seed: int = 0) -> list[str]:
    """Countdown-style prompts: 3-4 numbers in 1..100 and a target reachable with + and -."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(count):
        numbers = [rng.randint(1, 100) for _ in range(rng.choice([3, 4]))]
        target = numbers[0]
        for x in numbers[1:]:
            target = target + x if rng.random() < 0.5 or target - x <= 0 else target - x
        prompts.append(COUNTDOWN_TEMPLATE.format(numbers=numbers, target=target))
    return prompts


@dataclass
class Arm:
    name: str
    groups: list[GroupResult]
    wall_s: float
    driver_cpu_s: float  # CPU time of the thread running the driver's event loop

    @property
    def delivered(self) -> int:
        return sum(g.delivered_tokens for g in self.groups)

    @property
    def decoded(self) -> int:
        return sum(g.decoded_tokens for g in self.groups)

    @property
    def requests(self) -> int:
        return sum(g.engine_requests for g in self.groups)


def run_arm(
    name: str,
    sampler: LATRSampler,
    prompts: Sequence[Sequence[int]],
    n: int,
    eta: float,
    seed: int,
    prompts_per_batch: int,
    progress: Any = None,
    admission: str = "batch",
    close_engine: Any = None,
    seed_scale: int = 1,
) -> Arm:
    """Samples every prompt's group with `sampler`. admission: "batch" samples prompts_per_batch prompts per
    call and waits for the whole batch before the next (a batch is as slow as its slowest group; the batch
    exit rule needs it); "window" keeps prompts_per_batch prompts in flight, one call per prompt, a new prompt
    starting as soon as one finishes: the way OpenRLHF's experience maker drives an engine actor (one
    generate_responses per prompt), which keeps the engine's batch full while a slow tree finishes. A LATR
    arm under the batch exit rule (exit_scope="batch") is sampled in batches either way: its batch leaves the
    tree phase together. The group of prompt i (or of the batch starting at i) is seeded
    seed * seed_scale + i. An HTTP engine's session belongs to the event loop that opened it: `close_engine`
    is closed inside this one."""
    import asyncio

    if admission not in ("batch", "window"):
        raise ValueError(f"admission={admission!r}: expected 'batch' or 'window'")
    if eta > 0 and getattr(getattr(sampler, "cfg", None), "exit_scope", "prompt") == "batch":
        admission = "batch"
    groups: list[GroupResult] = []

    async def main() -> float:
        cpu0 = time.thread_time()
        try:
            if admission == "batch":
                for start in range(0, len(prompts), prompts_per_batch):
                    batch = prompts[start : start + prompts_per_batch]
                    groups.extend(await sampler.sample(batch, n, eta=eta, seed=seed * seed_scale + start))
                    if progress is not None:
                        progress.update(len(batch))
            else:
                slots = asyncio.Semaphore(prompts_per_batch)

                async def one(i: int) -> GroupResult:
                    async with slots:
                        (group,) = await sampler.sample([prompts[i]], n, eta=eta, seed=seed * seed_scale + i)
                    if progress is not None:
                        progress.update(1)
                    return group

                groups.extend(await asyncio.gather(*(one(i) for i in range(len(prompts)))))
        finally:
            if close_engine is not None:
                await close_engine.close()
        return time.thread_time() - cpu0

    t0 = time.perf_counter()
    cpu = asyncio.run(main())
    return Arm(name, groups, time.perf_counter() - t0, cpu)


def comparison_table(arms: Sequence[Arm], decode: Any = None) -> tuple[str, dict[str, dict[str, float]]]:
    """A side-by-side text table and the numbers behind it."""
    columns: dict[str, dict[str, float]] = {}
    for arm in arms:
        m = rollout_metrics(arm.groups, prefix="")
        columns[arm.name] = {
            "pairwise edit distance": m["pairwise_edit_distance"],
            "distinct-1": m["distinct_1"],
            "distinct-2": m["distinct_2"],
            "distinct-4": m["distinct_4"],
            "distinct responses / n": sum(
                len({tuple(t.token_ids) for t in g.trajectories}) / len(g.trajectories) for g in arm.groups
            )
            / len(arm.groups),
            "mean response tokens": m["response_length"],
            "truncated fraction": m["truncated_fraction"],
            "branches created / prompt": m["branches_created"],
            "branches pruned / prompt": m["branches_pruned"],
            "tokens decoded": float(arm.decoded),
            "tokens delivered": float(arm.delivered),
            "decoded per delivered": arm.decoded / max(arm.delivered, 1),
            "engine requests": float(arm.requests),
            "wall time (s)": arm.wall_s,
            "driver CPU share": arm.driver_cpu_s / arm.wall_s if arm.wall_s else 0.0,
        }
    names = list(columns)
    keys = list(columns[names[0]])
    width = max(map(len, keys))
    lines = [f"{'':{width}}  " + "  ".join(f"{n:>12}" for n in names)]
    for key in keys:
        lines.append(f"{key:{width}}  " + "  ".join(f"{_fmt(columns[n][key]):>12}" for n in names))
    if len(names) == 2 and columns[names[1]]["wall time (s)"]:
        ratio = columns[names[0]]["wall time (s)"] / columns[names[1]]["wall time (s)"]
        lines.append(f"{'wall-time ratio':{width}}  {ratio:>12.3f}  ({names[0]} / {names[1]})")
    return "\n".join(lines), columns


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) >= 1 else f"{x:.3f}"


def write_jsonl(path: str | Path, arms: Sequence[Arm], prompt_texts: Sequence[str], tokenizer: Any) -> int:
    rows = 0
    with open(path, "w") as f:
        for arm in arms:
            for i, g in enumerate(arm.groups):
                for t in g.trajectories:
                    row = {
                        "sampler": arm.name,
                        "prompt_index": i,
                        "prompt": prompt_texts[i],
                        "response": tokenizer.decode(t.token_ids, skip_special_tokens=True),
                        "token_ids": t.token_ids,
                        "logprobs": [round(x, 6) for x in t.logprobs],
                        "finish_reason": t.finish_reason.value,
                        "origin": t.origin,
                        "branch_id": t.branch_id,
                        "parent": t.parent,
                        "birth_step": t.birth_step,
                        "shared_prefix_len": t.shared_prefix_len,
                    }
                    f.write(json.dumps(row) + "\n")
                    rows += 1
    return rows
