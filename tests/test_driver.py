"""The LATR driver: equals the step-synchronous oracle, and its outputs keep LATR's invariants."""

import asyncio
import math
import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from latr_oracle import oracle_tree_phase

from latr_sglang.config import LATRConfig
from latr_sglang.driver import LATRSampler
from latr_sglang.engines.base import FinishReason, SamplingParams


def fixture_settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def make_prompts(engine, count, seed):
    rng = random.Random(seed)
    texts = ["Using the numbers", "The capital of", "What is 3 + 4", "0 1 2 3", "Let me solve", "Answer:"]
    return [
        [*list(engine.tokenizer(rng.choice(texts)).input_ids), rng.randrange(3, 300)] for _ in range(count)
    ]


def sampler_for(engine, cfg, max_len, temperature=1.0):
    return LATRSampler(
        engine,
        cfg,
        SamplingParams(max_new_tokens=max_len, temperature=temperature),
        engine.eos_ids,
        lambda t: engine.tokenizer.decode([t]),
    )


latr_configs = st.builds(
    lambda tau_abs, tau_rel, rel_rule, m, ages, metric, thr, chunk, scope, exit_thr, force: LATRConfig(
        tau_abs=tau_abs,
        tau_rel=tau_rel,
        rel_rule=rel_rule,
        max_branch_per_token=m,
        lookahead_steps=tuple(sorted(ages)),
        prune_edit_distance_below=0.5 + thr / 2 if metric == "ed" else None,
        prune_suffix_match_above=thr / 3 if metric == "sm" else None,
        prune_rouge_l_above=thr / 3 if metric == "rl" else None,
        chunk_size=chunk,
        exit_scope=scope,
        exit_threshold=exit_thr,
        force_return_step=force,
        exempt_chars="",
    ),
    tau_abs=st.floats(0.02, 0.3),
    tau_rel=st.floats(0.2, 1.0),
    rel_rule=st.sampled_from(["paper", "released"]),
    m=st.integers(2, 3),
    ages=st.sets(st.integers(1, 12), min_size=1, max_size=3),
    metric=st.sampled_from(["ed", "sm", "rl"]),
    thr=st.floats(0.2, 0.9),
    chunk=st.integers(1, 16),
    scope=st.sampled_from(["prompt", "batch"]),
    exit_thr=st.floats(0.5, 1.0),
    force=st.integers(4, 60),
)


@fixture_settings(30)
@given(cfg=latr_configs, n=st.integers(1, 8), max_len=st.integers(6, 40), seed=st.integers(0, 1000))
def test_fast_driver_equals_the_step_synchronous_oracle(tiny_engine64, cfg, n, max_len, seed):
    engine = tiny_engine64
    prompts = make_prompts(engine, 3, seed)
    assert_equals_oracle(engine, prompts, cfg, n, max_len, seed)


def assert_equals_oracle(engine, prompts, cfg, n, max_len, seed=0):
    """Compares every branch (tokens, parent, birth, prune step) and the exit step.

    Returns (forks, prunes) seen in the oracle trees.
    """
    results = sampler_for(engine, cfg, max_len).sample_sync(prompts, n, eta=1.0, seed=seed)
    oracle = oracle_tree_phase(
        engine, prompts, n, max_len, cfg, engine.eos_ids, lambda t: engine.tokenizer.decode([t])
    )
    forks = prunes = 0
    for result, (branches, exit_step) in zip(results, oracle):
        assert result.exit_step == exit_step
        fast = [(b.branch_id, b.parent, b.birth_step, b.pruned_at, b.tree_tokens) for b in result.branches]
        slow = [
            (
                b.branch_id,
                b.parent,
                b.birth_step,
                b.pruned_at,
                b.tokens[: exit_step if b.pruned_at is None else b.pruned_at + 1],
            )
            for b in branches
        ]
        assert fast == slow
        forks += len(branches) - 1
        prunes += sum(b.pruned_at is not None for b in branches)
    return forks, prunes


@pytest.mark.parametrize("scope", ["prompt", "batch"])
@pytest.mark.parametrize(
    "metric", [{"prune_suffix_match_above": 0.1}, {"prune_edit_distance_below": 0.9, "chunk_size": 5}]
)
def test_driver_equals_the_oracle_where_branches_are_pruned(tiny_engine64, scope, metric):
    cfg = LATRConfig(
        tau_abs=0.05,
        tau_rel=0.9,
        lookahead_steps=(4, 8, 12),
        exempt_chars="",
        exit_scope=scope,
        **{"prune_edit_distance_below": None, "chunk_size": 8, **metric},
    )
    prompts = make_prompts(tiny_engine64, 12, 0)
    forks, prunes = assert_equals_oracle(tiny_engine64, prompts, cfg, 6, 40)
    assert forks > 20 and prunes > 0, (forks, prunes)


@fixture_settings(12)
@given(
    cfg=latr_configs, n=st.integers(1, 8), eta=st.sampled_from([0.0, 0.25, 0.5, 1.0]), seed=st.integers(0, 99)
)
def test_output_invariants(tiny_engine64, cfg, n, eta, seed):
    engine = tiny_engine64
    max_len = 24
    prompts = make_prompts(engine, 2, seed)
    results = sampler_for(engine, cfg, max_len).sample_sync(prompts, n, eta=eta, seed=seed)
    k_latr = min(n, math.floor(n * eta + 0.5))
    for r in results:
        trajs = r.trajectories
        assert len(trajs) == n
        origins = [t.origin for t in trajs]
        live = [b for b in r.branches if b.pruned_at is None]
        n_tree = len(live) if k_latr else 0
        assert origins == ["tree"] * n_tree + ["fill"] * (k_latr - n_tree) + ["stochastic"] * (n - k_latr)
        by_id = {b.branch_id: b for b in r.branches}
        for b in r.branches:
            if b.parent is not None:  # a child's tokens equal its parent's up to the fork
                assert b.tree_tokens[: b.birth_step] == by_id[b.parent].tree_tokens[: b.birth_step]
        for t in trajs:
            assert 1 <= len(t.token_ids) <= max_len
            assert len(t.logprobs) == len(t.token_ids)
            assert all(math.isfinite(lp) and lp <= 1e-9 for lp in t.logprobs)
            ends_with_stop = t.token_ids[-1] in engine.eos_ids
            assert t.truncated == (not ends_with_stop)
            assert t.finish_reason == (FinishReason.STOP if ends_with_stop else FinishReason.LENGTH)
            assert all(tok not in engine.eos_ids for tok in t.token_ids[:-1])
            if t.origin == "tree" and t.parent is not None:
                parent_tokens = by_id[t.parent].tree_tokens
                assert t.token_ids[: t.birth_step] == parent_tokens[: t.birth_step]
                assert t.shared_prefix_len == t.birth_step


def test_logprobs_are_the_policy_logprobs_at_temperature_one(tiny_engine64):
    """Tree tokens (greedy and forced fork tokens) and sampled tokens alike carry log p(token) at T = 1."""
    engine = tiny_engine64
    cfg = LATRConfig(tau_abs=0.05, tau_rel=0.9, lookahead_steps=(4, 8), chunk_size=5, exempt_chars="")
    prompts = make_prompts(engine, 2, 7)
    results = sampler_for(engine, cfg, 20).sample_sync(prompts, 6, eta=0.5, seed=3)
    checked = set()
    for prompt, r in zip(prompts, results):
        for t in r.trajectories:
            ids = torch.tensor([prompt + t.token_ids])
            with torch.no_grad():
                logits = engine.hf_model(ids).logits[0, len(prompt) - 1 : -1]
            ref = torch.log_softmax(logits, -1)[torch.arange(len(t.token_ids)), torch.tensor(t.token_ids)]
            torch.testing.assert_close(torch.tensor(t.logprobs, dtype=ref.dtype), ref, atol=1e-6, rtol=0)
            checked.add(t.origin)
    assert {"tree", "stochastic"} <= checked


def test_eta_zero_is_plain_stochastic_sampling(tiny_engine64):
    engine = tiny_engine64
    prompts = make_prompts(engine, 3, 1)
    sampler = sampler_for(engine, LATRConfig.preset("countdown"), 16)
    a = sampler.sample_sync(prompts, 4, eta=0.0, seed=11)
    b = sampler.sample_sync(prompts, 4, eta=0.0, seed=11)
    for ra, rb in zip(a, b):
        assert [t.origin for t in ra.trajectories] == ["stochastic"] * 4
        assert ra.branches == [] and ra.exit_step is None and ra.engine_requests == 4
        assert [t.token_ids for t in ra.trajectories] == [t.token_ids for t in rb.trajectories]
    assert len({tuple(t.token_ids) for r in a for t in r.trajectories}) > 1
    # the schedule drives eta when none is given: countdown's eta is 0 from step 200
    c = sampler.sample_sync(prompts, 4, step=250, seed=11)
    assert [t.token_ids for t in c[0].trajectories] == [t.token_ids for t in a[0].trajectories]


def test_prompts_spread_over_engines_and_branches_stay_on_theirs(tiny_engine64):
    engine = tiny_engine64

    class Recording:
        def __init__(self):
            self.prompts = set()

        async def generate(self, requests):
            for r in requests:
                self.prompts.add(tuple(r.input_ids[:6]))
            return await engine.generate(requests)

    engines = [Recording(), Recording()]
    prompts = [list(engine.tokenizer(t).input_ids) for t in ["0 1 2 3 4 5 6", "The capital of France is"]]
    cfg = LATRConfig(tau_abs=0.05, tau_rel=0.9, lookahead_steps=(4,), chunk_size=4)
    sampler = LATRSampler(engines, cfg, SamplingParams(max_new_tokens=12), engine.eos_ids, str)
    results = sampler.sample_sync(prompts, 4, eta=1.0)
    assert [len(r.trajectories) for r in results] == [4, 4]
    assert engines[0].prompts == {tuple(prompts[0][:6])} and engines[1].prompts == {tuple(prompts[1][:6])}


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"n": 0}, "n=0"), ({"n": 2, "eta": 1.5}, "eta"), ({"n": 2, "prompts": [[]]}, "prompt 0")],
)
def test_bad_arguments_are_named(tiny_engine64, kwargs, needle):
    sampler = sampler_for(tiny_engine64, LATRConfig(), 8)
    prompts = kwargs.pop("prompts", [[5, 6]])
    with pytest.raises(ValueError, match=needle):
        asyncio.run(sampler.sample(prompts, **kwargs))


def test_an_engine_failure_raises_instead_of_hanging(tiny_engine64):
    engine = tiny_engine64

    class Failing:
        calls = 0

        async def generate(self, requests):
            Failing.calls += 1
            if Failing.calls == 3:
                raise ConnectionError("server went away")
            return await engine.generate(requests)

    cfg = LATRConfig(tau_abs=0.05, tau_rel=0.9, lookahead_steps=(4,), chunk_size=2)
    sampler = LATRSampler(Failing(), cfg, SamplingParams(max_new_tokens=16), engine.eos_ids, str)

    async def main():
        return await asyncio.wait_for(sampler.sample([make_prompts(engine, 1, 0)[0]], 4, eta=0.5), timeout=60)

    with pytest.raises(Exception, match="server went away"):
        asyncio.run(main())
