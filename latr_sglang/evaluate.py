"""Evaluate a policy on a task: n samples per prompt, scored by the task reward.

    latr-sglang eval --model CKPT --dataset countdown|math500|amc23|aime24|olympiadbench --n 8 --output r.json

Reports pass@1 (mean accuracy), unbiased pass@k for k = 1, 2, 4, ... n, mean@k (mean reward), the
well-formed rate, response length statistics and the number of distinct final answers per prompt. Works on
any engine of the contract: the torch engine in process (CPU or GPU) or an SGLang server (`--server URL`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latr_sglang.engines.base import GenerateRequest, SamplingParams
from latr_sglang.messages import short_repr
from latr_sglang.tasks import countdown
from latr_sglang.tasks import math as math_task
from latr_sglang.tasks.evaluation import length_stats, mean_at_k, mean_pass_at_k
from latr_sglang.tasks.prompts import encode_prompts, iter_jsonl, unicode_error
from latr_sglang.tasks.reward_func import check_label, parse_label, score_response


def _eval_dir() -> Path:
    """The bundled eval sets: datasets/eval in a checkout (or an editable install), else where a wheel puts
    them (<prefix>/share/latr-sglang/eval, pyproject's data-files)."""
    import sys
    import sysconfig

    checkout = Path(__file__).resolve().parent.parent / "datasets" / "eval"
    if checkout.is_dir():
        return checkout
    for prefix in (sysconfig.get_path("data"), sys.prefix):
        installed = Path(prefix) / "share" / "latr-sglang" / "eval"
        if installed.is_dir():
            return installed
    return checkout


EVAL_DIR = _eval_dir()
DATASETS = {
    "countdown": "countdown_test.jsonl",
    "math500": "math500.jsonl",
    "amc23": "amc23.jsonl",
    "aime24": "aime24.jsonl",
    "olympiadbench": "olympiadbench.jsonl",
}


@dataclass
class EvalItem:
    prompt: str  # the user text (chat) or the raw prompt
    label: Any


def load_eval_set(name_or_path: str, limit: int | None = None) -> list[EvalItem]:
    """A bundled set by name, or a JSONL with prompt/label (or MATH-style problem/answer) rows."""
    path = Path(name_or_path)
    if name_or_path in DATASETS:
        path = EVAL_DIR / DATASETS[name_or_path]
    if not path.is_file():
        raise FileNotFoundError(
            f"dataset={name_or_path!r}: not a bundled set ({', '.join(DATASETS)}) or a file"
        )
    items = []
    for line, row in iter_jsonl(path):  # errors name the file and the line; rows must be JSON objects
        where = f"{path}:{line}"
        if "prompt" in row and "label" in row:
            prompt, label, names = row["prompt"], row["label"], ("prompt", "label")
        elif "problem" in row and "answer" in row:
            prompt, label, names = row["problem"], row["answer"], ("problem", "answer")
            if isinstance(label, float) and not math.isfinite(label):  # NaN would become the answer "nan"
                raise ValueError(f"{where}: answer={label!r}: not a finite number")
            if isinstance(label, int | float) and not isinstance(label, bool):
                label = str(label)  # MATH-style sets write numeric answers as numbers
        else:
            raise ValueError(f"{where}: the row has neither prompt/label nor problem/answer")
        # a null answer would become the gold answer "None", a list prompt the text "['a']": refused here
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"{where}: {names[0]}={short_repr(prompt)}: must be a non-empty string")
        if problem := unicode_error(prompt):
            raise ValueError(f"{where}: {names[0]} is {problem}")
        try:
            check_label(label)
        except ValueError as e:
            raise ValueError(f"{where}: {names[1]}: {e}") from None
        if names[0] == "problem":
            prompt = math_task.DAPO_TEMPLATE.format(problem=prompt)
        items.append(EvalItem(prompt, label))
    if not items:
        raise ValueError(f"{path}: no prompts")
    return items[:limit] if limit else items


def final_answer(response: str, label: Any) -> str | None:
    """The response's final answer, normalized, for counting distinct answers."""
    task, _ = parse_label(label)
    if task == "countdown":
        answer = countdown.extract_answer(response)
        return " ".join(answer.split()) if answer is not None else None
    answer = math_task.extract_answer(response)
    return math_task.normalize(answer) if answer is not None else None


def evaluate(
    engine: Any,
    tokenizer: Any,
    items: Sequence[EvalItem],
    n: int = 8,
    sampling: SamplingParams | None = None,
    chat: bool = True,
    response_prefix: str = "",
    seed: int = 0,
    prompts_per_batch: int = 16,
    progress: bool = True,
) -> dict[str, Any]:
    """Metrics over `items`, n seeded samples each; `response_prefix` is the assistant's prefilled text (it is
    part of the response the reward sees)."""
    from tqdm import tqdm

    if n < 1:
        raise ValueError(f"n={n}: need at least one sample per prompt")
    sampling = sampling or SamplingParams(max_new_tokens=256, temperature=1.0)
    if sampling.max_new_tokens < 1:  # as the LATR sampler: empty responses would score as all-zero metrics
        raise ValueError(f"sampling.max_new_tokens={sampling.max_new_tokens}: responses need >= 1 token")
    correct, rewards, well_formed, lengths, truncated, distinct = [], [], [], [], [], []
    examples: list[
        dict[str, Any]
    ] = []  # the first sample of the first prompts, to read what the policy writes
    correct_examples: list[dict[str, Any]] = []
    start = time.perf_counter()
    bar = tqdm(total=len(items), desc="evaluate", unit="prompt", disable=not progress)
    for b in range(0, len(items), prompts_per_batch):
        batch = items[b : b + prompts_per_batch]
        encoded = encode_prompts(tokenizer, [it.prompt for it in batch], chat, response_prefix)
        requests = [
            GenerateRequest(
                tuple(ids),
                dataclasses.replace(sampling, sampling_seed=seed * 1_000_003 + (b + i) * 1009 + j),
            )
            for i, ids in enumerate(encoded)
            for j in range(n)
        ]
        outputs = _generate(engine, requests)
        for i, item in enumerate(batch):
            group = outputs[i * n : (i + 1) * n]
            texts = [
                response_prefix + tokenizer.decode(o.output_ids, skip_special_tokens=True) for o in group
            ]
            scored = [score_response(t, item.label) for t in texts]
            correct.append([s[1] >= 1.0 for s in scored])
            rewards.append([s[0] for s in scored])
            well_formed.extend(s[2].get("well_formed", s[2].get("answered", 0.0)) for s in scored)
            lengths.extend(len(o.output_ids) for o in group)
            truncated.extend(o.finish_reason == "length" for o in group)
            distinct.append(len({a for a in (final_answer(t, item.label) for t in texts) if a is not None}))
            if len(examples) < 4:
                examples.append({"label": item.label, "response": texts[0], "reward": scored[0][0]})
            right = next((t for t, s in zip(texts, scored) if s[1] >= 1.0), None)
            if right is not None and len(correct_examples) < 8:  # what a solved problem looks like
                correct_examples.append({"label": item.label, "response": right})
        bar.update(len(batch))
    bar.close()
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= n]
    return {
        "prompts": len(items),
        "n": n,
        "pass@1": mean_pass_at_k(correct, 1),
        **{f"pass@{k}": mean_pass_at_k(correct, k) for k in ks},
        f"mean@{n}": mean_at_k(rewards),
        "reward_mean": statistics.fmean(r for row in rewards for r in row),
        "well_formed_rate": statistics.fmean(well_formed) if well_formed else 0.0,
        "distinct_answers_mean": statistics.fmean(distinct) if distinct else 0.0,
        **length_stats(lengths, truncated),
        "wall_s": time.perf_counter() - start,
        "examples": examples,
        "correct_examples": correct_examples,
        # per prompt, in order: correct samples out of n (confidence intervals, paired before/after tests)
        "correct_per_prompt": [sum(map(bool, c)) for c in correct],
    }


def _generate(engine: Any, requests: list[GenerateRequest]) -> list:
    if hasattr(engine, "generate_sync"):  # the torch engine: its own scheduler thread
        return engine.generate_sync(requests)
    import asyncio

    async def run() -> list:
        try:
            return await engine.generate(requests)
        finally:  # an HTTP session belongs to this event loop: close it here (no "Unclosed client session")
            await engine.close()

    return asyncio.run(run())


@dataclass
class RunSettings:
    """How a local training run (its config.json) wrote and scored prompts, so that an evaluation of its
    policy sees the prompts the same way: chat template or not, the response prefix, stopping at a newline,
    and the run's own held-out problems."""

    chat: bool
    response_prefix: str
    stop_at_newline: bool
    held_out: list[EvalItem] | None  # the run's held-out problems (built-in task), else None
    description: str
    # the run's own evaluation: its response length limit, temperature and samples per prompt
    max_new_tokens: int = 1024
    temperature: float = 1.0
    n: int = 8
    base_model: str = "smollm2"  # the model the run started from
    policy: str | None = None  # the run's trained policy folder (RUN/policy), once the run has saved it


def check_config_types(cls: type, values: dict[str, Any], where: str, prefix: str = "") -> None:
    """Each of `values` (read from a JSON file, e.g. a run's config.json) checked against the type hint of
    `cls`'s dataclass field of that name: a ValueError naming `where`, the key and the value, instead of a
    TypeError from deep inside the class (`"countdown_numbers": 5` where a pair is expected). JSON lists
    stand for tuples; keys that are not fields are left alone."""
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        hint = hints.get(key)
        if hint is not None and not _matches_hint(value, hint):
            raise ValueError(f"{where}: {prefix}{key}={short_repr(value)}: expected {_describe_hint(hint)}")


def _matches_hint(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_matches_hint(value, a) for a in args)
    if origin is typing.Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            return False
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            return not args or all(_matches_hint(v, args[0]) for v in value)
        return len(value) == len(args) and all(_matches_hint(v, a) for v, a in zip(value, args))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # a hint this check does not know: the class's own checks decide


def _describe_hint(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe_hint(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (tuple, list):
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            return f"a list, each {_describe_hint(args[0])}" if args else "a list"
        return f"a list of {len(args)}: [{', '.join(_describe_hint(a) for a in args)}]"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def write_results(path: str | Path, results: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
