"""LATR's decisions as pure functions (docs/ALGORITHM.md). No engines, no asyncio, no state.

A rollout of n trajectories per prompt splits into k_latr tree trajectories and k_sto plain samples
(`group_split`). In the tree phase every live branch extends itself with the argmax token; where the raw next-
token distribution is uncertain (`fork_tokens`), a child branch starts with the runner-up token, while the
tree has room. At lookahead ages r (20, 30, 50 tokens after its birth) a child whose r tokens stay too similar
to its parent's r tokens over the same positions is pruned with its descendants (`should_prune`). The tree
phase ends by `leave_tree_phase`; unfinished branches are then completed by ordinary sampling.
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
    k_latr = min(n, max(0, round(n * eta)))  # Python's round (half to even), as the reference: 10 * .25 -> 2
    return k_latr, n - k_latr


# ---- branching -----------------------------------------------------------------------------------
def fork_candidates(
    top: Sequence[tuple[int, float]], cfg: LATRConfig, chosen: int | None = None
) -> list[tuple[int, int]]:
    """(rank, token) of the tokens that may start a child branch at this position, best rank first.

    top: the raw (pre-temperature) top-m distribution as [(token_id, logprob)], most likely first.
    chosen: the token the branch itself appends (the argmax when tree_sampling is greedy).
    Candidate j >= 1 forks iff p_j > tau_abs and p_0 - p_j < tau_rel (paper) / > tau_rel (released runs).
    With a sampled tree phase, the valid top-m tokens other than the one drawn fork. The rank (the position
    in the top-m) orders admission under admission_order=rank.
    """
    m = cfg.max_branch_per_token
    if len(top) < 2 or m < 2:
        return []
    p0 = math.exp(top[0][1])
    valid = [(0, top[0][0])]
    for rank, (token, logprob) in enumerate(top[1:m], start=1):
        p = math.exp(logprob)
        gap = p0 - p
        close = gap < cfg.tau_rel if cfg.rel_rule == "paper" else gap > cfg.tau_rel
        if p > cfg.tau_abs and close:
            valid.append((rank, token))
    if chosen is None:
        chosen = top[0][0]
    return [(rank, t) for rank, t in valid if t != chosen]


def fork_tokens(top: Sequence[tuple[int, float]], cfg: LATRConfig, chosen: int | None = None) -> list[int]:
    """The tokens of `fork_candidates`."""
    return [t for _, t in fork_candidates(top, cfg, chosen)]


def admit_forks(candidates: Sequence[tuple[int, int, int]], room: int, cfg: LATRConfig) -> list[int]:
    """Which fork candidates of one tree and step get a slot, as indices into `candidates`, in list order.

    candidates: (branch order, rank, token) in branch creation order, then rank. At most `room` are admitted:
    admission_order=rank takes every branch's rank-1 candidate before any rank-2 one (the reference's order);
    branch takes them as listed. Children are then created in list order (the reference's row order).
    """
    if room <= 0:
        return []
    order = range(len(candidates))
    if cfg.admission_order == "rank":
        order = sorted(order, key=lambda i: (candidates[i][1], candidates[i][0]))
    return sorted(order[:room])


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
    """Forks on whitespace, digits and operators are never pruned (their parent token decides).

    exempt_rule=chars: the stripped text is empty or made only of exempt_chars; reference: it is a substring
    of exempt_chars (the released code's `text.strip() in symbols`: "12" is exempt, "20" is not).
    """
    stripped = parent_token_text.strip()
    if cfg.exempt_rule == "reference":
        return stripped in cfg.exempt_chars
    return not stripped or all(c in cfg.exempt_chars for c in stripped)


def should_prune(
    child_window: Sequence[int],
    parent_window: Sequence[int],
    parent_token_text: str,
    eos_ids: frozenset[int] | set[int],
    cfg: LATRConfig,
    age: int | None = None,
    stopped: bool = False,
) -> bool:
    """The lookahead check of a child at age r: both windows start at the fork position and have r tokens.

    eos_ids: every id that ends a response (EOS and the request's stop ids). The check is skipped when a
    window holds one, when `stopped` (a branch ended on a stop the engine reported), or when a window is
    shorter than `age` (its branch could not be extended): the reference pads finished rows with EOS, which
    skips them.
    """
    if any(t in eos_ids for t in child_window) or any(t in eos_ids for t in parent_window) or stopped:
        return False
    if age is not None and (len(child_window) < age or len(parent_window) < age):
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
    age: int | None = None
    stopped: bool = False  # the child or the parent ended on a stop within the window


def branches_to_prune(
    checks: Sequence[PruneCheck], eos_ids: frozenset[int] | set[int], cfg: LATRConfig
) -> set[int]:
    return {
        c.branch_id
        for c in checks
        if should_prune(
            c.child_window, c.parent_window, c.parent_token_text, eos_ids, cfg, age=c.age, stopped=c.stopped
        )
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


def settled(branches: Sequence[tuple[int | None, bool]], s: int, cfg: LATRConfig) -> bool:
    """Whether the branches are old enough to leave the tree phase after token s (0-based).

    branches: (birth step, None for a root; finished) of every live branch of the trees.
    exit_age_rule=reference: every branch, roots (born at step 0) and finished ones included, has
    birth + max(lookahead_steps) < s, the released code's test; pending: every unfinished child has had its
    last lookahead check (it runs at token birth + max - 1), the least that skips no pending check.
    """
    last = max(cfg.lookahead_steps)
    if cfg.exit_age_rule == "reference":
        return all((birth or 0) + last < s for birth, _ in branches)
    return all(birth + last <= s + 1 for birth, finished in branches if birth is not None and not finished)


def leave_tree_phase(
    effective_sizes: Sequence[int],
    k_latr_total: int,
    branches: Sequence[tuple[int | None, bool]],
    s: int,
    max_response_len: int,
    cfg: LATRConfig,
) -> bool:
    """The exit rule over a set of trees (one prompt, or the batch), checked after token s (0-based).

    The trees are full enough when sum(effective_sizes) >= round(k_latr_total * thr(s)), the threshold
    decaying with s as in the reference; they must also be `settled`. force_return_step ends the phase after
    that many tokens regardless.
    """
    if s + 1 >= cfg.force_return_step:
        return True
    target = round(k_latr_total * exit_share(cfg, s, max_response_len))
    return sum(effective_sizes) >= target and settled(branches, s, cfg)
