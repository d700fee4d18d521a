"""The update's forward pass: action log-probs of a batch whose prompts share a prefix, computed once.

A group's n samples share one prompt, and a few-shot task's prompts share their examples as well: in the
main job ~85 of a sequence's ~110 tokens are the same for all 32 sequences of a step. Running that prefix
once (with gradients: its keys and values depend on the weights) and the 32 short suffixes against its
cache computes the same log-probs as OpenRLHF's `Actor.forward` on the padded batch, for about a quarter of
the tokens. Suffixes are right-padded, so causal attention never lets a real token see a pad and no
attention mask is needed.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def shared_prefix_action_logprobs(
    actor: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    prefix_len: int,
    device: torch.device,
    r_len: int | None = None,
) -> torch.Tensor:
    """[b, max response length] log-probs of each response token under `actor` (an OpenRLHF Actor), 0
    past a response's end: what `Actor.forward(..., action_mask=...)` returns for the same sequences."""
    from openrlhf.models.utils import log_probs_from_logits

    b = len(prompts)
    r_len = r_len or max(len(r) for r in responses)
    suffixes = [list(p[prefix_len:]) + list(r) for p, r in zip(prompts, responses)]
    s_len = max(map(len, suffixes))
    ids = torch.zeros((b, s_len), dtype=torch.long)
    for i, s in enumerate(suffixes):
        ids[i, : len(s)] = torch.tensor(s)
    ids = ids.to(device)
    model = actor.model
    prefix = torch.tensor([list(prompts[0][:prefix_len])], device=device)
    cache = model(input_ids=prefix, use_cache=True).past_key_values
    cache.batch_repeat_interleave(b)  # differentiable: every row's gradient flows back into the prefix
    positions = torch.arange(prefix_len, prefix_len + s_len, device=device)
    logits = model(
        input_ids=ids,
        past_key_values=cache,
        position_ids=positions[None].expand(b, -1),
        cache_position=positions,
        use_cache=False,
    ).logits.float()
    temperature = getattr(actor, "temperature", 1.0)
    if temperature != 1.0:
        logits = logits / temperature
    # the response token at suffix position q + j is predicted at position q + j - 1
    starts = torch.tensor([len(p) - prefix_len - 1 for p in prompts], device=device)
    cols = starts[:, None] + torch.arange(r_len, device=device)[None]
    lengths = torch.tensor([len(r) for r in responses], device=device)
    valid = torch.arange(r_len, device=device)[None] < lengths[:, None]
    cols = torch.where(valid, cols, torch.zeros_like(cols))
    rows = torch.arange(b, device=device)[:, None].expand(-1, r_len)
    picked = logits[rows, cols]  # [b, r_len, vocab]
    targets = ids[rows, (cols + 1).clamp(max=s_len - 1)]
    return log_probs_from_logits(picked, targets) * valid.float()
