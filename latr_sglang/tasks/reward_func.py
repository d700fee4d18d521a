"""OpenRLHF reward function for countdown and math: importable, and usable directly as a file:

    --reward.remote_url /path/to/latr_sglang/tasks/reward_func.py

OpenRLHF calls `reward_func(queries, prompts, labels)` from worker threads, where a query is the prompt and
the response decoded together. A label is a countdown problem as JSON ({"numbers": [...], "target": N}) or a
math answer string. Returns OpenRLHF's shape: `rewards` (the shaped reward used for advantages), `scores`
(accuracy in [0, 1], what DAPO's dynamic sampling filters on) and `extra_logs`.

The response is what follows the prompt. A caller that has the token boundary passes the decoded response
tokens as `responses=[...]` (one per query); otherwise the query must contain the prompt exactly.
When it does not (a tokenizer that does not round-trip the prompt, a prompt OpenRLHF truncated), the response
cannot be told apart from the prompt, and the prompt's own example answer would be scored: such a sample
scores 0, is counted in `extra_logs["response_unaligned"]` and logged with the reason, rather than guessed.

The three lists (and `responses`) must have one entry per sample: lists of different lengths are a caller
bug and raise a ValueError naming the lengths. A malformed label (a countdown label whose numbers or target
are not integers, a null) scores 0 and is logged; integer strings ("65") are converted. The math answers of
one call are verified concurrently and share a CPU budget (math.batch_budget): once a batch of hostile
answers has spent it, its answers still waiting for math-verify score 0.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import math
import re
import threading
from typing import Any

import torch

from latr_sglang.messages import short_repr
from latr_sglang.tasks import countdown
from latr_sglang.tasks import math as math_task
from latr_sglang.tasks.verify_pool import WorkersCannotStart

# a fixed name: OpenRLHF loads this file as the module "reward_func"
logger = logging.getLogger("latr_sglang.tasks.reward_func")
_unaligned_lock = threading.Lock()
unaligned_count = 0  # samples refused because the query did not contain the prompt (this process)
bad_label_count = 0  # samples scored 0 because their label was malformed (this process)
# threads scoring one batch: they wait on verifier workers (the pool bounds the processes), not on the GIL
BATCH_THREADS = 8


def response_text(query: str, prompt: str) -> str | None:
    """The response part of an OpenRLHF query (prompt + response, decoded together), or None when the query
    does not contain the prompt exactly (then where the response starts is unknown)."""
    if not isinstance(query, str):
        return None
    if not isinstance(prompt, str):
        return None
    if not prompt:
        return query  # an empty prompt: the query is the response
    if query.startswith(prompt):
        return query[len(prompt) :]
    # a decoded special-token prefix (BOS) may precede the prompt; its first occurrence ends at the boundary
    at = query.find(prompt)
    if at >= 0:
        return query[at + len(prompt) :]
    return None


def _report_unaligned(query: Any, prompt: Any) -> None:
    global unaligned_count
    with _unaligned_lock:
        unaligned_count += 1
        count = unaligned_count
    if count == 1 or count % 100 == 0:  # the first, then every 100th: a misconfiguration repeats every sample
        where = _first_difference(query, prompt)
        logger.warning(
            "reward: the decoded query does not contain the prompt (they differ at character %s: prompt %r, "
            "query %r); the response cannot be located, so the sample scores 0 (%d so far). Pass "
            "responses=[...] from token boundaries, or keep prompts within the length the tokenizer keeps "
            "and round-trips.",
            where,
            prompt[max(where - 10, 0) : where + 20] if isinstance(prompt, str) else prompt,
            query[max(where - 10, 0) : where + 20] if isinstance(query, str) else query,
            count,
        )


def _first_difference(query: Any, prompt: Any) -> int:
    if not isinstance(query, str) or not isinstance(prompt, str):
        return 0
    for i, (a, b) in enumerate(zip(query, prompt)):
        if a != b:
            return i
    return min(len(query), len(prompt))


_JSON_OBJECT_START = re.compile(r"\s*\{\s*[\"']")
_LABEL_SHAPE = 'a math answer (a string) or a countdown problem {"numbers": [...], "target": N}'


def parse_label(label: Any) -> tuple[str, Any]:
    """('countdown', (numbers, target)) or ('math', answer); a ValueError naming the value for a label that
    is neither. Unambiguous forms are converted: integer strings or integral floats in a countdown label, an
    int or a finite float as a math answer."""
    if isinstance(label, str) and _JSON_OBJECT_START.match(label):
        # '{"' (or "{'") opens a JSON object, never a math answer: a typo in its keys or a cut-off string
        # would otherwise make the whole problem a math answer that no response can match
        try:
            parsed = json.loads(label)
        except (ValueError, RecursionError) as e:
            reason = e.msg if isinstance(e, json.JSONDecodeError) else type(e).__name__
            raise ValueError(
                f"label={short_repr(label)}: starts like a JSON countdown problem but is not valid "
                f"JSON ({reason}); expected {_LABEL_SHAPE}"
            ) from None
        if not isinstance(parsed, dict) or ("numbers" not in parsed and "target" not in parsed):
            raise ValueError(
                f"label={short_repr(label)}: a JSON object without 'numbers' and 'target' (keys "
                f"are lower case); expected {_LABEL_SHAPE}"
            )
        return "countdown", countdown.label_values(parsed)
    if isinstance(label, str) and label.lstrip().startswith("{"):
        try:
            parsed = json.loads(label)
        except (ValueError, RecursionError):
            parsed = None  # "{1, 2}": a math answer (a set), not JSON
        if isinstance(parsed, dict) and ("numbers" in parsed or "target" in parsed):
            return "countdown", countdown.label_values(parsed)
    if isinstance(label, dict):
        if "numbers" in label or "target" in label:
            return "countdown", countdown.label_values(label)
        raise ValueError(f"label={short_repr(label)}: expected {_LABEL_SHAPE}")
    if isinstance(label, str):
        if not label.strip():
            raise ValueError(f"label={label!r}: an empty math answer")
        return "math", label
    if isinstance(label, int) and not isinstance(label, bool):
        try:
            return "math", str(label)
        except ValueError:  # more digits than Python converts (4300)
            raise ValueError(f"label={short_repr(label)}: an integer too long for an answer") from None
    if isinstance(label, float) and math.isfinite(label):
        return "math", repr(label)
    # None and the like: str(None) would make "None" the gold answer
    raise ValueError(f"label={short_repr(label)}: expected {_LABEL_SHAPE}")


def check_label(label: Any) -> Any:
    """The label in the form the reward scores (a countdown label as a dict of ints, a math answer as a
    string), or a ValueError naming the bad value: for checking a dataset when it is loaded."""
    task, payload = parse_label(label)
    if task == "countdown":
        numbers, target = payload
        return {"numbers": numbers, "target": target}
    from latr_sglang.tasks.math import normalize

    if not normalize(payload):
        raise ValueError(
            f"label={short_repr(label)}: nothing is left of this math answer once normalized "
            "($, units, spaces removed): no response could match it"
        )
    return payload


def _report_bad_label(label: Any, error: ValueError) -> None:
    global bad_label_count
    with _unaligned_lock:
        bad_label_count += 1
        count = bad_label_count
    if count == 1 or count % 100 == 0:  # a bad dataset repeats it every sample: the first, then every 100th
        logger.warning("reward: malformed label, the sample scores 0 (%d so far): %s", count, error)


def score_response(
    response: str, label: Any, budget: math_task.CPUBudget | None = None
) -> tuple[float, float, dict[str, float]]:
    """(reward, accuracy, info) for a response alone (no prompt to strip); never raises for any response or
    label (only WorkersCannotStart, when the math verifier cannot run at all). `budget`: the math
    verification budget shared by a batch."""
    try:
        try:
            task, payload = parse_label(label)
        except ValueError as e:
            _report_bad_label(label, e)
            return 0.0, 0.0, {"answered": 0.0, "correct": 0.0}
        if task == "countdown":
            reward, info = countdown.score(response, *payload)
            return reward, info["correct"], info
        accuracy, info = math_task.score(response, payload, budget)
        return accuracy, accuracy, info
    except WorkersCannotStart:  # no verifier worker can start (a script without the main-module guard)
        raise
    except Exception:
        return 0.0, 0.0, {"answered": 0.0, "correct": 0.0}


def score_one(
    query: str, prompt: str, label: Any, budget: math_task.CPUBudget | None = None
) -> tuple[float, float, dict[str, float]]:
    """(reward, accuracy, info) for an OpenRLHF query; never raises. A query that does not contain its prompt
    scores 0 with info["response_unaligned"] = 1."""
    response = response_text(query, prompt)
    if response is None:
        if isinstance(query, str):
            _report_unaligned(query, prompt)
            return 0.0, 0.0, {"answered": 0.0, "correct": 0.0, "response_unaligned": 1.0}
        return 0.0, 0.0, {"answered": 0.0, "correct": 0.0}
    return score_response(response, label, budget)


def _is_math(label: Any) -> bool:
    """Whether the label asks for math-verify (a malformed one scores 0 without it)."""
    try:
        return parse_label(label)[0] == "math"
    except ValueError:
        return False


def _check_batch(**lists: Any) -> int:
    """The batch size, or a ValueError naming the lengths: zip() would silently drop the extra samples, and
    a string would be scored one character at a time."""
    lengths = {}
    for name, value in lists.items():
        if isinstance(value, str | bytes) or not hasattr(value, "__len__"):
            raise ValueError(
                f"reward_func: {name} must be a list with one entry per sample, got {type(value).__name__}"
            )
        lengths[name] = len(value)
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name} {length}" for name, length in lengths.items())
        raise ValueError(f"reward_func: the lists must have one entry per sample, got lengths {shown}")
    return next(iter(lengths.values()))


def reward_func(queries: list[str], prompts: list[str], labels: list[Any], **kwargs: Any) -> dict[str, Any]:
    """OpenRLHF's entry point. `responses` (optional, one per query): the response decoded from its own
    tokens, used instead of splitting the query at the prompt."""
    responses = kwargs.get("responses")
    batch = dict(queries=queries, prompts=prompts, labels=labels)
    if responses is not None:
        batch["responses"] = responses
    size = _check_batch(**batch)
    budget = math_task.batch_budget(size)

    def one(i: int) -> tuple[float, float, dict[str, float]]:
        if responses is not None:
            r = responses[i]
            return score_response(r, labels[i], budget) if isinstance(r, str) else (0.0, 0.0, {})
        return score_one(queries[i], prompts[i], labels[i], budget)

    # math answers concurrently (their threads wait on the verifier pool, which runs one batch's hostile
    # answers side by side); the rest inline, where threads would only contend for the GIL
    math_rows = [i for i in range(size) if _is_math(labels[i])]
    results: list[tuple[float, float, dict[str, float]] | None] = [None] * size
    if len(math_rows) > 1:
        with concurrent.futures.ThreadPoolExecutor(min(len(math_rows), BATCH_THREADS)) as pool:
            for i, result in zip(math_rows, pool.map(one, math_rows)):
                results[i] = result
    for i in range(size):
        if results[i] is None:
            results[i] = one(i)
    if budget.spent:
        logger.warning(
            "reward: this batch of %d used its math verification budget (%.1f s of CPU); its answers still "
            "waiting for math-verify scored 0",
            size,
            budget.seconds,
        )
    return {
        "rewards": torch.tensor([r for r, _, _ in results], dtype=torch.float32),
        "scores": torch.tensor([s for _, s, _ in results], dtype=torch.float32),
        "extra_logs": {
            "answered": torch.tensor([i.get("answered", 0.0) for _, _, i in results], dtype=torch.float32),
            "response_unaligned": torch.tensor(
                [i.get("response_unaligned", 0.0) for _, _, i in results], dtype=torch.float32
            ),
        },
    }
