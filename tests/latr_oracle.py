"""An independent, deliberately plain LATR tree phase from docs/ALGORITHM.md: the oracle of the fast driver.

Nothing here comes from latr_sglang.algorithm or latr_sglang.driver. The fork rule, the admission order under
the capacity, the pruning metrics (edit distance through rapidfuzz, suffix match and ROUGE-L written out), the
exemption, pruning with descendants, the exit rule and the bookkeeping of finished branches are all written
again, step by step, for clarity and not speed: at step s (a 0-based response position) every live, unfinished
branch asks the engine for its token at s, one request per branch.

What it shares with the product beyond the engine is only how the sampled tree phase (tree_sampling=sample)
draws: a branch's random stream restarts at each of the driver's engine requests, so "the same seeds" means
the same request boundaries (`_chunk_start`) and the same seed per request (`_seed`). The oracle gets its
token at s by replaying that request from its start, the engine's sampler being the only source of randomness.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

from latr_sglang.config import LATRConfig
from latr_sglang.engines.base import FinishReason, GenerateRequest, SamplingParams, hands_over_parts


@dataclass
class OracleBranch:
    branch_id: int
    parent: int | None
    birth_step: int | None  # None for the root
    tokens: list[int]
    finish: str | None = None  # "stop" or "length" once finished
    pruned_at: int | None = None


def oracle_tree_phase(
    engine,
    prompts: list[list[int]],
    k_latr: int,
    sampling: SamplingParams,
    cfg: LATRConfig,
    eos_ids,
    token_text,
    seed: int = 0,
) -> list[tuple[list[OracleBranch], int]]:
    """Per prompt: (every branch, pruned ones included; the exit step = tokens decoded in the tree phase)."""
    stop_ids = set(eos_ids) | set(sampling.stop_token_ids)
    if cfg.tree_part_interval and hands_over_parts(engine):
        # the driver's requests then do not end on the lookahead ages: the replay gets their tokens in parts
        cfg = dataclasses.replace(cfg, chunks_end_on_lookahead=False)
    if cfg.exit_scope == "prompt":
        groups = [[i] for i in range(len(prompts))]
    else:
        groups = [list(range(len(prompts)))]
    out: dict[int, tuple[list[OracleBranch], int]] = {}
    for group in groups:
        trees = {i: [OracleBranch(0, None, None, [])] for i in group}
        s = 0
        while True:
            # the token at s of every live, unfinished branch born before s: the step's requests at once
            asks = []
            for i in group:
                for b in trees[i]:
                    if b.pruned_at is None and b.finish is None and not _born_at_or_after(b, s):
                        asks.append((i, b))
            requests = [_request_for(prompts[i], i, b, s, sampling, cfg, seed) for i, b in asks]
            answers = asyncio.run(engine.generate([r for r, _ in requests])) if requests else []
            got = {}
            for (i, b), (_, wanted), answer in zip(asks, requests, answers):
                got[b.branch_id, i] = _read_answer(b, s, wanted, answer)
            for i in group:
                _tree_step(trees[i], i, s, got, k_latr, sampling.max_new_tokens, cfg, stop_ids, token_text)
            s += 1
            if _leave(trees, group, k_latr, s - 1, sampling.max_new_tokens, cfg):
                break
        for i in group:
            out[i] = (trees[i], s)
    return [out[i] for i in range(len(prompts))]


def _born_at_or_after(b: OracleBranch, s: int) -> bool:
    return b.birth_step is not None and b.birth_step >= s  # a child born at s already holds its token at s


def _tree_step(branches, prompt_index, s, got, k_latr, max_len, cfg, stop_ids, token_text) -> None:
    live = [b for b in branches if b.pruned_at is None]
    # each branch appends its token; its fork candidates are collected in creation order, then rank
    candidates = []  # (branch order, rank, token, parent)
    for order, b in enumerate(live):
        if b.finish is not None or _born_at_or_after(b, s):
            continue
        answer = got[b.branch_id, prompt_index]
        if answer is None:  # the engine produced nothing more: the branch ends here, without a token
            b.finish = "length"
            continue
        token, top, engine_stopped = answer
        b.tokens.append(token)
        if token in stop_ids or engine_stopped:
            b.finish = "stop"
        elif s + 1 >= max_len:
            b.finish = "length"
        for rank, alt in _valid_candidates(top, cfg):
            if alt == token:
                continue
            if b.finish == "stop" and alt in stop_ids and not cfg.fork_between_stops:
                continue  # a stop instead of a stop: skipped on request
            candidates.append((order, rank, alt, b))
    # capacity: at most k_latr live branches per tree
    room = max(k_latr - len(live), 0)
    if cfg.admission_order == "rank":
        preferred = sorted(candidates, key=lambda c: (c[1], c[0]))
    else:
        preferred = list(candidates)
    admitted = {id(c) for c in preferred[:room]}
    for c in candidates:  # children are numbered parent by parent, rank by rank
        if id(c) not in admitted:
            continue
        _, _, alt, parent = c
        child = OracleBranch(len(branches), parent.branch_id, s, [*parent.tokens[:s], alt])
        if alt in stop_ids:
            child.finish = "stop"
        elif s + 1 >= max_len:
            child.finish = "length"
        branches.append(child)
    # lookahead pruning at the ages, with all descendants
    by_id = {b.branch_id: b for b in branches}
    doomed = set()
    for c in branches:
        if c.pruned_at is not None or c.parent is None:
            continue
        age = s - c.birth_step + 1
        if age not in cfg.lookahead_steps:
            continue
        parent = by_id[c.parent]
        mine = c.tokens[c.birth_step : s + 1]
        theirs = parent.tokens[c.birth_step : s + 1]
        if len(mine) < age or len(theirs) < age:
            continue  # a branch ended early: the reference's EOS padding makes the window hold EOS
        if any(t in stop_ids for t in mine + theirs) or "stop" in (c.finish, parent.finish):
            continue
        if _exempt(token_text(parent.tokens[c.birth_step]), cfg):
            continue
        if _too_similar(mine, theirs, age, cfg):
            doomed.add(c.branch_id)
    grew = True
    while grew:
        grew = False
        for b in branches:
            if b.pruned_at is None and b.parent in doomed and b.branch_id not in doomed:
                doomed.add(b.branch_id)
                grew = True
    for b in branches:
        if b.branch_id in doomed:
            b.pruned_at = s


def _valid_candidates(top, cfg: LATRConfig) -> list[tuple[int, int]]:
    """(rank, token) of the top-m tokens that may be taken: the argmax, and those passing both thresholds."""
    m = cfg.max_branch_per_token
    if m < 2 or len(top) < 2:
        return []  # m = 1: no branching at all
    p0 = math.exp(top[0][1])
    valid = [(0, top[0][0])]
    for rank in range(1, min(m, len(top))):
        token, logprob = top[rank]
        p = math.exp(logprob)
        if cfg.rel_rule == "paper":
            relative_ok = p0 - p < cfg.tau_rel
        else:  # the released runs' inverted comparison
            relative_ok = p0 - p > cfg.tau_rel
        if p > cfg.tau_abs and relative_ok:
            valid.append((rank, token))
    return valid


def _exempt(text: str, cfg: LATRConfig) -> bool:
    stripped = text.strip()
    if cfg.exempt_rule == "reference":
        return stripped in cfg.exempt_chars  # Python's substring test, as the released code
    if stripped == "":
        return True
    return all(ch in cfg.exempt_chars for ch in stripped)


def _too_similar(a: list[int], b: list[int], r: int, cfg: LATRConfig) -> bool:
    edit = cfg.prune_edit_distance_below
    if edit is not None and Levenshtein.distance(a, b) / r < edit:
        return True
    suffix = cfg.prune_suffix_match_above
    if suffix is not None and max(_longest_suffix_inside(a, b), _longest_suffix_inside(b, a)) / r > suffix:
        return True
    rouge = cfg.prune_rouge_l_above
    return rouge is not None and _rouge_l(a, b) > rouge


def _longest_suffix_inside(a: list[int], b: list[int]) -> int:
    """The largest L such that a's last L tokens occur contiguously somewhere in b."""
    best = 0
    for length in range(1, min(len(a), len(b)) + 1):
        suffix = a[len(a) - length :]
        for start in range(len(b) - length + 1):
            if b[start : start + length] == suffix:
                best = length
                break
    return best


def _rouge_l(a: list[int], b: list[int]) -> float:
    if not a or not b:
        return 0.0
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a)):
        for j in range(len(b)):
            if a[i] == b[j]:
                table[i + 1][j + 1] = table[i][j] + 1
            else:
                table[i + 1][j + 1] = max(table[i][j + 1], table[i + 1][j])
    lcs = table[len(a)][len(b)]
    if lcs == 0:
        return 0.0
    precision = lcs / len(a)
    recall = lcs / len(b)
    return 2 * precision * recall / (precision + recall)


def _leave(trees, group, k_latr, s, max_len, cfg: LATRConfig) -> bool:
    """The exit rule after token s."""
    live = {i: [b for b in trees[i] if b.pruned_at is None] for i in group}
    if all(b.finish is not None for i in group for b in live[i]):
        return True  # nothing left to decode
    if s + 1 >= cfg.force_return_step:
        return True
    effective = 0
    for i in group:
        if all(b.finish is not None for b in live[i]):
            effective += k_latr  # a tree whose branches all finished counts as full
        else:
            effective += len(live[i])
    threshold = cfg.exit_threshold - cfg.exit_decay * s / max_len
    full = effective >= round(k_latr * len(group) * threshold)
    last_age = max(cfg.lookahead_steps)
    if cfg.exit_age_rule == "reference":
        old_enough = all((b.birth_step or 0) + last_age < s for i in group for b in live[i])
    else:
        old_enough = all(
            b.birth_step + last_age <= s + 1
            for i in group
            for b in live[i]
            if b.parent is not None and b.finish is None
        )
    return full and old_enough


# ---- requests ----------------------------------------------------------------------------------------------
def _request_for(
    prompt, prompt_index, b: OracleBranch, s, sampling, cfg, seed
) -> tuple[GenerateRequest, int]:
    """The request whose last output token is the branch's token at s, and how many tokens it asks for."""
    if cfg.tree_sampling == "greedy":
        start = s
        sp = dataclasses.replace(
            sampling, max_new_tokens=1, temperature=0.0, sampling_seed=None, min_new_tokens=0, stop=()
        )
    else:
        start = _chunk_start(b, s, sampling.max_new_tokens, cfg)
        sp = dataclasses.replace(
            sampling,
            max_new_tokens=s - start + 1,
            sampling_seed=_seed(seed, prompt_index, b.branch_id * 100_003 + start),
            min_new_tokens=0,
            stop=(),
        )
    ids = tuple(prompt + b.tokens[:start])
    return GenerateRequest(ids, sp, top_logprobs_num=cfg.max_branch_per_token), s - start + 1


def _read_answer(b: OracleBranch, s, wanted, answer):
    """(token, top-m, engine stopped on it) at s, or None when the engine produced no token at s."""
    if answer.finish_reason == FinishReason.ABORT:
        raise RuntimeError(f"the engine aborted an oracle request: {answer.error}")
    ids = answer.output_ids
    assert ids[: wanted - 1] == b.tokens[s - wanted + 1 : s][: len(ids)], "a replay drew differently"
    if len(ids) < wanted:
        return None
    return ids[-1], answer.top_logprobs[-1], answer.finish_reason == FinishReason.STOP


def _chunk_start(b: OracleBranch, s, max_len, cfg: LATRConfig) -> int:
    """Where the driver's request holding position s starts: requests of chunk_size tokens from the branch's
    first own position, cut at the lookahead ages (birth + age; cfg.chunks_end_on_lookahead, unless the
    engine hands over parts) and at min(max_len, force_return_step)."""
    limit = min(max_len, cfg.force_return_step)
    start = 0 if b.birth_step is None else b.birth_step + 1
    while True:
        size = min(cfg.chunk_size, limit - start)
        if b.birth_step is not None and cfg.chunks_end_on_lookahead:
            for age in cfg.lookahead_steps:
                if b.birth_step + age > start:
                    size = min(size, b.birth_step + age - start)
                    break
        if s < start + size:
            return start
        start += size


def _seed(seed: int, prompt_index: int, slot: int) -> int:
    return (seed * 1_000_003 + prompt_index * 10_007 + slot) % (2**62)
