"""The LATR rollout driver: chunked speculation over any engine, replayed in step order.

Every live branch asks its engine for a greedy chunk of tokens with the raw top-m log-probs at every position
(one request, not one per token). Because the tree phase is greedy, a branch's chunk holds exactly the tokens
a step-by-step run would produce, so the driver replays the steps in order as soon as every live branch of a
tree set (one prompt, or the batch) has data for the step: forks are admitted by capacity (admission_order),
children become continuation requests on the parent's prefix (served by the engine's prefix cache), pruning
checks run at the lookahead ages, and the exit rule is applied. The tree therefore equals the
step-synchronous algorithm's; chunking only changes how many requests it takes. Afterwards unfinished
branches, fills and the plain stochastic samples are completed with the training sampling parameters; with a
training temperature other than 1 the responses are rescored so that every log-prob is the policy's at T = 1.
The algorithm's decisions are the pure functions of `latr_sglang.algorithm`; this module only schedules.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from latr_sglang.algorithm import (
    PruneCheck,
    admit_forks,
    branches_to_prune,
    effective_size,
    fork_candidates,
    group_split,
    leave_tree_phase,
    mix_ratio,
    with_descendants,
)
from latr_sglang.config import LATRConfig
from latr_sglang.engines.base import (
    MAX_TOP_LOGPROBS,
    Engine,
    FinishReason,
    GenerateOutput,
    GenerateRequest,
    RequestError,
    SamplingParams,
    hands_over_parts,
)

Origin = Literal["tree", "fill", "stochastic"]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_fork_candidates(cfg: LATRConfig) -> None:
    """The tree phase asks each position for max_branch_per_token top log-probs: more than an engine returns
    is a ValueError naming the field, before any request."""
    m = cfg.max_branch_per_token
    if m > MAX_TOP_LOGPROBS:
        raise ValueError(
            f"LATRConfig.max_branch_per_token={m}: more candidates than an engine returns per position "
            f"(at most {MAX_TOP_LOGPROBS} top log-probs)"
        )


@dataclass
class Trajectory:
    """One of the n responses of a prompt."""

    token_ids: list[int]
    logprobs: list[float]  # per token, log p(token) under the policy at T = 1 (softmax of the raw logits)
    finish_reason: FinishReason
    origin: Origin
    branch_id: int | None = None  # tree branches: the branch; fills and stochastic samples: None
    parent: int | None = None
    birth_step: int | None = None  # response position of the fork token (children only)
    shared_prefix_len: int = 0  # leading tokens shared with the parent branch (fills: with the root)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == FinishReason.LENGTH


@dataclass
class BranchRecord:
    """A branch as the tree phase left it (pruned branches included): what the oracle tests compare."""

    branch_id: int
    parent: int | None
    birth_step: int | None
    tree_tokens: list[int]
    pruned_at: int | None


@dataclass
class GroupResult:
    prompt_ids: list[int]
    trajectories: list[Trajectory]
    branches: list[BranchRecord]
    k_latr: int
    exit_step: int | None  # tree tokens produced before leaving the tree phase (None without a tree)
    engine_requests: int = 0
    decoded_tokens: int = 0  # all tokens the engine produced for this group, discarded speculation included

    @property
    def delivered_tokens(self) -> int:
        return sum(len(t.token_ids) for t in self.trajectories)


@dataclass
class _Branch:
    id: int
    parent: int | None
    birth: int | None  # None for the root
    tokens: list[int]  # response tokens known so far (committed + speculated)
    logprobs: list[float]
    tops: list[list[tuple[int, float]] | None]  # raw top-m per position (None where unknown)
    finished: FinishReason | None = None  # decided by replay
    engine_done: FinishReason | None = None  # the engine stopped extending this branch (stop/limit)
    pruned_at: int | None = None
    in_flight: asyncio.Task | None = None
    awaiting: bool = False  # a chunk was requested and its answer is not absorbed yet (task done or not)

    @property
    def live(self) -> bool:
        return self.pruned_at is None


@dataclass
class _Tree:
    index: int  # prompt index
    prompt: list[int]
    k_latr: int
    engine: Engine
    branches: list[_Branch] = field(default_factory=list)
    exit_step: int | None = None
    requests: int = 0
    decoded: int = 0
    # one per group, on every request of it (SGLang's routing_key: a router keeps the group's prefix together)
    routing_key: str = field(default_factory=lambda: uuid.uuid4().hex)

    def live(self) -> list[_Branch]:
        return [b for b in self.branches if b.live]


class LATRSampler:
    """Samples n trajectories per prompt with LATR over one or more engines (a prompt stays on one engine)."""

    def __init__(
        self,
        engines: Engine | Sequence[Engine],
        config: LATRConfig,
        sampling: SamplingParams,
        eos_ids: Sequence[int] | frozenset[int],
        token_text: Callable[[int], str],
    ) -> None:
        self.engines = [engines] if not isinstance(engines, Sequence) else list(engines)
        if not self.engines:
            raise ValueError("LATRSampler needs at least one engine")
        self.cfg = config
        self.sampling = sampling  # completion-phase (training) sampling; max_new_tokens = max response length
        if sampling.max_new_tokens < 1:
            raise ValueError(f"sampling.max_new_tokens={sampling.max_new_tokens}: responses need >= 1 token")
        sampling.validate()  # named here, not by the first engine request of a tree phase
        check_fork_candidates(self.cfg)
        self.max_len = sampling.max_new_tokens
        self.eos_ids = frozenset(eos_ids)
        self.stop_ids = self.eos_ids | frozenset(sampling.stop_token_ids)
        self.token_text = token_text

    # ---- public API ------------------------------------------------------------------------------------
    async def sample(
        self, prompts: Sequence[Sequence[int]], n: int, step: int = 1, eta: float | None = None, seed: int = 0
    ) -> list[GroupResult]:
        """n trajectories per prompt; eta defaults to the config's mix-ratio schedule at training `step`."""
        if not _is_int(n) or n < 1:
            raise ValueError(f"n={n!r}: need at least one trajectory per prompt")
        if not _is_int(seed):  # any integer: the requests' seeds are derived from it modulo 2**62
            raise ValueError(f"seed={seed!r}: must be an integer")
        if eta is not None and (isinstance(eta, bool) or not isinstance(eta, int | float)):
            raise ValueError(f"eta={eta!r}: must be a number in [0, 1]")
        self.cfg.validate()  # again: a config's fields can be assigned after it was built
        check_fork_candidates(self.cfg)
        for i, p in enumerate(prompts):
            if len(p) == 0:
                raise ValueError(f"prompt {i} is empty")
        eta = mix_ratio(self.cfg.mix_ratio_schedule, step) if eta is None else eta
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta={eta}: must be in [0, 1]")
        k_latr, k_sto = group_split(n, eta)
        trees = [
            _Tree(i, list(p), k_latr, self.engines[i % len(self.engines)]) for i, p in enumerate(prompts)
        ]
        stochastic = [
            asyncio.create_task(self._complete(t, [], self._seed(seed, t.index, 1_000 + j)))
            for t in trees
            for j in range(k_sto)
        ]
        try:
            sets = [[t] for t in trees] if self.cfg.exit_scope == "prompt" else [trees]

            async def tree_then_completion(trees_of_set: list[_Tree]) -> list[list[Trajectory]]:
                # a set's completions start when its own tree phase ends, not when the slowest set's does:
                # with exit_scope=prompt the engine's batch stays full while other trees are still forking
                if k_latr > 0:
                    await self._tree_phase(trees_of_set, seed)
                return await asyncio.gather(*(self._finish_tree(t, seed) for t in trees_of_set))

            per_set = await asyncio.gather(*(tree_then_completion(s) for s in sets))
            completions = [trajs for set_trajs in per_set for trajs in set_trajs]
            sto_outputs = await asyncio.gather(*stochastic)
            sto_trajs = [self._trajectory(out, [], [], "stochastic") for out in sto_outputs]
            if not self.sampling.greedy and self.sampling.temperature != 1.0:
                await asyncio.gather(
                    *(self._rescore(t, traj) for t, trajs in zip(trees, completions) for traj in trajs),
                    *(self._rescore(trees[i // k_sto], traj) for i, traj in enumerate(sto_trajs)),
                )
        except BaseException:
            for task in stochastic:
                task.cancel()
            raise
        results = []
        for t, tree_trajs in zip(trees, completions):
            sto = sto_trajs[t.index * k_sto : (t.index + 1) * k_sto]
            results.append(
                GroupResult(
                    prompt_ids=t.prompt,
                    trajectories=tree_trajs + sto,
                    branches=[
                        BranchRecord(b.id, b.parent, b.birth, list(b.tokens), b.pruned_at) for b in t.branches
                    ],
                    k_latr=k_latr,
                    exit_step=t.exit_step,
                    engine_requests=t.requests,
                    decoded_tokens=t.decoded,
                )
            )
        return results

    def sample_sync(self, prompts: Sequence[Sequence[int]], n: int, **kwargs) -> list[GroupResult]:
        return asyncio.run(self.sample(prompts, n, **kwargs))

    # ---- tree phase ------------------------------------------------------------------------------------
    async def _tree_phase(self, trees: list[_Tree], seed: int) -> None:
        arrivals: asyncio.Queue = asyncio.Queue()
        for tree in trees:
            tree.branches.append(_Branch(0, None, None, [], [], []))
        t = 0
        try:
            while True:
                for tree in trees:
                    for b in tree.live():
                        self._maybe_request(tree, b, t, arrivals, seed)
                waiting = [
                    b
                    for tree in trees
                    for b in tree.live()
                    if not b.finished and len(b.tokens) <= t and b.engine_done is None
                ]
                if waiting:
                    branch, out, end = await arrivals.get()
                    if isinstance(out, RequestError):  # bad input, not a fault: callers report it as such
                        raise RequestError(f"a tree-phase engine request failed: {out}") from out
                    if isinstance(out, Exception):
                        raise RuntimeError(f"a tree-phase engine request failed: {out}") from out
                    branch.awaiting = out.finish_reason is None  # a part: the request goes on
                    if branch.live:
                        self._absorb(branch, out, end)
                    continue
                for tree in trees:
                    self._apply_step(tree, t)
                t += 1
                if self._should_exit(trees, t):
                    break
        finally:
            for tree in trees:
                for b in tree.branches:
                    if b.in_flight is not None and not b.in_flight.done():
                        b.in_flight.cancel()
        for tree in trees:
            tree.exit_step = t
            for b in tree.branches:  # discard speculation past the exit step (or the prune step)
                end = t if b.pruned_at is None else b.pruned_at + 1
                del b.tokens[end:], b.logprobs[end:], b.tops[end:]

    def _maybe_request(self, tree: _Tree, b: _Branch, t: int, arrivals: asyncio.Queue, seed: int) -> None:
        if b.finished or b.engine_done or b.awaiting:
            return
        limit = min(self.max_len, self.cfg.force_return_step)
        have = len(b.tokens)
        if have >= limit or have - t >= 2 * self.cfg.chunk_size:  # enough speculation ahead of the replay
            return
        size = min(self.cfg.chunk_size, limit - have)
        # an engine that hands a request's output over in parts gives the replay its tokens while it decodes
        parts = self.cfg.tree_part_interval > 0 and hands_over_parts(tree.engine)
        if b.birth is not None and self.cfg.chunks_end_on_lookahead and not parts:
            for age in self.cfg.lookahead_steps:  # prune checks run as early as they can
                boundary = b.birth + age
                if boundary > have:
                    size = min(size, boundary - have)
                    break
        end = have + size
        part_ends: list[int] = []  # output lengths at which the engine hands over a part
        if parts:
            # multiples of the interval: absolute positions, the same for every branch, because the replay
            # moves only when every live branch of the tree has handed its token over (a prune check at a
            # lookahead age therefore runs at the first multiple at or after it; parts at the ages themselves
            # cost more on the tiny model than they saved on SmolLM2, see BENCHMARKS.md)
            step = self.cfg.tree_part_interval
            part_ends = [pos - have for pos in range(have - have % step + step, end, step)]
        greedy = self.cfg.tree_sampling == "greedy"
        sp = dataclasses.replace(
            self.sampling,
            max_new_tokens=size,
            temperature=0.0 if greedy else self.sampling.temperature,
            sampling_seed=None if greedy else self._seed(seed, tree.index, b.id * 100_003 + have),
            min_new_tokens=0,
            stop=(),
        )
        request = GenerateRequest(
            tuple(tree.prompt + b.tokens),
            sp,
            top_logprobs_num=self.cfg.max_branch_per_token,
            routing_key=tree.routing_key,
        )
        tree.requests += 1

        async def run() -> None:
            try:
                if part_ends:
                    # closed on the way out, whatever the way: an engine's stream (a connection) goes at once
                    stream = tree.engine.generate_in_parts(request, part_ends)
                    async with contextlib.aclosing(stream) as parts:
                        async for out in parts:
                            tree.decoded += len(out.output_ids)
                            arrivals.put_nowait((b, out, end))
                            if out.finish_reason is not None:
                                return  # the branch's next request starts from here: nothing may follow
                    raise RuntimeError("the engine's parts ended without the request's final output")
                out = (await tree.engine.generate([request]))[0]
            except asyncio.CancelledError:
                raise
            except Exception as e:  # handed to the replay loop, which raises it: never a silent hang
                arrivals.put_nowait((b, e, end))
                return
            tree.decoded += len(out.output_ids)
            arrivals.put_nowait((b, out, end))

        b.awaiting = True
        b.in_flight = asyncio.create_task(run())

    def _absorb(self, b: _Branch, out: GenerateOutput, end: int) -> None:
        """Adds a request's output (or a part of it) to the branch; `end` is where the request was to end."""
        if out.finish_reason == FinishReason.ABORT:
            raise RuntimeError(f"the engine aborted a tree-phase request: {out.error}")
        b.tokens += out.output_ids
        b.logprobs += out.logprobs
        b.tops += out.top_logprobs or [None] * len(out.output_ids)
        if out.finish_reason == FinishReason.STOP and out.output_ids:
            b.engine_done = FinishReason.STOP  # on its last token, maybe an EOS id the driver was not told
        elif out.finish_reason is not None and len(b.tokens) < end:
            b.engine_done = FinishReason.LENGTH  # the engine's context limit ended it early

    def _apply_step(self, tree: _Tree, t: int) -> None:
        """Step t of the step-synchronous algorithm, on data that is already there."""
        live = tree.live()
        candidates: list[tuple[int, int, int]] = []  # (branch order, rank, token), as admit_forks wants
        parents: list[_Branch] = []
        for order, b in enumerate(live):
            if b.finished or (b.birth is not None and b.birth >= t):
                continue
            if len(b.tokens) <= t:  # the engine cannot extend it: finished here, as a per-token loop sees it
                b.finished = FinishReason.LENGTH
                continue
            self._mark_finished(b, t)
            for rank, alt in fork_candidates(b.tops[t] or [], self.cfg, chosen=b.tokens[t]):
                if (
                    b.finished == FinishReason.STOP
                    and alt in self.stop_ids
                    and not self.cfg.fork_between_stops
                ):
                    continue  # both end the response here: the child would repeat its parent's text
                candidates.append((order, rank, alt))
                parents.append(b)
        next_id = len(tree.branches)
        for i in admit_forks(candidates, tree.k_latr - len(live), self.cfg):
            b, alt = parents[i], candidates[i][2]
            child = _Branch(
                next_id,
                b.id,
                t,
                [*b.tokens[:t], alt],
                [*b.logprobs[:t], dict(b.tops[t])[alt]],
                [*b.tops[:t], None],
            )
            self._mark_finished(child, t)
            tree.branches.append(child)
            next_id += 1
        # lookahead pruning of children whose age reaches a checkpoint at this step
        by_id = {b.id: b for b in tree.branches}
        checks = []
        for c in tree.live():
            age = None if c.birth is None else t - c.birth + 1
            if age not in self.cfg.lookahead_steps:
                continue
            parent = by_id[c.parent]
            checks.append(
                PruneCheck(
                    c.id,
                    tuple(c.tokens[c.birth : t + 1]),
                    tuple(parent.tokens[c.birth : t + 1]),
                    self.token_text(parent.tokens[c.birth]),
                    age=age,
                    stopped=FinishReason.STOP in (c.finished, parent.finished),
                )
            )
        if checks:
            parent_of = {b.id: b.parent for b in tree.live()}
            for branch_id in with_descendants(branches_to_prune(checks, self.stop_ids, self.cfg), parent_of):
                by_id[branch_id].pruned_at = t
                if by_id[branch_id].in_flight is not None:
                    by_id[branch_id].in_flight.cancel()

    def _mark_finished(self, b: _Branch, t: int) -> None:
        if b.tokens[t] in self.stop_ids or (b.engine_done == FinishReason.STOP and len(b.tokens) == t + 1):
            b.finished = FinishReason.STOP
        elif t + 1 >= self.max_len:
            b.finished = FinishReason.LENGTH

    def _should_exit(self, trees: list[_Tree], steps_done: int) -> bool:
        if all(b.finished for tree in trees for b in tree.live()):
            return True  # nothing left to decode (the reference pads finished rows with EOS: no change)
        effs, branches = [], []
        for tree in trees:
            live = tree.live()
            effs.append(effective_size(tree.k_latr, len(live), all(b.finished for b in live)))
            branches += [(b.birth, b.finished is not None) for b in live]
        k_total = sum(t.k_latr for t in trees)
        return leave_tree_phase(effs, k_total, branches, steps_done - 1, self.max_len, self.cfg)

    # ---- completion phase ------------------------------------------------------------------------------
    async def _finish_tree(self, tree: _Tree, seed: int) -> list[Trajectory]:
        if tree.k_latr == 0:
            return []
        live = tree.live()
        root = tree.branches[0]
        jobs = []
        for b in live:
            if b.finished:
                jobs.append(None)
            else:
                jobs.append(self._complete(tree, b.tokens, self._seed(seed, tree.index, b.id)))
        n_fill = tree.k_latr - len(live)
        copy_root = root.finished is not None and self.cfg.fill_after_finished_root == "copy"
        fill_prefix = [] if root.finished else list(root.tokens)
        fill_prefix_logprobs = [] if root.finished else list(root.logprobs)
        fills = [
            self._complete(tree, fill_prefix, self._seed(seed, tree.index, 500 + j))
            for j in range(0 if copy_root else n_fill)
        ]
        outs = await asyncio.gather(*(j for j in jobs if j is not None), *fills)
        outs_iter = iter(outs)
        trajectories = []
        for b in live:
            shared = b.birth or 0
            if b.finished:
                trajectories.append(
                    Trajectory(
                        list(b.tokens), list(b.logprobs), b.finished, "tree", b.id, b.parent, b.birth, shared
                    )
                )
            else:
                traj = self._trajectory(next(outs_iter), b.tokens, b.logprobs, "tree")
                traj.branch_id, traj.parent, traj.birth_step, traj.shared_prefix_len = (
                    b.id,
                    b.parent,
                    b.birth,
                    shared,
                )
                trajectories.append(traj)
        for _ in range(n_fill):
            if copy_root:  # the reference's fills: the finished root, repeated
                traj = Trajectory(list(root.tokens), list(root.logprobs), root.finished, "fill")
                traj.shared_prefix_len = len(root.tokens)
            else:
                traj = self._trajectory(next(outs_iter), fill_prefix, fill_prefix_logprobs, "fill")
                traj.shared_prefix_len = len(fill_prefix)
            trajectories.append(traj)
        return trajectories

    async def _rescore(self, tree: _Tree, traj: Trajectory) -> None:
        """Replaces traj.logprobs by log p(token) at T = 1: one prefill of prompt + response.

        Engines report a sampled token's log-prob under the sampling distribution (logits / T); at T = 1 that
        is already the policy's, so this runs only when the training temperature is not 1.
        """
        request = GenerateRequest(
            tuple(tree.prompt + traj.token_ids),
            dataclasses.replace(self.sampling, max_new_tokens=0, min_new_tokens=0, stop=()),
            logprob_start_len=len(tree.prompt),
            routing_key=tree.routing_key,
        )
        tree.requests += 1
        out = (await tree.engine.generate([request]))[0]
        if out.finish_reason == FinishReason.ABORT:
            raise RuntimeError(f"the engine aborted a log-prob request: {out.error}")
        logprobs = [lp for _, lp in out.input_logprobs]
        if len(logprobs) != len(traj.token_ids) or any(lp is None for lp in logprobs):
            raise RuntimeError(
                f"the engine returned {len(logprobs)} input log-probs for a "
                f"{len(traj.token_ids)}-token response"
            )
        traj.logprobs = logprobs

    async def _complete(self, tree: _Tree, prefix: list[int], seed: int) -> GenerateOutput:
        remaining = self.max_len - len(prefix)
        sp = dataclasses.replace(self.sampling, max_new_tokens=remaining, sampling_seed=seed)
        tree.requests += 1
        request = GenerateRequest(tuple(tree.prompt + prefix), sp, routing_key=tree.routing_key)
        out = (await tree.engine.generate([request]))[0]
        if out.finish_reason == FinishReason.ABORT:
            raise RuntimeError(f"the engine aborted a completion request: {out.error}")
        tree.decoded += len(out.output_ids)
        return out

    @staticmethod
    def _trajectory(out: GenerateOutput, prefix: list[int], prefix_logprobs: list[float], origin: Origin):
        return Trajectory(
            list(prefix) + out.output_ids, list(prefix_logprobs) + out.logprobs, out.finish_reason, origin
        )

    @staticmethod
    def _seed(seed: int, prompt_index: int, slot: int) -> int:
        return (seed * 1_000_003 + prompt_index * 10_007 + slot) % (2**62)
