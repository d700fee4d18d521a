"""The shared-prefix forward gives OpenRLHF's Actor log-probs and gradients, on a real (tiny) model."""

import torch

from openrlhf_ext.local.update import common_prefix_len, shared_prefix_action_logprobs


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
    ours = shared_prefix_action_logprobs(actor, prompts, responses, n, torch.device("cpu"), r_len)
    assert ours.shape == reference.shape
    assert torch.allclose(ours, reference, atol=1e-5), (ours - reference).abs().max()
    ours.sum().backward()
    for name, p in actor.named_parameters():
        if name in grads:
            # fp32 sums in another order: agreement to 1e-4 of the gradient's scale
            scale = grads[name].abs().max().item()
            assert (p.grad - grads[name]).abs().max().item() <= 1e-4 * max(scale, 1.0), name
