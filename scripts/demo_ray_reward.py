"""Reward file for `make demo-ray` (scripts/demo-ray.sh): the main job's countdown reward for prompts that end
with the assistant's prefill " <answer>" (latr_sglang.tasks.countdown_fewshot.RESPONSE_PREFIX). In the local
trainer the prefill belongs to the response the reward sees; OpenRLHF's Ray trainer has no prefill, so the
prompt carries it and this file puts it back in front of the response before scoring, unchanged otherwise."""

from __future__ import annotations

from typing import Any

import torch

from latr_sglang.tasks.countdown_fewshot import RESPONSE_PREFIX
from latr_sglang.tasks.reward_func import response_text, score_response


def reward_func(queries: list[str], prompts: list[str], labels: list[Any], **kwargs: Any) -> dict[str, Any]:
    results = []
    for query, prompt, label in zip(queries, prompts, labels):
        response = response_text(query, prompt)
        scored = None if response is None else score_response(RESPONSE_PREFIX + response, label)
        results.append(scored or (0.0, 0.0, {}))
    return {
        "rewards": torch.tensor([r for r, _, _ in results], dtype=torch.float32),
        "scores": torch.tensor([s for _, s, _ in results], dtype=torch.float32),
        "extra_logs": {
            key: torch.tensor([i.get(key, 0.0) for _, _, i in results], dtype=torch.float32)
            for key in ("correct", "well_formed")
        },
    }
