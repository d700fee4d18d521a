"""OpenRLHF reward function for countdown and math: importable, and usable directly as a file:

    --reward.remote_url /path/to/latr_sglang/tasks/reward_func.py

OpenRLHF calls `reward_func(queries, prompts, labels)` from worker threads, where a query is the prompt and
the response decoded together. A label is a countdown problem as JSON ({"numbers": [...], "target": N}) or a
math answer string. Returns OpenRLHF's shape: `rewards` (the shaped reward used for advantages), `scores`
(accuracy in [0, 1], what DAPO's dynamic sampling filters on) and `extra_logs`.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from latr_sglang.tasks import countdown
from latr_sglang.tasks import math as math_task


def response_text(query: str, prompt: str) -> str:
    """The response part of an OpenRLHF query (prompt + response, decoded together)."""
    if not isinstance(query, str):
        return ""
    if isinstance(prompt, str) and prompt:
        if query.startswith(prompt):
            return query[len(prompt) :]
        at = query.rfind(prompt)
        if at >= 0:
            return query[at + len(prompt) :]
    return query


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


def score_one(query: str, prompt: str, label: Any) -> tuple[float, float, dict[str, float]]:
    """(reward, accuracy, info); never raises."""
    try:
        response = response_text(query, prompt)
        task, payload = parse_label(label)
        if task == "countdown":
            reward, info = countdown.score(response, *payload)
            return reward, info["correct"], info
        accuracy, info = math_task.score(response, payload)
        return accuracy, accuracy, info
    except Exception:
        return 0.0, 0.0, {"answered": 0.0, "correct": 0.0}


def reward_func(queries: list[str], prompts: list[str], labels: list[Any], **kwargs: Any) -> dict[str, Any]:
    results = [score_one(q, p, label) for q, p, label in zip(queries, prompts, labels)]
    return {
        "rewards": torch.tensor([r for r, _, _ in results], dtype=torch.float32),
        "scores": torch.tensor([s for _, s, _ in results], dtype=torch.float32),
        "extra_logs": {
            "answered": torch.tensor([i.get("answered", 0.0) for _, _, i in results], dtype=torch.float32),
        },
    }
