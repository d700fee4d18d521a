"""GRPO/DAPO group computations as pure tensor functions (shapes: [groups, n]).

OpenRLHF 0.11.2 has clip-higher, token-level loss and the soft overlong punishment; its dynamic sampling keeps
groups whose mean score lies in a range. DAPO's rule keeps groups whose accuracy is not all equal (std > 0),
over-sampling until the batch is full; DAPO also masks truncated samples out of the loss (overlong filtering).
"""

from __future__ import annotations

import torch

GROUP_NORM_EPS = 1e-9  # OpenRLHF's group_norm estimator (experience_maker.py), so both trainers agree


def group_advantages(rewards: torch.Tensor, normalize_std: bool = True) -> torch.Tensor:
    """GRPO's group-normalized advantages, OpenRLHF's `group_norm` exactly: (r - mean) / (std + 1e-9) within
    each group, with the unbiased (n - 1) std. [G, n] -> [G, n]. A tied group gets 0 everywhere."""
    centered = rewards - rewards.mean(dim=-1, keepdim=True)
    if not normalize_std:
        return centered
    return centered / (rewards.std(dim=-1, keepdim=True) + GROUP_NORM_EPS)


def informative_groups(scores: torch.Tensor) -> torch.Tensor:
    """DAPO's dynamic-sampling rule: groups whose accuracy is not all the same. [G, n] -> bool [G]."""
    return scores.max(dim=1).values > scores.min(dim=1).values


def mean_score_in_range(scores: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """OpenRLHF's dynamic-sampling rule: groups whose mean score is inside (low, high). -> bool [G]."""
    mean = scores.mean(dim=1)
    return (mean > low) & (mean < high)


def overlong_mask(truncated: torch.Tensor) -> torch.Tensor:
    """DAPO's overlong filtering: 0 for truncated samples (their loss is dropped), else 1. [G, n]."""
    return (~truncated.bool()).float()


def soft_overlong_penalty(lengths: torch.Tensor, max_len: int, buffer: int) -> torch.Tensor:
    """DAPO's soft overlong punishment: 0 up to max_len - buffer, then linearly down to -1 at max_len."""
    if buffer <= 0:
        return torch.zeros_like(lengths, dtype=torch.float32)
    over = (lengths.float() - (max_len - buffer)).clamp(min=0)
    return -(over / buffer).clamp(max=1.0)


def keep_group(scores: list[float], rule: str, low: float = 0.0, high: float = 1.0) -> bool:
    """Dynamic sampling for one group's scores: `std` (DAPO) or `mean_range` (OpenRLHF's, bounds open)."""
    row = torch.tensor([scores], dtype=torch.float64)
    if rule == "std":
        return bool(informative_groups(row)[0])
    if rule == "mean_range":
        return bool(mean_score_in_range(row, low, high)[0])
    raise ValueError(f"dynamic_filtering_rule={rule!r}: expected 'std' or 'mean_range'")
