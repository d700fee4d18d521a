"""Training on shared prefixes: a prefix the sequences of a batch share is computed once, not once per row.

A group's n samples share their prompt, and a few-shot task's prompts share their examples as well: in the
main job ~85 of a sequence's ~110 tokens are the same for all 32 sequences of a step. The usual update
forwards every row's prompt + response; here the shared prefix goes through the model once (batch 1), its
keys and values are repeated for the rows, and each row's suffix (the rest of its prompt, then its response)
is forwarded on top of that cache. Autograd flows through the repeat into the one prefix forward, so
log-probs and gradients equal the unshared computation (tests/openrlhf_ext/test_shared_prefix.py checks both
in float64, and against OpenRLHF's `Actor.forward`). Suffixes are right-padded, so causal attention never
lets a real token see a pad and no attention mask is needed.

    n = common_prefix_len(prompts)                                    # the longest prefix all rows share
    logps = prefix_shared_logprobs(model, prompts, responses, n)      # [b, max response length]
    logps = actor_action_logprobs(actor, prompts, responses, n, r_len) # the same for an OpenRLHF Actor
    logps = shared_prefix_logprobs(model, prompts, responses_by_group) # one prefix per group (its prompt)

The reference model's forward takes the same path under torch.no_grad(). docs/shared_prefix.md says how
the same would go into OpenRLHF's packed-sequence Actor for the Ray path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

MIN_SHARED_PREFIX = 8  # below this the padded full-batch forward is as cheap


def common_prefix_len(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix all prompts share, leaving each prompt at least one token of its own
    (the first response token's log-prob comes from the logits at the prompt's last position)."""
    shortest = min(len(p) for p in prompts)
    n = 0
    first = prompts[0]
    while n < shortest - 1 and all(p[n] == first[n] for p in prompts):
        n += 1
    return n


def prefix_shared_logprobs(
    model: Any,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    prefix_len: int,
    temperature: float = 1.0,
    r_len: int | None = None,
) -> torch.Tensor:
    """[b, r_len] log-prob of each response token given its prompt and the tokens before it, 0 past a
    response's end (r_len: default the longest response). `prompts[i][:prefix_len]` must be the same for
    every row and shorter than every prompt; prefix_len 0 is the plain right-padded forward."""
    if not prompts or len(prompts) != len(responses):
        raise ValueError(
            f"{len(prompts)} prompts but {len(responses)} responses (need as many, at least one)"
        )
    if any(len(r) == 0 for r in responses):
        raise ValueError("responses: each needs at least one token")
    if not 0 <= prefix_len < min(len(p) for p in prompts):
        raise ValueError(f"prefix_len {prefix_len}: must leave every prompt at least one token of its own")
    device = next(model.parameters()).device
    b = len(prompts)
    r_len = r_len or max(len(r) for r in responses)
    suffixes = [list(p[prefix_len:]) + list(r) for p, r in zip(prompts, responses)]
    s_len = max(map(len, suffixes))
    ids = torch.zeros((b, s_len), dtype=torch.long)
    for i, s in enumerate(suffixes):
        ids[i, : len(s)] = torch.tensor(s)
    ids = ids.to(device)  # [b, s_len], right-padded
    positions = torch.arange(prefix_len, prefix_len + s_len, device=device)
    if prefix_len:
        prefix = torch.tensor([list(prompts[0][:prefix_len])], device=device)  # [1, prefix_len]
        cache = model(input_ids=prefix, use_cache=True).past_key_values
        cache.batch_repeat_interleave(b)  # differentiable: every row's gradient flows back into the prefix
        out = model(
            input_ids=ids,
            past_key_values=cache,
            position_ids=positions[None].expand(b, -1),
            cache_position=positions,
            use_cache=False,
        )
    else:
        out = model(input_ids=ids, position_ids=positions[None].expand(b, -1), use_cache=False)
    logits = out.logits.float()  # [b, s_len, vocab]
    if temperature != 1.0:
        logits = logits / temperature
    # the response token at suffix position q + j is predicted at position q + j - 1
    starts = torch.tensor([len(p) - prefix_len - 1 for p in prompts], device=device)
    cols = starts[:, None] + torch.arange(r_len, device=device)[None]  # [b, r_len]
    lengths = torch.tensor([len(r) for r in responses], device=device)
    valid = torch.arange(r_len, device=device)[None] < lengths[:, None]
    cols = torch.where(valid, cols, torch.zeros_like(cols))
    rows = torch.arange(b, device=device)[:, None].expand(-1, r_len)
    picked = logits[rows, cols]  # [b, r_len, vocab]
    targets = ids[rows, (cols + 1).clamp(max=s_len - 1)]  # [b, r_len]
    logp = torch.log_softmax(picked, dim=-1).gather(-1, targets[..., None])[..., 0]
    return logp * valid.to(logp.dtype)


def actor_action_logprobs(
    actor: Any,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    prefix_len: int,
    r_len: int | None = None,
) -> torch.Tensor:
    """What OpenRLHF's `Actor.forward(..., action_mask=...)` returns for these sequences (left-padded prompts,
    right-padded responses), computed on the shared prefix."""
    return prefix_shared_logprobs(
        actor.model, prompts, responses, prefix_len, getattr(actor, "temperature", 1.0), r_len
    )


def group_logprobs(
    model: Any,
    prompt_ids: Sequence[int],
    responses: Sequence[Sequence[int]],
    temperature: float = 1.0,
) -> list[torch.Tensor]:
    """One group (a prompt and its n responses): per response, its tokens' log-probs, the prompt shared."""
    if not prompt_ids:
        raise ValueError("prompt_ids is empty: the shared prefix needs at least one token")
    if not responses or any(len(r) == 0 for r in responses):
        raise ValueError("responses: need at least one, each with at least one token")
    logp = prefix_shared_logprobs(
        model, [prompt_ids] * len(responses), responses, len(prompt_ids) - 1, temperature
    )
    return [logp[i, : len(r)] for i, r in enumerate(responses)]


def shared_prefix_logprobs(
    model: Any,
    prompts: Sequence[Sequence[int]],
    responses_by_group: Sequence[Sequence[Sequence[int]]],
    temperature: float = 1.0,
) -> list[list[torch.Tensor]]:
    """group_logprobs for every group (prompts[i] with responses_by_group[i])."""
    if len(prompts) != len(responses_by_group):
        raise ValueError(f"{len(prompts)} prompts but {len(responses_by_group)} groups of responses")
    return [group_logprobs(model, p, rs, temperature) for p, rs in zip(prompts, responses_by_group)]


def unshared_logprobs(
    model: Any,
    prompts: Sequence[Sequence[int]],
    responses_by_group: Sequence[Sequence[Sequence[int]]],
    temperature: float = 1.0,
    pad_id: int = 0,
) -> list[list[torch.Tensor]]:
    """The usual computation, the baseline (written independently of the shared path, so a test comparing
    the two checks its indexing): every sample forwards its own prompt + response, one right-padded batch
    with an attention mask."""
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
