"""The deliberately simple step-synchronous LATR tree phase: one engine request per branch per token.

The oracle the fast driver must match (LATR_SPEC.md, greedy tree phase). It shares only the pure decision
functions with the product (tested on their own against hand-worked cases); the loop, the capacity order, the
windows, the descendant pruning and the exit bookkeeping are written here again, plainly.
"""

from __future__ import annotations

from dataclasses import dataclass

from latr_sglang.algorithm import effective_size, fork_tokens, should_prune, tree_phase_done
from latr_sglang.config import LATRConfig
from latr_sglang.engines.base import GenerateRequest, SamplingParams


@dataclass
class OracleBranch:
    branch_id: int
    parent: int | None
    birth_step: int | None
    tokens: list[int]
    finished: bool = False
    pruned_at: int | None = None


def oracle_tree_phase(engine, prompts, k_latr, max_len, cfg: LATRConfig, stop_ids, token_text):
    """Per prompt: (branches, exit_step). exit_scope 'prompt' runs each prompt alone, 'batch' all together."""
    groups = [[i] for i in range(len(prompts))] if cfg.exit_scope == "prompt" else [list(range(len(prompts)))]
    trees: dict[int, list[OracleBranch]] = {}
    exits: dict[int, int] = {}
    for group in groups:
        for i in group:
            trees[i] = [OracleBranch(0, None, None, [])]
        t = 0
        while True:
            # one token for every live, unfinished branch (children born at t-1 already hold their fork token)
            todo = [(i, b) for i in group for b in trees[i] if b.pruned_at is None and not b.finished]
            requests = [
                GenerateRequest(
                    tuple(prompts[i] + b.tokens),
                    SamplingParams(max_new_tokens=1, temperature=0.0),
                    top_logprobs_num=cfg.max_branch_per_token,
                )
                for i, b in todo
            ]
            outs = engine.generate_sync(requests) if requests else []
            for i in group:
                branches = trees[i]
                live = [b for b in branches if b.pruned_at is None]
                room = k_latr - len(live)
                new = []
                for b in live:
                    if b.finished:
                        continue
                    out = outs[[id(x) for _, x in todo].index(id(b))]
                    token = out.output_ids[0]
                    top = out.top_logprobs[0]
                    for alt in fork_tokens(top, cfg, chosen=token):
                        if room == 0:
                            break
                        child = OracleBranch(len(branches) + len(new), b.branch_id, t, [*b.tokens[:t], alt])
                        child.finished = alt in stop_ids or t + 1 >= max_len
                        new.append(child)
                        room -= 1
                    b.tokens.append(token)
                    b.finished = token in stop_ids or t + 1 >= max_len
                branches.extend(new)
                # prune children at their lookahead ages, with every descendant
                by_id = {b.branch_id: b for b in branches}
                doomed = set()
                for c in branches:
                    if c.pruned_at is not None or c.birth_step is None:
                        continue
                    if t - c.birth_step + 1 not in cfg.lookahead_steps:
                        continue
                    p = by_id[c.parent]
                    window = slice(c.birth_step, t + 1)
                    if should_prune(
                        c.tokens[window], p.tokens[window], token_text(p.tokens[c.birth_step]), stop_ids, cfg
                    ):
                        doomed.add(c.branch_id)
                grew = True
                while grew:
                    grew = False
                    for b in branches:
                        if b.parent in doomed and b.branch_id not in doomed and b.pruned_at is None:
                            doomed.add(b.branch_id)
                            grew = True
                for b in branches:
                    if b.branch_id in doomed:
                        b.pruned_at = t
            t += 1
            effs, youngest = [], None
            all_done = True
            for i in group:
                live = [b for b in trees[i] if b.pruned_at is None]
                effs.append(effective_size(k_latr, len(live), all(b.finished for b in live)))
                all_done &= all(b.finished for b in live)
                for c in live:
                    if c.birth_step is not None and not c.finished:
                        youngest = t - c.birth_step if youngest is None else min(youngest, t - c.birth_step)
            if all_done or tree_phase_done(effs, k_latr * len(group), youngest, t, max_len, cfg):
                break
        for i in group:
            exits[i] = t
    return [(trees[i], exits[i]) for i in range(len(prompts))]
