"""Training on shared prefixes: a group's prompt is computed once, not once per sample.

The n samples of a group share their prompt. The usual update forwards n copies of prompt + response; here the
prompt goes through the model once (batch 1), its keys and values are repeated for the n responses, and the
responses are forwarded on top of that cache. Autograd flows through the repeat into the one prompt forward,
so log-probs and gradients equal the unshared computation (tests/openrlhf_ext/test_shared_prefix.py checks
both to 1e-5 in float64). What it saves per group: (n - 1) x prompt_len tokens of forward and backward; with
a prompt much longer than the responses (the main job's few-shot prompt, <= 14 new) that is most of it.

    logps = group_logprobs(model, prompt_ids, responses)            # one group: list of [len(response)]
    logps = shared_prefix_logprobs(model, prompts, responses_by_group) # several groups, one call per group

The reference model's forward takes the same path under torch.no_grad().
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def group_logprobs(
    model: Any,
    prompt_ids: Sequence[int],
    responses: Sequence[Sequence[int]],
    temperature: float = 1.0,
    pad_id: int = 0,
) -> list[torch.Tensor]:
    """Per response, the log-prob of each of its tokens given the prompt and the tokens before it.

    One forward of the prompt (batch 1), its KV repeated to len(responses) rows, one forward of the responses
    (right-padded; padding sits after every real token, so the causal mask keeps it out of real positions).
    """
    if not prompt_ids:
        raise ValueError("prompt_ids is empty: the shared prefix needs at least one token")
    if not responses or any(len(r) == 0 for r in responses):
        raise ValueError("responses: need at least one, each with at least one token")
    device = next(model.parameters()).device
    n, width = len(responses), max(map(len, responses))
    prompt = torch.tensor([list(prompt_ids)], device=device)  # [1, P]
    out = model(input_ids=prompt, use_cache=True)
    cache = out.past_key_values
    first = out.logits[:, -1:].float()  # [1, 1, V]: predicts every response's first token
    cache.batch_repeat_interleave(n)  # [n, ...] per layer; differentiable (repeat_interleave)
    targets = torch.tensor(
        [list(r) + [pad_id] * (width - len(r)) for r in responses], device=device
    )  # [n, W]
    if width > 1:
        p = len(prompt_ids)
        positions = torch.arange(p, p + width - 1, device=device)[None].expand(n, -1)
        rest = model(input_ids=targets[:, :-1], position_ids=positions, past_key_values=cache, use_cache=True)
        logits = torch.cat([first.expand(n, -1, -1), rest.logits.float()], dim=1)  # [n, W, V]
    else:
        logits = first.expand(n, -1, -1)
    logp = torch.log_softmax(logits / temperature, dim=-1).gather(-1, targets[..., None])[..., 0]  # [n, W]
    return [logp[i, : len(r)] for i, r in enumerate(responses)]


def shared_prefix_logprobs(
    model: Any,
    prompts: Sequence[Sequence[int]],
    responses_by_group: Sequence[Sequence[Sequence[int]]],
    temperature: float = 1.0,
    pad_id: int = 0,
) -> list[list[torch.Tensor]]:
    """group_logprobs for every group (prompts[i] with responses_by_group[i])."""
    if len(prompts) != len(responses_by_group):
        raise ValueError(f"{len(prompts)} prompts but {len(responses_by_group)} groups of responses")
    return [group_logprobs(model, p, rs, temperature, pad_id) for p, rs in zip(prompts, responses_by_group)]


def unshared_logprobs(
    model: Any,
    prompts: Sequence[Sequence[int]],
    responses_by_group: Sequence[Sequence[Sequence[int]]],
    temperature: float = 1.0,
    pad_id: int = 0,
) -> list[list[torch.Tensor]]:
    """The usual computation: every sample forwards its own prompt + response (one right-padded batch)."""
    device = next(model.parameters()).device
    rows = [(list(p), list(r)) for p, rs in zip(prompts, responses_by_group) for r in rs]
    width = max(len(p) + len(r) for p, r in rows)
    ids = torch.tensor([p + r + [pad_id] * (width - len(p) - len(r)) for p, r in rows], device=device)
    mask = torch.tensor(
        [[1] * (len(p) + len(r)) + [0] * (width - len(p) - len(r)) for p, r in rows], device=device
    )
    logits = model(input_ids=ids, attention_mask=mask).logits.float()  # [B, width, V]
    logp_all = torch.log_softmax(logits[:, :-1] / temperature, dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
    flat = [logp_all[i, len(p) - 1 : len(p) - 1 + len(r)] for i, (p, r) in enumerate(rows)]
    out, k = [], 0
    for rs in responses_by_group:
        out.append(flat[k : k + len(rs)])
        k += len(rs)
    return out
