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
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import torch

from latr_sglang.tasks import countdown
from latr_sglang.tasks import math as math_task

# a fixed name: OpenRLHF loads this file as the module "reward_func"
logger = logging.getLogger("latr_sglang.tasks.reward_func")
_unaligned_lock = threading.Lock()
unaligned_count = 0  # samples refused because the query did not contain the prompt (this process)


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


def parse_label(label: Any) -> tuple[str, Any]:
    """('countdown', (numbers, target)) or ('math', answer)."""
    if isinstance(label, str) and label.lstrip().startswith("{"):
        try:
            label = json.loads(label)
        except json.JSONDecodeError:
            return "math", label
    if isinstance(label, dict) and "numbers" in label and "target" in label:
        return "countdown", (list(label["numbers"]), label["target"])
    return "math", label if isinstance(label, str) else str(label)


def score_response(response: str, label: Any) -> tuple[float, float, dict[str, float]]:
    """(reward, accuracy, info) for a response alone (no prompt to strip); never raises."""
    try:
        task, payload = parse_label(label)
        if task == "countdown":
            reward, info = countdown.score(response, *payload)
            return reward, info["correct"], info
        accuracy, info = math_task.score(response, payload)
        return accuracy, accuracy, info
    except Exception:
        return 0.0, 0.0, {"answered": 0.0, "correct": 0.0}


def score_one(query: str, prompt: str, label: Any) -> tuple[float, float, dict[str, float]]:
    """(reward, accuracy, info) for an OpenRLHF query; never raises. A query that does not contain its prompt
    scores 0 with info["response_unaligned"] = 1."""
    response = response_text(query, prompt)
    if response is None:
        if isinstance(query, str):
            _report_unaligned(query, prompt)
            return 0.0, 0.0, {"answered": 0.0, "correct": 0.0, "response_unaligned": 1.0}
        return 0.0, 0.0, {"answered": 0.0, "correct": 0.0}
    return score_response(response, label)


def reward_func(queries: list[str], prompts: list[str], labels: list[Any], **kwargs: Any) -> dict[str, Any]:
    """OpenRLHF's entry point. `responses` (optional, one per query): the response decoded from its own
    tokens, used instead of splitting the query at the prompt."""
    responses = kwargs.get("responses")
    if responses is not None and len(responses) == len(queries):
        results = [
            score_response(r, label) if isinstance(r, str) else (0.0, 0.0, {})
            for r, label in zip(responses, labels)
        ]
    else:
        results = [score_one(q, p, label) for q, p, label in zip(queries, prompts, labels)]
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
