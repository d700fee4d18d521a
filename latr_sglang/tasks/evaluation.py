"""Evaluation helpers: unbiased pass@k, mean@k, response length statistics."""

from __future__ import annotations

import math
from collections.abc import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), for c correct out of n samples."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # the product form avoids huge binomials
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean_pass_at_k(correct: Sequence[Sequence[bool]], k: int) -> float:
    """pass@k averaged over problems, each with its own samples."""
    if not correct:
        return 0.0
    return sum(pass_at_k(len(c), sum(map(bool, c)), k) for c in correct) / len(correct)


def mean_at_k(scores: Sequence[Sequence[float]]) -> float:
    """Mean score over each problem's samples, averaged over problems (mean@k)."""
    if not scores:
        return 0.0
    return sum(sum(s) / len(s) for s in scores if s) / len(scores)


def length_stats(lengths: Sequence[int], truncated: Sequence[bool] | None = None) -> dict[str, float]:
    if not lengths:
        return {"response_length_mean": 0.0, "response_length_median": 0.0, "response_length_max": 0.0}
    ordered = sorted(lengths)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    stats = {
        "response_length_mean": sum(lengths) / len(lengths),
        "response_length_median": float(median),
        "response_length_max": float(ordered[-1]),
    }
    if truncated is not None:
        stats["truncated_fraction"] = sum(map(bool, truncated)) / max(len(truncated), 1)
    return stats
