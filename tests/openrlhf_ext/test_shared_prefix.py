"""The prefix-tree computation equals the unshared one (log-probs and gradients, float64, a tiny model) and
OpenRLHF's Actor.forward on its padded layout; the tree spells every row."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latr_sglang.models import load_model_and_tokenizer
from openrlhf_ext.shared_prefix import (
    PrefixTree,
    actor_action_logprobs,
    shared_prefix_logprobs,
    unshared_logprobs,
)


@pytest.fixture(scope="module")
def model64(tiny_model_dir):
    model, tok, _ = load_model_and_tokenizer(tiny_model_dir, dtype="float64")
    model.train()  # the tiny model has no dropout; train mode as in the update
    return model, tok


def _groups(tok):
    prompts = [
        tok("Using the numbers [19, 36, 55, 7], create").input_ids,
        tok("The capital of France").input_ids,
    ]
    g = torch.Generator().manual_seed(0)
    vocab = len(tok)
    responses = [
        [torch.randint(0, vocab, (k,), generator=g).tolist() for k in (5, 1, 9, 3)],
        [torch.randint(0, vocab, (k,), generator=g).tolist() for k in (7, 7, 2)],
    ]
    return prompts, responses


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_and_gradients_equal_the_unshared_computation(model64, temperature):
    model, tok = model64
    prompts, responses = _groups(tok)
    g = torch.Generator().manual_seed(1)
    weights = [[torch.randn(len(r), generator=g, dtype=torch.float64) for r in rs] for rs in responses]

    def loss_and_grads(fn):
        model.zero_grad()
        logps = fn(model, prompts, responses, temperature)
        loss = sum((lp * w).sum() for lps, ws in zip(logps, weights) for lp, w in zip(lps, ws))
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return [[lp.detach() for lp in lps] for lps in logps], grads

    shared, g_shared = loss_and_grads(shared_prefix_logprobs)
    plain, g_plain = loss_and_grads(unshared_logprobs)
    for a_group, b_group in zip(shared, plain):
        for a, b in zip(a_group, b_group):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert g_shared.keys() == g_plain.keys() and len(g_shared) > 10
    for name in g_plain:
        torch.testing.assert_close(g_shared[name], g_plain[name], atol=1e-5, rtol=1e-5, msg=name)
    assert any(float(g.abs().max()) > 1e-3 for g in g_plain.values())  # the comparison is not of zeros


def _latr_like_rows():
    """Two groups whose prompts share a few-shot prefix; responses as LATR trees make them: children that
    fork from a parent at different depths, a fork of a fork, identical answers, one response a prefix of
    another, and a fill sharing the root's first tokens."""
    shots = [5, 9, 11, 3, 8, 21, 4, 17, 6, 30, 12, 14]
    prompts = [[*shots, 40, 41, 42], [*shots, 43, 44]]
    root = [50, 51, 52, 53, 54, 55, 56, 57, 58, 59]
    child = [*root[:4], 60, 61, 62, 63, 64]
    grandchild = [*child[:7], 70, 71]
    group_a = [root, child, grandchild, [50, 51, 80], [90, 91, 92], [90, 91, 92], root[:6]]
    group_b = [[50, 51, 52, 53, 99], [50, 51, 52, 53, 98, 97], [33]]
    return prompts, [group_a, group_b]


@pytest.mark.parametrize("min_shared", [1, 3, 8])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_tree_with_shared_response_prefixes_equals_the_unshared_computation(model64, min_shared, temperature):
    model, _ = model64
    prompts, groups = _latr_like_rows()
    rows = [(p, r) for p, rs in zip(prompts, groups) for r in rs]
    tree = PrefixTree([p for p, _ in rows], [r for _, r in rows], min_shared=min_shared)
    assert len(tree.levels) >= (4 if min_shared == 1 else 2)  # the responses' tree is really used
    assert tree.forwarded_tokens < tree.row_tokens
    g = torch.Generator().manual_seed(2)
    weights = torch.randn((len(rows), max(len(r) for _, r in rows)), generator=g, dtype=torch.float64)

    model.zero_grad()
    ours = tree.logprobs(model, temperature)
    (ours * weights).sum().backward()
    g_tree = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    plain = unshared_logprobs(model, prompts, groups, temperature)
    flat = [lp for lps in plain for lp in lps]
    sum((lp * weights[i, : len(lp)]).sum() for i, lp in enumerate(flat)).backward()
    for i, (lp, (_, r)) in enumerate(zip(flat, rows)):
        torch.testing.assert_close(ours[i, : len(r)], lp.detach(), atol=1e-5, rtol=1e-5)
        assert not ours[i, len(r) :].any()  # 0 past the response's end
    for name, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(g_tree[name], p.grad, atol=1e-5, rtol=1e-5, msg=name)


def test_sharing_responses_forwards_fewer_tokens_than_sharing_prompts():
    prompts, groups = _latr_like_rows()
    rows = [(p, r) for p, rs in zip(prompts, groups) for r in rs]
    args = ([p for p, _ in rows], [r for _, r in rows])
    by_prompt = PrefixTree(*args, min_shared=1, share_responses=False)
    by_tree = PrefixTree(*args, min_shared=1)
    responses = sum(len(r) for _, r in rows)
    # the prompts alone: the shots once, each group's own tokens once, every response in full
    assert by_prompt.forwarded_tokens == 12 + 3 + 2 + responses
    assert by_tree.forwarded_tokens < by_prompt.forwarded_tokens < by_prompt.row_tokens


def _rows(tokens, max_len: int, max_rows: int):
    """(prompt, response) rows over a small alphabet, so that they share prefixes in every way."""
    seq = st.lists(tokens, min_size=1, max_size=max_len)
    return st.lists(st.tuples(seq, seq), min_size=1, max_size=max_rows)


@settings(max_examples=200, deadline=None)
@given(
    rows=_rows(tokens=st.integers(0, 3), max_len=6, max_rows=10),
    min_shared=st.integers(1, 4),
    share_responses=st.booleans(),
)
def test_every_row_is_spelled_by_its_path(rows, min_shared, share_responses):
    prompts, responses = [p for p, _ in rows], [r for _, r in rows]
    tree = PrefixTree(prompts, responses, min_shared, share_responses)
    for end, p, r in zip(tree.ends, prompts, responses):
        path = end.path()
        assert [t for s in path for t in s.tokens] == p + r
        assert all(s.start == sum(len(a.tokens) for a in path[:k]) for k, s in enumerate(path))
    for depth, level in enumerate(tree.levels):
        for s in level:
            assert len(s.path()) == depth + 1 and s.tokens
            # a shared segment that no row ends with pays for its level
            assert not s.children or s.rows or len(s.tokens) >= min_shared
    assert tree.forwarded_tokens <= tree.row_tokens


def test_bad_input_is_named(model64):
    model, _ = model64
    with pytest.raises(ValueError, match="prompts: each needs at least one token"):
        PrefixTree([[]], [[1]])
    with pytest.raises(ValueError, match="responses: each needs at least one token"):
        PrefixTree([[1, 2], [1, 2]], [[1], []])
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        PrefixTree([[1], [2]], [[1]])
    with pytest.raises(ValueError, match="min_shared 0"):
        PrefixTree([[1]], [[1]], min_shared=0)
    with pytest.raises(ValueError, match="2 prompts but 1 groups"):
        shared_prefix_logprobs(model, [[1], [2]], [[[1]]])


def test_shared_prefix_logprobs_and_gradients_match_the_padded_forward(tiny_model_dir):
    from openrlhf_ext.cpu_compat import install

    install()
    from openrlhf.models import Actor

    torch.manual_seed(0)
    actor = Actor(str(tiny_model_dir), attn_implementation="sdpa", param_dtype="bf16").float()
    actor.model.config.use_cache = False
    shared = [5, 9, 11, 3, 8, 21, 4, 17, 6, 30]
    prompts = [[*shared, 40, 41], [*shared, 42], [*shared, 43, 44, 45], [*shared, 42]]
    responses = [[50, 51, 52], [53], [54, 55], [56, 57, 58, 59]]
    # OpenRLHF's layout: left-padded prompts, right-padded responses
    p_len, r_len = max(map(len, prompts)), max(map(len, responses))
    seq = torch.zeros((4, p_len + r_len), dtype=torch.long)
    att = torch.zeros_like(seq)
    action = torch.zeros((4, r_len), dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        seq[i, p_len - len(p) : p_len] = torch.tensor(p)
        seq[i, p_len : p_len + len(r)] = torch.tensor(r)
        att[i, p_len - len(p) : p_len + len(r)] = 1
        action[i, : len(r)] = True
    reference = actor(seq, action_mask=action, attention_mask=att)
    reference.sum().backward()
    grads = {n: p.grad.clone() for n, p in actor.named_parameters() if p.grad is not None}
    actor.zero_grad(set_to_none=True)
    tree = PrefixTree(prompts, responses)
    assert [len(level) for level in tree.levels] == [1, 4]  # the shared tokens once, then each row's own
    ours = actor_action_logprobs(actor, tree, r_len)
    assert ours.shape == reference.shape
    assert torch.allclose(ours, reference, atol=1e-5), (ours - reference).abs().max()
    ours.sum().backward()
    for name, p in actor.named_parameters():
        if name in grads:
            # fp32 sums in another order: agreement to 1e-4 of the gradient's scale
            scale = grads[name].abs().max().item()
            assert (p.grad - grads[name]).abs().max().item() <= 1e-4 * max(scale, 1.0), name


@settings(max_examples=25, deadline=None)
@given(
    rows=_rows(tokens=st.integers(3, 5), max_len=7, max_rows=6),
    min_shared=st.integers(1, 3),
)
def test_any_tree_gives_the_unshared_logprobs(model64, rows, min_shared):
    """Three token ids, so rows share a lot in odd ways: a row ending inside another row's prompt, one
    response equal to another's prompt tail, levels whose segments start at different positions."""
    model, _ = model64
    prompts, responses = [p for p, _ in rows], [r for _, r in rows]
    with torch.no_grad():
        ours = PrefixTree(prompts, responses, min_shared=min_shared).logprobs(model)
        plain = unshared_logprobs(model, prompts, [[r] for r in responses])
    for i, ((lp,), r) in enumerate(zip(plain, responses)):
        torch.testing.assert_close(ours[i, : len(r)], lp, atol=1e-9, rtol=1e-9)
