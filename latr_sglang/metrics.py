"""Diversity and tree metrics of rollout groups, as flat dicts with OpenRLHF-style names (`latr/...`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from rapidfuzz.distance import Levenshtein

from latr_sglang.driver import GroupResult


def pairwise_edit_distance(seqs: Sequence[Sequence[int]]) -> float:
    """Mean normalized Levenshtein distance over all pairs of a group (token ids); 0 for fewer than 2."""
    pairs = list(itertools.combinations(seqs, 2))
    if not pairs:
        return 0.0
    return sum(Levenshtein.normalized_distance(a, b) for a, b in pairs) / len(pairs)


def distinct_n(seqs: Sequence[Sequence[int]], n: int) -> float:
    """Distinct n-grams / all n-grams across a group (token ids); 0 when no sequence has n tokens."""
    grams = [tuple(s[i : i + n]) for s in seqs for i in range(len(s) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def distinct_answers(texts: Sequence[str], extract: Callable[[str], str | None]) -> int:
    """Number of distinct final answers in a group (responses without an answer are not counted)."""
    return len({a for a in map(extract, texts) if a is not None})


def tie_fraction(group_rewards: Sequence[Sequence[float]]) -> float:
    """Share of groups whose rewards all tie: GRPO/DAPO learn nothing from those."""
    if not group_rewards:
        return 0.0
    return sum(len(set(r)) <= 1 for r in group_rewards) / len(group_rewards)


def tree_stats(group: GroupResult) -> dict[str, float]:
    forks = max(len(group.branches) - 1, 0)
    delivered = group.delivered_tokens
    shared = sum(t.shared_prefix_len for t in group.trajectories if t.origin in ("tree", "fill"))
    return {
        "branches_created": float(forks),
        "branches_pruned": float(sum(b.pruned_at is not None for b in group.branches)),
        "shared_token_fraction": shared / delivered if delivered else 0.0,
        "engine_requests_per_trajectory": group.engine_requests / max(len(group.trajectories), 1),
        "decoded_per_delivered_token": group.decoded_tokens / delivered if delivered else 0.0,
        "tree_exit_step": float(group.exit_step or 0),
    }


def rollout_metrics(
    groups: Sequence[GroupResult],
    texts: Sequence[Sequence[str]] | None = None,
    extract: Callable[[str], str | None] | None = None,
    rewards: Sequence[Sequence[float]] | None = None,
    prefix: str = "latr/",
) -> dict[str, float]:
    """Averages over groups. texts/extract add distinct answers; rewards add the tie fraction."""
    if not groups:
        return {}
    rows: list[dict[str, float]] = []
    for i, g in enumerate(groups):
        seqs = [t.token_ids for t in g.trajectories]
        row = {"pairwise_edit_distance": pairwise_edit_distance(seqs)}
        for n in range(1, 5):
            row[f"distinct_{n}"] = distinct_n(seqs, n)
        if texts is not None and extract is not None:
            row["distinct_answers"] = float(distinct_answers(texts[i], extract))
        row.update(tree_stats(g))
        row["response_length"] = sum(len(s) for s in seqs) / len(seqs)
        row["truncated_fraction"] = sum(t.truncated for t in g.trajectories) / len(g.trajectories)
        rows.append(row)
    out = {prefix + k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
    total_delivered = sum(g.delivered_tokens for g in groups)
    out[prefix + "decoded_per_delivered_token"] = sum(g.decoded_tokens for g in groups) / max(
        total_delivered, 1
    )
    if rewards is not None:
        out[prefix + "reward_tie_fraction"] = tie_fraction(rewards)
    return out
