"""Forward pass of a Hugging Face Llama-family model over a ragged batch with per-sequence KV buffers.

The linear layers, norms and MLPs run once on the concatenated new tokens of every sequence in the step
(prefill chunks and single decode tokens alike); only attention runs per sequence, against that sequence's own
KV buffer. That is what lets the engine batch unrelated requests continuously and start a continuation request
from a copied prefix KV. The weights are the Hugging Face module's own parameters, so in-place weight updates
on the HF model are seen immediately.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "MistralForCausalLM")


class KVBuffer:
    """Keys and values of one sequence for every layer: [layers, 2, kv_heads, capacity, head_dim]."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, capacity: int, dtype, device) -> None:
        self.data = torch.empty(layers, 2, kv_heads, max(capacity, 1), head_dim, dtype=dtype, device=device)
        self.length = 0  # positions whose K/V are filled

    @property
    def capacity(self) -> int:
        return self.data.shape[3]

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()

    def reserve(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        new_capacity = max(needed, 2 * self.capacity)
        grown = self.data.new_empty(*self.data.shape[:3], new_capacity, self.data.shape[4])
        grown[:, :, :, : self.length] = self.data[:, :, :, : self.length]
        self.data = grown

    def copy_prefix(self, length: int, capacity: int) -> KVBuffer:
        """A new buffer holding this buffer's first `length` positions."""
        out = KVBuffer.__new__(KVBuffer)
        out.data = self.data.new_empty(*self.data.shape[:3], max(capacity, length, 1), self.data.shape[4])
        out.data[:, :, :, :length] = self.data[:, :, :, :length]
        out.length = length
        return out


@dataclass
class RaggedItem:
    kv: KVBuffer
    token_ids: list[int]  # new tokens; their positions start at kv.length
    logit_offsets: list[int]  # indices into token_ids whose next-token logits are wanted


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class RaggedCausalLM:
    def __init__(self, hf_model: torch.nn.Module) -> None:
        arch = type(hf_model).__name__
        if arch not in SUPPORTED_ARCHITECTURES:
            raise ValueError(
                f"model architecture {arch!r} is not supported by the torch engine; "
                f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        cfg = hf_model.config
        if getattr(cfg, "use_sliding_window", False) and getattr(cfg, "sliding_window", None):
            raise ValueError("sliding-window attention is not supported by the torch engine")
        self.hf = hf_model
        self.backbone = hf_model.model
        self.config = cfg
        self.num_layers = cfg.num_hidden_layers
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.scale = self.head_dim**-0.5
        self.vocab_size = cfg.vocab_size

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.backbone.embed_tokens.weight.device

    def new_kv(self, capacity: int) -> KVBuffer:
        return KVBuffer(self.num_layers, self.num_kv_heads, self.head_dim, capacity, self.dtype, self.device)

    def kv_bytes_per_token(self) -> int:
        return self.num_layers * 2 * self.num_kv_heads * self.head_dim * torch.finfo(self.dtype).bits // 8

    @torch.inference_mode()
    def forward(self, items: list[RaggedItem]) -> list[torch.Tensor]:
        """Feeds every item's new tokens; returns per item the logits [len(logit_offsets), vocab] (fp32)."""
        device = self.device
        lengths = [len(it.token_ids) for it in items]
        starts = [it.kv.length for it in items]
        tokens = torch.tensor([t for it in items for t in it.token_ids], dtype=torch.long, device=device)
        positions = torch.cat([torch.arange(s, s + n, device=device) for s, n in zip(starts, lengths)])
        for it, n in zip(items, lengths):
            it.kv.reserve(it.kv.length + n)
        total = tokens.shape[0]

        hidden = self.backbone.embed_tokens(tokens)  # [T, H]
        cos, sin = self.backbone.rotary_emb(hidden[None], positions[None])  # [1, T, d]
        cos, sin = cos[0, :, None, :], sin[0, :, None, :]  # [T, 1, d]

        # Causal masks for items that feed several tokens after a cached prefix (is_causal would align
        # the diagonal to the top-left, which is wrong once the keys are longer than the queries).
        masks: list[torch.Tensor | None] = []
        for s, n in zip(starts, lengths):
            if n == 1 or s == 0:
                masks.append(None)
            else:
                key_pos = torch.arange(s + n, device=device)
                query_pos = torch.arange(s, s + n, device=device)
                masks.append(key_pos[None, :] <= query_pos[:, None])  # [n, s+n]

        bounds = []
        offset = 0
        for n in lengths:
            bounds.append((offset, offset + n))
            offset += n

        for layer_idx, layer in enumerate(self.backbone.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(hidden)
            q = attn.q_proj(x).view(total, self.num_heads, self.head_dim)
            k = attn.k_proj(x).view(total, self.num_kv_heads, self.head_dim)
            v = attn.v_proj(x).view(total, self.num_kv_heads, self.head_dim)
            if hasattr(attn, "q_norm"):  # Qwen3
                q, k = attn.q_norm(q), attn.k_norm(k)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            new_kv = torch.stack((k, v)).transpose(1, 2)  # [2, kv_heads, T, d]
            outs = []
            for it, (a, b), s, mask in zip(items, bounds, starts, masks):
                n = b - a
                buf = it.kv.data[layer_idx]  # [2, kv_heads, capacity, d]
                buf[:, :, s : s + n] = new_kv[:, :, a:b]
                kv_seq = buf[:, None, :, : s + n]  # [2, 1, kv_heads, s+n, d]
                o = F.scaled_dot_product_attention(
                    q[a:b].transpose(0, 1)[None],  # [1, heads, n, d]
                    kv_seq[0],
                    kv_seq[1],
                    attn_mask=mask,
                    is_causal=mask is None and n > 1,
                    scale=self.scale,
                    enable_gqa=self.num_kv_heads != self.num_heads,
                )
                outs.append(o[0].transpose(0, 1))  # [n, heads, d]
            out = outs[0] if len(outs) == 1 else torch.cat(outs)
            hidden = hidden + attn.o_proj(out.reshape(total, -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))

        for it, n in zip(items, lengths):
            it.kv.length += n

        rows = [a + off for it, (a, _) in zip(items, bounds) for off in it.logit_offsets]
        if not rows:
            return [hidden.new_empty(0, self.vocab_size, dtype=torch.float32) for _ in items]
        selected = self.backbone.norm(hidden[torch.tensor(rows, device=device)])
        logits = self.hf.lm_head(selected).float()  # [rows, vocab]
        per_item = []
        i = 0
        for it in items:
            per_item.append(logits[i : i + len(it.logit_offsets)])
            i += len(it.logit_offsets)
        return per_item
