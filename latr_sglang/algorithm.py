"""LATR's decisions as pure functions (../shared/docs/LATR_SPEC.md). No engines, no asyncio, no state.

A rollout of n trajectories per prompt splits into k_latr tree trajectories and k_sto plain samples
(`group_split`). In the tree phase every live branch extends itself with the argmax token; where the raw next-
token distribution is uncertain (`fork_tokens`), a child branch starts with the runner-up token, while the
tree has room. At lookahead ages r (20, 30, 50 tokens after its birth) a child whose r tokens stay too similar
to its parent's r tokens over the same positions is pruned with its descendants (`should_prune`). The tree
phase ends by `tree_phase_done`; unfinished branches are then completed by ordinary sampling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rapidfuzz.distance import LCSseq, Levenshtein

from latr_sglang.config import LATRConfig


# ---- schedules -----------------------------------------------------------------------------------
def mix_ratio(schedule: dict[int, float], step: int) -> float:
    """eta at a training step: the value of the largest key <= step (steps count from 1)."""
    keys = [k for k in schedule if k <= step]
    return schedule[max(keys)] if keys else schedule[min(schedule)]


def group_split(n: int, eta: float) -> tuple[int, int]:
    """(k_latr, k_sto) for a group of n: round(n * eta) tree trajectories, the rest stochastic."""
    k_latr = min(n, max(0, math.floor(n * eta + 0.5)))  # round half up, as the reference's int(x + .5)
    return k_latr, n - k_latr


# ---- branching -----------------------------------------------------------------------------------
def fork_tokens(top: Sequence[tuple[int, float]], cfg: LATRConfig, chosen: int | None = None) -> list[int]:
    """Tokens that start a child branch at this position.

    top: the raw (pre-temperature) top-m distribution as [(token_id, logprob)], most likely first.
    chosen: the token the branch itself appends (the argmax when tree_sampling is greedy).
    Candidate j >= 1 forks iff p_j > tau_abs and p_0 - p_j < tau_rel (paper) / > tau_rel (released runs).
    With a sampled tree phase, the valid top-m tokens other than the one drawn fork.
    """
    m = cfg.max_branch_per_token
    if len(top) < 2 or m < 2:
        return []
    p0 = math.exp(top[0][1])
    valid = [top[0][0]]
    for token, logprob in top[1:m]:
        p = math.exp(logprob)
        gap = p0 - p
        close = gap < cfg.tau_rel if cfg.rel_rule == "paper" else gap > cfg.tau_rel
        if p > cfg.tau_abs and close:
            valid.append(token)
    if chosen is None:
        chosen = top[0][0]
    return [t for t in valid if t != chosen]


# ---- pruning -------------------------------------------------------------------------------------
def edit_distance(a: Sequence[int], b: Sequence[int]) -> float:
    """Normalized Levenshtein distance on token ids, in [0, 1]."""
    return Levenshtein.normalized_distance(a, b)


def suffix_match(a: Sequence[int], b: Sequence[int]) -> float:
    """Longest suffix of one window found anywhere in the other (both directions, max), divided by r."""
    r = max(len(a), len(b))
    if r == 0:
        return 0.0
    return max(_longest_suffix_in(a, b), _longest_suffix_in(b, a)) / r


def _longest_suffix_in(a: Sequence[int], b: Sequence[int]) -> int:
    # Map token ids to code points so that `in` does the substring search; the property "a's suffix of length
    # L occurs in b" is monotone in L, so binary search finds the longest.
    sa, sb = _as_text(a), _as_text(b)
    lo, hi = 0, min(len(sa), len(sb))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sa[-mid:] in sb:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _as_text(ids: Sequence[int]) -> str:
    return "".join(chr(0x10000 + t) for t in ids)  # above the surrogates; vocabularies are < 0xF0000


def rouge_l_f1(a: Sequence[int], b: Sequence[int]) -> float:
    """ROUGE-L F1 on token ids (LCS-based)."""
    if not a or not b:
        return 0.0
    lcs = LCSseq.similarity(a, b)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


def too_similar(child: Sequence[int], parent: Sequence[int], cfg: LATRConfig) -> bool:
    """Whether any enabled metric says the child's window repeats its parent's."""
    if (
        cfg.prune_edit_distance_below is not None
        and edit_distance(child, parent) < cfg.prune_edit_distance_below
    ):
        return True
    if (
        cfg.prune_suffix_match_above is not None
        and suffix_match(child, parent) > cfg.prune_suffix_match_above
    ):
        return True
    return cfg.prune_rouge_l_above is not None and rouge_l_f1(child, parent) > cfg.prune_rouge_l_above


def fork_is_exempt(parent_token_text: str, cfg: LATRConfig) -> bool:
    """Forks on whitespace, digits and operators are never pruned (their parent token decides)."""
    stripped = parent_token_text.strip()
    return not stripped or all(c in cfg.exempt_chars for c in stripped)


def should_prune(
    child_window: Sequence[int],
    parent_window: Sequence[int],
    parent_token_text: str,
    eos_ids: frozenset[int] | set[int],
    cfg: LATRConfig,
) -> bool:
    """The lookahead check of a child at age r: both windows start at the fork position and have r tokens."""
    if any(t in eos_ids for t in child_window) or any(t in eos_ids for t in parent_window):
        return False
    if fork_is_exempt(parent_token_text, cfg):
        return False
    return too_similar(child_window, parent_window, cfg)


@dataclass(frozen=True)
class PruneCheck:
    """One lookahead check: everything about it travels together (the reference filtered exempt checks out
    of one list but not out of its parallel lists, pairing verdicts with the wrong branches)."""

    branch_id: int
    child_window: tuple[int, ...]
    parent_window: tuple[int, ...]
    parent_token_text: str


def branches_to_prune(
    checks: Sequence[PruneCheck], eos_ids: frozenset[int] | set[int], cfg: LATRConfig
) -> set[int]:
    return {
        c.branch_id
        for c in checks
        if should_prune(c.child_window, c.parent_window, c.parent_token_text, eos_ids, cfg)
    }


def with_descendants(pruned: set[int], parent_of: dict[int, int | None]) -> set[int]:
    """The pruned branches and every branch descending from them."""
    out = set(pruned)
    changed = True
    while changed:
        changed = False
        for branch, parent in parent_of.items():
            if parent in out and branch not in out:
                out.add(branch)
                changed = True
    return out


# ---- leaving the tree phase ----------------------------------------------------------------------
def exit_share(cfg: LATRConfig, step: int, max_response_len: int) -> float:
    """thr(t) = exit_threshold - exit_decay * t / max_response_len."""
    return cfg.exit_threshold - cfg.exit_decay * step / max_response_len


def effective_size(k_latr: int, n_branches: int, all_finished: bool) -> int:
    """A tree counts as full when every branch is finished, else by its number of branches."""
    return k_latr if all_finished else n_branches


def tree_phase_done(
    effective_sizes: Sequence[int],
    k_latr_total: int,
    youngest_age: int | None,
    step: int,
    max_response_len: int,
    cfg: LATRConfig,
) -> bool:
    """The exit rule over a set of trees (one prompt, or the batch).

    youngest_age: the age of the youngest child branch (None if none): every branch must be older than the
    largest lookahead age, so that no pending pruning check is skipped. force_return_step ends it regardless.
    """
    if step >= cfg.force_return_step:
        return True
    target = round(k_latr_total * exit_share(cfg, step, max_response_len))
    settled = youngest_age is None or youngest_age > max(cfg.lookahead_steps)
    return sum(effective_sizes) >= target and settled
