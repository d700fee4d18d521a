"""The reference-style per-token loop builds the same trees as our driver (float64, so batching noise cannot
flip an argmax), returns n responses per prompt, and the benchmark's arms report their figures."""

import pytest
import torch

from latr_sglang.bench.reference import BATCHING, main, reference_rollout
from latr_sglang.config import LATRConfig
from latr_sglang.driver import LATRSampler
from latr_sglang.engines.base import SamplingParams


@pytest.mark.parametrize("batching", BATCHING)
@pytest.mark.parametrize(
    ("scope", "metric"),
    [("prompt", {"prune_suffix_match_above": 0.1}), ("batch", {"prune_suffix_match_above": 0.15})],
)
def test_reference_loop_builds_the_drivers_trees(tiny_engine64, scope, metric, batching):
    engine = tiny_engine64
    tok = engine.tokenizer
    cfg = LATRConfig(
        tau_abs=0.05,
        tau_rel=0.9,
        lookahead_steps=(4, 8, 12),
        exempt_chars="",
        exit_scope=scope,
        chunk_size=6,
        **{"prune_edit_distance_below": None, **metric},
    )
    texts = ["Using the numbers", "The capital of", "What is 3 + 4", "0 1 2 3", "Let me solve", "Answer:"]
    prompts = [[*tok(t).input_ids, 7 + 40 * i] for i, t in enumerate(texts)]
    max_len, n = 32, 6
    text = lambda t: tok.decode([t])  # noqa: E731
    sampler = LATRSampler(engine, cfg, SamplingParams(max_new_tokens=max_len), engine.eos_ids, text)
    ours = sampler.sample_sync(prompts, n, eta=1.0, seed=0)
    trees: list = []
    groups = reference_rollout(
        engine.hf_model,
        prompts,
        n,
        1.0,
        cfg,
        max_len,
        engine.eos_ids,
        text,
        tok.pad_token_id,
        trees=trees,
        batching=batching,
    )
    forks = prunes = 0
    for result, group, (exit_step, records) in zip(ours, groups, trees):
        assert len(group) == n and all(1 <= len(r) <= max_len for r in group)
        assert exit_step == result.exit_step
        mine = [(b.branch_id, b.parent, b.birth_step, b.pruned_at, b.tree_tokens) for b in result.branches]
        assert records == mine
        # tree leaves come first and start with their tree tokens
        leaves = [r for r in records if r[3] is None]
        for leaf, response in zip(leaves, group):
            assert response[: len(leaf[4])] == leaf[4]
        forks += len(records) - 1
        prunes += sum(r[3] is not None for r in records)
    assert forks > 5, forks
    assert prunes > 0 or scope == "batch", prunes  # batch scope: the trees leave before a check prunes


def test_reference_batching_keeps_finished_rows_until_all_have_finished(tiny_engine64):
    """`reference` carries a finished row in every later forward (as the authors' loop does), `compact` drops
    it: the same tokens delivered, more rows forwarded, and both stop when the last row finishes."""
    engine = tiny_engine64
    tok = engine.tokenizer
    prompts = [list(tok(t).input_ids) for t in ["The capital of", "0 1 2 3 4 5", "Answer:"]]
    cfg = LATRConfig(lookahead_steps=(2,), tau_abs=0.05, tau_rel=0.9)
    eos = frozenset({*engine.eos_ids, *range(0, engine.vocab_size, 7)})  # rows finish at different steps
    runs = {}
    for batching in BATCHING:
        stats: dict[str, int] = {}
        groups = reference_rollout(
            engine.hf_model,
            prompts,
            4,
            0.5,
            cfg,
            24,
            eos,
            tok.decode,
            tok.pad_token_id,
            1,
            batching=batching,
            stats=stats,
        )
        runs[batching] = (groups, stats)
    (ref_groups, ref_stats), (compact_groups, compact_stats) = runs["reference"], runs["compact"]
    assert ref_groups == compact_groups
    lengths = [len(r) for g in ref_groups for r in g]
    assert min(lengths) < max(lengths) < 24  # rows finished early and the loop stopped with the last one
    assert ref_stats["forwards"] == compact_stats["forwards"]
    assert ref_stats["row_forwards"] > compact_stats["row_forwards"]


def test_bad_batching_is_named():
    with pytest.raises(ValueError, match="batching='paged'"):
        reference_rollout(None, [[1]], 2, 1.0, LATRConfig(), 4, frozenset(), str, 0, batching="paged")


def test_reference_loop_mixes_tree_and_stochastic_samples(tiny_engine64):
    engine = tiny_engine64
    tok = engine.tokenizer
    prompts = [list(tok(t).input_ids) for t in ["The capital of", "0 1 2 3 4 5"]]
    cfg = LATRConfig(lookahead_steps=(2,), tau_abs=0.05, tau_rel=0.9)
    groups = reference_rollout(
        engine.hf_model, prompts, 5, 0.4, cfg, 10, engine.eos_ids, tok.decode, tok.pad_token_id, seed=3
    )
    assert [len(g) for g in groups] == [5, 5]
    assert all(1 <= len(r) <= 10 for g in groups for r in g)
    assert all(0 <= t < engine.vocab_size for g in groups for r in g for t in r)


@pytest.mark.slow
def test_benchmark_runs_both_arms_in_subprocesses(tmp_path):
    import json

    out = tmp_path / "ref.json"
    args = ["--model", "tiny", "--num-prompts", "2", "--n", "2", "--max-new-tokens", "8", "--repeats", "2"]
    summary = main([*args, "--json", str(out)])
    data = json.loads(out.read_text())
    assert data["throughput_ratio"] == pytest.approx(summary["throughput_ratio"])
    for arm in ("reference", "ours"):
        assert data["arms"][arm]["delivered_tokens"] > 0
        assert data["peak_rss_mb"][arm] >= data["arms"][arm]["rss_after_load_mb"] > 0
    by_round = [data["arms"], *data["rounds"]]
    ratios = [a["ours"]["tokens_per_s"] / a["reference"]["tokens_per_s"] for a in by_round]
    assert data["throughput_ratio_by_round"] == pytest.approx(ratios) and len(ratios) == 2
    assert data["throughput_ratio"] == pytest.approx(sum(ratios) / 2)  # the median of two
    assert torch.isfinite(torch.tensor(data["memory_ratio"]))
    assert data["arms"]["reference"]["decode_ceiling"]["rows"] == 4  # n x prompts
    assert data["decode_ceiling_tokens_per_s"] > 0
    ceiling = data["decode_ceiling_tokens_per_s"]
    assert data["ceiling_over_reference"] == pytest.approx(
        ceiling / data["arms"]["reference"]["tokens_per_s"]
    )
