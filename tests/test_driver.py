"""The LATR driver: equals the step-synchronous oracle, and its outputs keep LATR's invariants."""

import asyncio
import collections
import dataclasses
import math
import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from latr_oracle import oracle_tree_phase

import latr_sglang.driver as driver_module
from latr_sglang.config import EXEMPT_CHARS, LATRConfig
from latr_sglang.driver import LATRSampler
from latr_sglang.engines.base import FinishReason, GenerateOutput, GenerateRequest, SamplingParams


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
    lambda tau_abs, tau_rel, rel_rule, m, ages, metric, thr, chunk, scope, exit_thr, force, options: (
        LATRConfig(
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
            **options,
        )
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
    options=st.fixed_dictionaries(
        {
            "exit_age_rule": st.sampled_from(["reference", "pending"]),
            "admission_order": st.sampled_from(["rank", "branch"]),
            "fill_after_finished_root": st.sampled_from(["sample", "copy"]),
            "tree_sampling": st.sampled_from(["greedy", "sample"]),
            "chunks_end_on_lookahead": st.booleans(),
            "tree_part_interval": st.sampled_from([0, 1, 3, 8]),
        }
    ),
)


class EndsEarly:
    """A stand-in for a model with a short context: a request ends ("length") once input + output hold
    `context` tokens, fewer than it asked for, as an engine at its context limit does."""

    def __init__(self, engine, context):
        self.engine, self.context = engine, context

    def __getattr__(self, name):  # eos_ids, tokenizer: the wrapped engine's
        return getattr(self.engine, name)

    def _within_context(self, r):
        """The request with max_new_tokens cut to the room left, or None where there is none."""
        room = self.context - len(r.input_ids)
        if room <= 0:
            return None
        sp = dataclasses.replace(r.sampling, max_new_tokens=min(r.sampling.max_new_tokens, room))
        return dataclasses.replace(r, sampling=sp)

    @staticmethod
    def _at_the_limit(r):
        return GenerateOutput([], [], [], FinishReason.LENGTH, len(r.input_ids), 0)

    async def generate(self, requests):
        fitted = [self._within_context(r) for r in requests]
        passed = [r for r in fitted if r is not None]
        answers = iter(await self.engine.generate(passed) if passed else [])
        return [self._at_the_limit(r) if f is None else next(answers) for r, f in zip(requests, fitted)]

    async def generate_in_parts(self, request, part_ends):
        fitted = self._within_context(request)
        if fitted is None:
            yield self._at_the_limit(request)
            return
        async for part in self.engine.generate_in_parts(fitted, part_ends):
            yield part


class StopsOn:
    """An engine that also stops on `extra` ids, as a server does on EOS ids of the model's generation config
    that the driver was not told about."""

    def __init__(self, engine, extra):
        self.engine, self.extra = engine, tuple(extra)

    def __getattr__(self, name):  # eos_ids (without `extra`), tokenizer: the wrapped engine's
        return getattr(self.engine, name)

    def _with_extra(self, r):
        ids = tuple(r.sampling.stop_token_ids) + self.extra
        return dataclasses.replace(r, sampling=dataclasses.replace(r.sampling, stop_token_ids=ids))

    async def generate(self, requests):
        return await self.engine.generate([self._with_extra(r) for r in requests])

    def generate_in_parts(self, request, part_ends):
        return self.engine.generate_in_parts(self._with_extra(request), part_ends)


@pytest.fixture(scope="module")
def frequent_tokens(tiny_engine64):
    """Tokens the tiny model's greedy continuations use often: stop ids that actually stop branches."""
    engine = tiny_engine64
    prompts = make_prompts(engine, 6, 0)
    outs = engine.generate_sync(
        [GenerateRequest(tuple(p), SamplingParams(max_new_tokens=30, temperature=0.0)) for p in prompts]
    )
    counts = collections.Counter(t for o in outs for t in o.output_ids if t not in engine.eos_ids)
    return [t for t, _ in counts.most_common(3)]


def random_case(rng, frequent):
    """A random configuration of everything the tree depends on, with the options of issue 12."""
    paper = rng.random() < 0.6
    metric = rng.choice(["ed", "sm", "rl"])
    cfg = LATRConfig(
        tau_abs=rng.uniform(0.02, 0.3),
        tau_rel=rng.uniform(0.2, 1.0) if paper else rng.uniform(0.0, 0.3),
        rel_rule="paper" if paper else "released",
        max_branch_per_token=rng.choice([2, 3]),
        lookahead_steps=tuple(sorted(rng.sample(range(2, 11), rng.randint(1, 3)))),
        prune_edit_distance_below=rng.uniform(0.8, 1.0) if metric == "ed" else None,
        prune_suffix_match_above=rng.uniform(0.0, 0.2) if metric == "sm" else None,
        prune_rouge_l_above=rng.uniform(0.0, 0.3) if metric == "rl" else None,
        chunk_size=rng.randint(1, 16),
        exit_scope=rng.choice(["prompt", "batch"]),
        exit_threshold=rng.uniform(0.5, 1.0),
        exit_age_rule=rng.choice(["reference", "pending"]),
        force_return_step=rng.randint(8, 60),
        exempt_chars=rng.choice(["", "", EXEMPT_CHARS]),
        exempt_rule=rng.choice(["chars", "reference"]),
        admission_order=rng.choice(["rank", "branch"]),
        tree_sampling=rng.choice(["greedy", "greedy", "sample"]),
        fork_between_stops=rng.random() < 0.7,
        chunks_end_on_lookahead=rng.random() < 0.5,
    )
    stop = rng.choice([(), (), (frequent[0],), tuple(frequent[1:3])])
    sampling = SamplingParams(max_new_tokens=rng.randint(10, 40), stop_token_ids=stop)
    n, early = rng.randint(2, 8), rng.random() < 0.3
    # whole requests, or parts at every position, or sparse ones: when tokens arrive must not change the tree
    cfg = dataclasses.replace(cfg, tree_part_interval=rng.choice([0, 1, 3, 8]))
    return cfg, n, sampling, early


def assert_equals_oracle(engine, prompts, cfg, n, sampling, seed=0, oracle=None):
    """Compares every branch (tokens, parent, birth, prune step) and the exit step with the oracle's
    (computed here unless given).

    Returns (forks, prunes) seen in the trees.
    """
    text = lambda t: engine.tokenizer.decode([t])  # noqa: E731
    sampler = LATRSampler(engine, cfg, sampling, engine.eos_ids, text)
    results = sampler.sample_sync(prompts, n, eta=1.0, seed=seed)
    if oracle is None:
        oracle = oracle_tree_phase(engine, prompts, n, sampling, cfg, engine.eos_ids, text, seed=seed)
    forks = prunes = 0
    for result, (branches, exit_step) in zip(results, oracle):
        fast = [(b.branch_id, b.parent, b.birth_step, b.pruned_at, b.tree_tokens) for b in result.branches]
        slow = [(b.branch_id, b.parent, b.birth_step, b.pruned_at, b.tokens) for b in branches]
        assert fast == slow
        assert result.exit_step == exit_step
        forks += len(branches) - 1
        prunes += sum(b.pruned_at is not None for b in branches)
    return forks, prunes


def test_fast_driver_equals_the_independent_oracle_on_random_configurations(tiny_engine64, frequent_tokens):
    rng = random.Random(12)
    cases = 30
    forked = pruned = 0
    seen = collections.Counter()
    for case in range(cases):
        cfg, n, sampling, early = random_case(rng, frequent_tokens)
        prompts = make_prompts(tiny_engine64, 3, case)
        engine = (
            EndsEarly(tiny_engine64, min(map(len, prompts)) + rng.randint(3, 30)) if early else tiny_engine64
        )
        try:
            forks, prunes = assert_equals_oracle(engine, prompts, cfg, n, sampling, seed=case)
        except AssertionError as e:
            raise AssertionError(f"case {case}: {cfg}, n={n}, {sampling}, ends early: {early}") from e
        forked += forks > 0
        pruned += prunes > 0
        options = [cfg.tree_sampling, cfg.exit_scope, cfg.rel_rule, cfg.admission_order, cfg.exit_age_rule]
        options += [
            f"between_stops={cfg.fork_between_stops}",
            f"lookahead_ends={cfg.chunks_end_on_lookahead}",
            f"parts={bool(cfg.tree_part_interval)}",
        ]
        options += [
            f"m={cfg.max_branch_per_token}",
            f"stops={bool(sampling.stop_token_ids)}",
            f"early={early}",
        ]
        seen.update(options)
    for option in (
        "sample",
        "batch",
        "prompt",
        "released",
        "branch",
        "pending",
        "m=3",
        "stops=True",
        "early=True",
        "between_stops=False",
        "lookahead_ends=True",
        "lookahead_ends=False",
        "parts=True",
        "parts=False",
    ):
        assert seen[option] >= 2, seen  # every option above was drawn, more than once
    print(f"forks in {forked}, prunes in {pruned} of {cases} cases")
    assert forked >= cases * 2 // 3 and pruned >= cases // 4, (forked, pruned)


MUTATIONS = {
    "tau_rel comparison swapped": (
        "fork_candidates",
        lambda real: (
            lambda top, cfg, chosen=None: real(
                top,
                dataclasses.replace(cfg, rel_rule="released" if cfg.rel_rule == "paper" else "paper"),
                chosen,
            )
        ),
    ),
    "exit one step early": (
        "leave_tree_phase",
        lambda real: lambda effs, k, branches, s, max_len, cfg: real(effs, k, branches, s + 1, max_len, cfg),
    ),
    "admission branch-major": (
        "admit_forks",
        lambda real: (
            lambda candidates, room, cfg: real(
                candidates, room, dataclasses.replace(cfg, admission_order="branch")
            )
        ),
    ),
}


@pytest.fixture(scope="module")
def mutation_case(tiny_engine64):
    """A configuration whose trees fork, prune and compete for capacity (m = 3), with the oracle's trees."""
    cfg = LATRConfig(
        tau_abs=0.05,
        tau_rel=0.9,
        max_branch_per_token=3,
        lookahead_steps=(3, 6),
        prune_edit_distance_below=0.7,
        exempt_chars="",
        chunk_size=5,
    )
    engine, prompts, sampling = (
        tiny_engine64,
        make_prompts(tiny_engine64, 6, 3),
        SamplingParams(max_new_tokens=24),
    )
    text = lambda t: engine.tokenizer.decode([t])  # noqa: E731
    oracle = oracle_tree_phase(engine, prompts, 6, sampling, cfg, engine.eos_ids, text)
    forks, prunes = assert_equals_oracle(engine, prompts, cfg, 6, sampling, oracle=oracle)
    assert forks > 0 and prunes > 0, (forks, prunes)
    return prompts, cfg, sampling, oracle


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_the_oracle_comparison_catches_a_wrong_rule(tiny_engine64, mutation_case, monkeypatch, mutation):
    """The comparison can fail: with one product rule changed, the driver no longer equals the oracle."""
    prompts, cfg, sampling, oracle = mutation_case
    name, wrap = MUTATIONS[mutation]
    monkeypatch.setattr(driver_module, name, wrap(getattr(driver_module, name)))
    with pytest.raises(AssertionError):
        assert_equals_oracle(tiny_engine64, prompts, cfg, 6, sampling, oracle=oracle)


@pytest.mark.filterwarnings("ignore:LATR config:UserWarning")  # random configs may end before checks
@fixture_settings(12)
@given(
    cfg=latr_configs, n=st.integers(1, 8), eta=st.sampled_from([0.0, 0.25, 0.5, 1.0]), seed=st.integers(0, 99)
)
def test_output_invariants(tiny_engine64, cfg, n, eta, seed):
    engine = tiny_engine64
    max_len = 24
    prompts = make_prompts(engine, 2, seed)
    results = sampler_for(engine, cfg, max_len).sample_sync(prompts, n, eta=eta, seed=seed)
    k_latr = min(n, round(n * eta))
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


@pytest.mark.parametrize(
    ("temperature", "tree_sampling"), [(1.0, "greedy"), (0.7, "greedy"), (0.7, "sample")]
)
def test_logprobs_are_the_policy_logprobs_at_temperature_one(tiny_engine64, temperature, tree_sampling):
    """Tree tokens (greedy and forced fork tokens) and sampled tokens alike carry log p(token) at T = 1, also
    when the training temperature is not 1 (the engine reports those under logits / T)."""
    engine = tiny_engine64
    cfg = LATRConfig(
        tau_abs=0.05,
        tau_rel=0.9,
        lookahead_steps=(4, 8),
        chunk_size=5,
        exempt_chars="",
        tree_sampling=tree_sampling,
    )
    prompts = make_prompts(engine, 2, 7)
    results = sampler_for(engine, cfg, 20, temperature).sample_sync(prompts, 6, eta=0.5, seed=3)
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
            self.keys = set()

        async def generate(self, requests):
            for r in requests:
                self.prompts.add(tuple(r.input_ids[:6]))
                self.keys.add(r.routing_key)
            return await engine.generate(requests)

    engines = [Recording(), Recording()]
    prompts = [list(engine.tokenizer(t).input_ids) for t in ["0 1 2 3 4 5 6", "The capital of France is"]]
    cfg = LATRConfig(tau_abs=0.05, tau_rel=0.9, lookahead_steps=(4,), chunk_size=4)
    sampler = LATRSampler(engines, cfg, SamplingParams(max_new_tokens=12), engine.eos_ids, str)
    results = sampler.sample_sync(prompts, 4, eta=1.0)
    assert [len(r.trajectories) for r in results] == [4, 4]
    assert engines[0].prompts == {tuple(prompts[0][:6])} and engines[1].prompts == {tuple(prompts[1][:6])}
    # every request of a group carries the group's one routing key (tree chunks, children, fills, samples)
    assert [len(e.keys) for e in engines] == [1, 1] and engines[0].keys != engines[1].keys
    assert None not in engines[0].keys | engines[1].keys


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"n": 0}, "n=0"),
        ({"n": 2.0}, "n=2.0"),
        ({"n": 2, "eta": 1.5}, "eta"),
        ({"n": 2, "eta": True}, "eta=True"),
        ({"n": 2, "seed": "1"}, "seed='1': must be an integer"),
        ({"n": 2, "seed": 1.5}, "seed=1.5: must be an integer"),
        ({"n": 2, "prompts": [[]]}, "prompt 0"),
    ],
)
def test_bad_arguments_are_named(tiny_engine64, kwargs, needle):
    sampler = sampler_for(tiny_engine64, LATRConfig(), 8)
    prompts = kwargs.pop("prompts", [[5, 6]])
    with pytest.raises(ValueError, match=needle):
        asyncio.run(sampler.sample(prompts, **kwargs))


def test_bad_sampling_and_a_config_changed_after_it_was_built_are_named_before_any_request(tiny_engine64):
    class Refuses:  # any request at all fails the test: the errors must come first
        async def generate(self, requests):
            raise AssertionError("a request was sent")

    with pytest.raises(ValueError, match="top_p"):
        LATRSampler(Refuses(), LATRConfig(), SamplingParams(max_new_tokens=8, top_p=0.0), {0}, str)
    cfg = LATRConfig()
    sampler = LATRSampler(Refuses(), cfg, SamplingParams(max_new_tokens=8), {0}, str)
    cfg.tau_abs = 5.0
    with pytest.raises(ValueError, match="tau_abs"):
        asyncio.run(sampler.sample([[5, 6]], 2, eta=1.0))
    # more fork candidates per position than an engine returns top log-probs: at construction, and after
    many = LATRConfig(max_branch_per_token=101)
    with pytest.raises(ValueError, match="max_branch_per_token=101: more candidates than an engine returns"):
        LATRSampler(Refuses(), many, SamplingParams(max_new_tokens=8), {0}, str)
    cfg.tau_abs, cfg.max_branch_per_token = 0.25, 101
    with pytest.raises(ValueError, match="max_branch_per_token=101"):
        asyncio.run(sampler.sample([[5, 6]], 2, eta=1.0))


def test_any_integer_seed_is_a_seed(tiny_engine64):
    sampler = sampler_for(tiny_engine64, LATRConfig(), 6)
    runs = [sampler.sample_sync([[5, 6]], 3, eta=0.0, seed=seed) for seed in (2**70, 2**70, -7)]
    ids = [[t.token_ids for t in run[0].trajectories] for run in runs]
    assert ids[0] == ids[1] and len(ids[2]) == 3  # seeded: the same seed, the same samples


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


@pytest.mark.parametrize(("rule", "tokens"), [("reference", 52), ("pending", 1)])
def test_a_tree_of_one_decodes_max_age_plus_two_greedy_tokens(tiny_engine64, rule, tokens):
    """k_latr = round(8 * 0.125) = 1 leaves no room to fork; with ages 20/30/50 the reference's exit rule
    still waits until 0 + 50 < s, so the tree trajectory starts with 52 greedy tokens; `pending` leaves at
    once."""
    engine = tiny_engine64
    prompt = make_prompts(engine, 1, 4)[0]
    ask = GenerateRequest(tuple(prompt), SamplingParams(max_new_tokens=60, temperature=0.0))
    greedy = engine.generate_sync([ask])[0].output_ids
    assert len(greedy) == 60  # no EOS in the way
    cfg = LATRConfig(lookahead_steps=(20, 30, 50), exit_age_rule=rule)
    result = sampler_for(engine, cfg, 80).sample_sync([prompt], 8, eta=0.125, seed=0)[0]
    assert result.k_latr == 1 and result.exit_step == tokens
    assert [b.tree_tokens for b in result.branches] == [greedy[:tokens]]
    tree = result.trajectories[0]
    assert tree.origin == "tree" and tree.token_ids[:tokens] == greedy[:tokens]
    assert [t.origin for t in result.trajectories[1:]] == ["stochastic"] * 7


@pytest.mark.parametrize("fill", ["sample", "copy"])
def test_fills_after_the_root_finished(tiny_engine64, fill):
    """A tree that cannot fork (tau_abs = 1) and whose root stops at its third token: its 3 fills are fresh
    samples from the prompt (sample, default) or copies of the finished root (copy, the reference's)."""
    engine = tiny_engine64
    prompt = make_prompts(engine, 1, 5)[0]
    greedy = engine.generate_sync([GenerateRequest(tuple(prompt), SamplingParams(16, temperature=0.0))])[0]
    stop_at = next(i for i in range(2, 16) if greedy.output_ids[i] not in greedy.output_ids[:i])
    stop = greedy.output_ids[stop_at]
    cfg = LATRConfig(tau_abs=1.0, lookahead_steps=(2,), fill_after_finished_root=fill)
    sampling = SamplingParams(max_new_tokens=16, stop_token_ids=(stop,))
    text = lambda t: engine.tokenizer.decode([t])  # noqa: E731
    result = LATRSampler(engine, cfg, sampling, engine.eos_ids, text).sample_sync(
        [prompt], 4, eta=1.0, seed=1
    )[0]
    root, fills = result.trajectories[0], result.trajectories[1:]
    assert root.token_ids == greedy.output_ids[: stop_at + 1] and root.finish_reason == FinishReason.STOP
    assert result.exit_step == stop_at + 1 and [t.origin for t in fills] == ["fill"] * 3
    if fill == "copy":
        for t in fills:
            assert (t.token_ids, t.logprobs, t.finish_reason) == (
                root.token_ids,
                root.logprobs,
                root.finish_reason,
            )
            assert t.shared_prefix_len == len(root.token_ids)
    else:
        assert all(t.shared_prefix_len == 0 for t in fills)
        assert any(t.token_ids != root.token_ids for t in fills)


def test_a_stop_on_an_eos_id_the_driver_was_not_told_is_a_stop(tiny_engine64, frequent_tokens):
    """An engine that also stops on an id missing from the driver's eos_ids (an SGLang server stopping on
    generation_config's <|im_end|>): the branch is finished by a stop, labelled "stop" and not truncated, and
    the tree still equals the oracle's."""
    extra = frequent_tokens[0]
    engine = StopsOn(tiny_engine64, (extra,))
    cfg = LATRConfig(tau_abs=0.05, tau_rel=0.9, lookahead_steps=(4, 8), exempt_chars="", chunk_size=5)
    prompts = make_prompts(tiny_engine64, 4, 2)
    sampling = SamplingParams(max_new_tokens=30)
    assert extra not in tiny_engine64.eos_ids
    assert_equals_oracle(engine, prompts, cfg, 6, sampling)
    text = lambda t: tiny_engine64.tokenizer.decode([t])  # noqa: E731
    results = LATRSampler(engine, cfg, sampling, tiny_engine64.eos_ids, text).sample_sync(prompts, 6, eta=1.0)
    in_tree = [
        t
        for r in results
        for t in r.trajectories
        if t.origin == "tree" and t.token_ids[-1] == extra and len(t.token_ids) <= r.exit_step
    ]
    assert in_tree, "no branch stopped on the extra id during the tree phase"
    assert all(t.finish_reason == FinishReason.STOP and not t.truncated for t in in_tree)


@pytest.mark.parametrize("between_stops", [True, False])
def test_a_fork_between_two_stops_is_skipped_on_request(tiny_engine64, between_stops):
    """With both of the first position's top-2 tokens made stop ids, the root stops on one, and the other
    forks (the paper's rule) or not (fork_between_stops=False)."""
    engine = tiny_engine64
    prompt = make_prompts(engine, 1, 6)[0]
    ask = GenerateRequest(
        tuple(prompt), SamplingParams(max_new_tokens=1, temperature=0.0), top_logprobs_num=2
    )
    (first, _), (second, _) = engine.generate_sync([ask])[0].top_logprobs[0]
    cfg = LATRConfig(tau_abs=0.0, tau_rel=1.0, lookahead_steps=(2,), fork_between_stops=between_stops)
    sampling = SamplingParams(max_new_tokens=8, stop_token_ids=(first, second))
    sampler = LATRSampler(engine, cfg, sampling, engine.eos_ids, lambda t: engine.tokenizer.decode([t]))
    result = sampler.sample_sync([prompt], 4, eta=1.0)[0]
    expected = [[first], [second]] if between_stops else [[first]]
    assert [b.tree_tokens for b in result.branches] == expected
    assert result.exit_step == 1


class CountsParts:
    """The wrapped engine, counting the requests sent in parts and the parts it hands over."""

    def __init__(self, engine):
        self.engine, self.requests, self.parts = engine, 0, 0

    def __getattr__(self, name):
        return getattr(self.engine, name)

    async def generate_in_parts(self, request, part_ends):
        self.requests += 1
        async for part in self.engine.generate_in_parts(request, part_ends):
            self.parts += part.finish_reason is None
            yield part


def test_parts_of_requests_reach_the_replay_and_leave_the_rollout_as_it_was(tiny_engine64):
    cfg = LATRConfig.preset("countdown", lookahead_steps=(3, 6), chunk_size=12)
    sampling = SamplingParams(max_new_tokens=30)
    prompts = make_prompts(tiny_engine64, 4, 5)
    text = lambda t: tiny_engine64.tokenizer.decode([t])  # noqa: E731
    runs = {}
    for interval in (0, 4):
        engine = CountsParts(tiny_engine64)
        with_interval = dataclasses.replace(cfg, tree_part_interval=interval)
        sampler = LATRSampler(engine, with_interval, sampling, tiny_engine64.eos_ids, text)
        groups = sampler.sample_sync(prompts, 6, eta=1.0, seed=3)
        runs[interval] = (engine.requests, engine.parts, groups)
    assert runs[0][:2] == (0, 0)  # 0: whole requests only
    requests, parts, groups = runs[4]
    assert requests > 0 and parts > requests  # several parts per tree-phase request
    assert sum(len(g.branches) for g in groups) > len(groups)  # the trees forked
    for with_parts, whole in zip(groups, runs[0][2]):
        assert with_parts.branches == whole.branches and with_parts.exit_step == whole.exit_step
        assert [t.token_ids for t in with_parts.trajectories] == [t.token_ids for t in whole.trajectories]


class LosesTheFinal(CountsParts):
    """Hands over the parts of a request, then ends without its final output (a broken engine)."""

    async def generate_in_parts(self, request, part_ends):
        async for part in self.engine.generate_in_parts(request, part_ends):
            if part.finish_reason is not None:
                return
            yield part


class ForwardsAttributes:
    """A wrapper that overrides only `generate` and forwards the rest: it must not be bypassed by parts."""

    def __init__(self, engine):
        self.engine, self.requests = engine, 0

    def __getattr__(self, name):
        return getattr(self.engine, name)

    async def generate(self, requests):
        self.requests += len(requests)
        return await self.engine.generate(requests)


def test_parts_that_end_without_the_final_output_raise_instead_of_hanging(tiny_engine64):
    cfg = LATRConfig.preset("countdown", chunk_size=12)
    sampler = sampler_for(LosesTheFinal(tiny_engine64), cfg, 30)
    prompts = make_prompts(tiny_engine64, 2, 5)

    async def main():
        return await asyncio.wait_for(sampler.sample(prompts, 4, eta=1.0, seed=0), timeout=60)

    with pytest.raises(RuntimeError, match="parts ended without the request's final output"):
        asyncio.run(main())


def test_a_wrapper_that_forwards_attributes_gets_every_request(tiny_engine64):
    wrapper = ForwardsAttributes(tiny_engine64)
    cfg = LATRConfig.preset("countdown", chunk_size=12)
    groups = sampler_for(wrapper, cfg, 30).sample_sync(make_prompts(tiny_engine64, 2, 5), 4, eta=1.0, seed=0)
    assert wrapper.requests == sum(g.engine_requests for g in groups) > 0
