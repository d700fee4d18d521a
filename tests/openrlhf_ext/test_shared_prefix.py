"""The shared-prefix computation equals the unshared one (log-probs and gradients, float64, a tiny model) and
OpenRLHF's Actor.forward on its padded layout."""

import pytest
import torch

from latr_sglang.models import load_model_and_tokenizer
from openrlhf_ext.shared_prefix import (
    actor_action_logprobs,
    common_prefix_len,
    group_logprobs,
    prefix_shared_logprobs,
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


def test_bad_input_is_named(model64):
    model, _ = model64
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        group_logprobs(model, [], [[1]])
    with pytest.raises(ValueError, match="at least one token"):
        group_logprobs(model, [1, 2], [[1], []])
    with pytest.raises(ValueError, match="2 prompts but 1 groups"):
        shared_prefix_logprobs(model, [[1], [2]], [[[1]]])
    with pytest.raises(ValueError, match="prefix_len 2"):
        prefix_shared_logprobs(model, [[1, 2], [1, 2, 3]], [[1], [1]], 2)


def test_common_prefix_leaves_each_prompt_a_token():
    assert common_prefix_len([[1, 2, 3, 4], [1, 2, 3, 5]]) == 3
    assert common_prefix_len([[1, 2, 3], [1, 2, 3, 4]]) == 2  # the shorter prompt keeps its last token
    assert common_prefix_len([[7, 2], [1, 2]]) == 0


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
    n = common_prefix_len(prompts)
    assert n == len(shared)
    ours = actor_action_logprobs(actor, prompts, responses, n, r_len)
    assert ours.shape == reference.shape
    assert torch.allclose(ours, reference, atol=1e-5), (ours - reference).abs().max()
    ours.sum().backward()
    for name, p in actor.named_parameters():
        if name in grads:
            # fp32 sums in another order: agreement to 1e-4 of the gradient's scale
            scale = grads[name].abs().max().item()
            assert (p.grad - grads[name]).abs().max().item() <= 1e-4 * max(scale, 1.0), name
