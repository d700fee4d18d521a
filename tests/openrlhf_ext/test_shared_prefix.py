"""The shared-prompt computation equals the unshared one: log-probs and gradients, float64, a tiny model."""

import pytest
import torch

from latr_sglang.models import load_model_and_tokenizer
from openrlhf_ext.shared_prefix import group_logprobs, shared_prefix_logprobs, unshared_logprobs


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
