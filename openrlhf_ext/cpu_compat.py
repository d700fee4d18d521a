"""CPU implementations of the flash-attn helpers that OpenRLHF imports at module load.

`openrlhf.models` imports `flash_attn.bert_padding` (index_first_axis, pad_input, rearrange, unpad_input) and
`flash_attn.utils.distributed.all_gather` for sample packing. flash-attn has no CPU build, and its own
`__init__` loads the CUDA extension, so on a machine without it these pure-torch equivalents are registered
under the same module names. `install()` does nothing when the real flash-attn imports.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types

import torch
import torch.distributed as dist
from einops import rearrange


def index_first_axis(tensor: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """tensor[indices] along the first axis (flash-attn's autograd Function does the same)."""
    return tensor[indices]


def unpad_input(
    hidden_states: torch.Tensor, attention_mask: torch.Tensor, unused_mask: torch.Tensor | None = None
):
    """[batch, seqlen, ...] -> ([nnz, ...], indices, cu_seqlens, max_seqlen, seqused), as flash-attn."""
    all_masks = attention_mask + unused_mask if unused_mask is not None else attention_mask
    seqlens = all_masks.sum(dim=-1, dtype=torch.int32)
    used = attention_mask.sum(dim=-1, dtype=torch.int32)
    indices = torch.nonzero(all_masks.flatten(), as_tuple=False).flatten()
    max_seqlen = int(seqlens.max().item()) if seqlens.numel() else 0
    cu_seqlens = torch.nn.functional.pad(torch.cumsum(seqlens, dim=0, dtype=torch.int32), (1, 0))
    flat = rearrange(hidden_states, "b s ... -> (b s) ...")
    return index_first_axis(flat, indices), indices, cu_seqlens, max_seqlen, used


def pad_input(hidden_states: torch.Tensor, indices: torch.Tensor, batch: int, seqlen: int) -> torch.Tensor:
    """[nnz, ...] -> [batch, seqlen, ...] with zeros where nothing was."""
    out = hidden_states.new_zeros(batch * seqlen, *hidden_states.shape[1:])
    out[indices] = hidden_states
    return rearrange(out, "(b s) ... -> b s ...", b=batch)


def all_gather(tensor: torch.Tensor, group=None) -> torch.Tensor:
    """Concatenation along the first axis of every rank's tensor (a copy when not distributed)."""
    if not dist.is_available() or not dist.is_initialized():
        return tensor.clone()
    world = dist.get_world_size(group)
    parts = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return torch.cat(parts, dim=0)


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, loader=None, is_package=name.count(".") != 2)
    module.__dict__.update(attrs)
    return module


def install() -> bool:
    """Registers the CPU helpers as flash_attn.* if flash-attn itself cannot be imported; returns whether."""
    if "flash_attn.bert_padding" in sys.modules:
        return False
    try:
        import flash_attn.bert_padding
        import flash_attn.utils.distributed  # noqa: F401

        return False
    except Exception:  # not installed, or installed without its CUDA extension
        for name in [m for m in sys.modules if m == "flash_attn" or m.startswith("flash_attn.")]:
            del sys.modules[name]
    padding = _module(
        "flash_attn.bert_padding",
        index_first_axis=index_first_axis,
        pad_input=pad_input,
        rearrange=rearrange,
        unpad_input=unpad_input,
    )
    distributed = _module("flash_attn.utils.distributed", all_gather=all_gather)
    utils = _module("flash_attn.utils", distributed=distributed)
    root = _module("flash_attn", bert_padding=padding, utils=utils)
    root.__path__ = []
    utils.__path__ = []
    sys.modules.update(
        {
            "flash_attn": root,
            "flash_attn.bert_padding": padding,
            "flash_attn.utils": utils,
            "flash_attn.utils.distributed": distributed,
        }
    )
    return True
