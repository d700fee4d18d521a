"""Forward pass of a Hugging Face Llama-family model over a ragged batch of sequences in a KV pool.

The linear layers, norms and MLPs run once on the concatenated new tokens of every sequence in the step
(prefill chunks and decode tokens alike). Attention has two paths: every sequence that feeds one token (a
decode step) is served by a single batched attention call over the pool's rows, masked by each row's length;
a sequence that feeds several tokens (a prefill chunk, possibly after a cached prefix) attends on its own.
The weights are the Hugging Face module's own parameters, so in-place weight updates are seen immediately.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "MistralForCausalLM")


@dataclass
class KVBuffer:
    """A finished sequence's keys and values, kept by the prefix cache: [layers, 2, kv_heads, length, d]."""

    data: torch.Tensor

    @property
    def length(self) -> int:
        return self.data.shape[3]


class KVPool:
    """Keys and values of the active sequences, one row each: per layer [2, rows, kv_heads, capacity, d].

    The engine keeps its active sequences in rows 0..B-1 (it fills a hole with the last row), so that the
    decode path attends over a view of the first B rows without copying. Both dimensions grow on demand, in
    small steps and never past `max_rows`: growth copies one layer at a time, so a growth needs one layer's
    worth of extra memory, not a second pool (the peak RSS of a rollout is set here).
    """

    ROW_STEP = 8  # rows are added in steps of this many (capped at max_rows)
    CAPACITY_STEP = 64  # positions are added in steps of this many

    def __init__(self, layers: int, kv_heads: int, head_dim: int, dtype, device, max_rows: int | None = None):
        self.data = [
            torch.empty(2, 0, kv_heads, 0, head_dim, dtype=dtype, device=device) for _ in range(layers)
        ]
        self.lengths: list[int] = []  # filled positions per row
        self.max_rows = max_rows

    @property
    def rows(self) -> int:
        return self.data[0].shape[1]

    @property
    def capacity(self) -> int:
        return self.data[0].shape[3]

    def nbytes(self) -> int:
        return sum(layer.numel() * layer.element_size() for layer in self.data)

    @torch.inference_mode()  # the forward pass writes these tensors in inference mode too
    def reserve(self, rows: int, capacity: int) -> None:
        if rows <= self.rows and capacity <= self.capacity:
            return
        new_rows = self.rows
        if rows > self.rows:
            new_rows = -(-rows // self.ROW_STEP) * self.ROW_STEP
            if self.max_rows is not None:
                new_rows = max(rows, min(new_rows, self.max_rows))
        new_cap = self.capacity
        if capacity > self.capacity:
            new_cap = -(-capacity // self.CAPACITY_STEP) * self.CAPACITY_STEP
        used = max(self.lengths, default=0)
        for i, old in enumerate(self.data):
            _, old_rows, kv_heads, _, d = old.shape
            # Zeros, not empty: masked positions get attention weight 0, and 0 * NaN from uninitialized memory
            # would still be NaN.
            grown = old.new_zeros(2, new_rows, kv_heads, new_cap, d)
            if old_rows and used:
                grown[:, :old_rows, :, :used] = old[:, :, :, :used]
            self.data[i] = grown
            del old
        self.lengths += [0] * (new_rows - len(self.lengths))

    @torch.inference_mode()
    def load(self, row: int, kv: KVBuffer | None, length: int) -> None:
        """Row `row` starts with the first `length` positions of `kv` (a cached prefix), or empty."""
        if length:
            for i, layer in enumerate(self.data):
                layer[:, row, :, :length] = kv.data[i, :, :, :length]
        self.lengths[row] = length

    @torch.inference_mode()
    def save(self, row: int) -> KVBuffer:
        """A compact copy of a row's filled positions."""
        n = self.lengths[row]
        return KVBuffer(torch.stack([layer[:, row, :, :n] for layer in self.data]))

    @torch.inference_mode()
    def move(self, src: int, dst: int) -> None:
        length = self.lengths[src]
        for layer in self.data:
            layer[:, dst, :, :length] = layer[:, src, :, :length]
        self.lengths[dst] = length
        self.lengths[src] = 0


@dataclass
class RaggedItem:
    row: int  # the sequence's pool row; its new tokens start at pool.lengths[row]
    token_ids: list[int]
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

    def new_pool(self, max_rows: int | None = None) -> KVPool:
        return KVPool(self.num_layers, self.num_kv_heads, self.head_dim, self.dtype, self.device, max_rows)

    def kv_bytes_per_token(self) -> int:
        return self.num_layers * 2 * self.num_kv_heads * self.head_dim * torch.finfo(self.dtype).bits // 8

    @torch.inference_mode()
    def forward(self, pool: KVPool, items: list[RaggedItem]) -> list[torch.Tensor]:
        """Feeds every item's new tokens; returns per item the logits [len(logit_offsets), vocab] (fp32)."""
        device = self.device
        lengths = [len(it.token_ids) for it in items]
        pool.reserve(max(it.row for it in items) + 1, 0)
        starts = [pool.lengths[it.row] for it in items]
        pool.reserve(0, max(s + n for s, n in zip(starts, lengths)))
        tokens = torch.tensor([t for it in items for t in it.token_ids], dtype=torch.long, device=device)
        positions = torch.cat([torch.arange(s, s + n, device=device) for s, n in zip(starts, lengths)])
        total = tokens.shape[0]

        hidden = self.backbone.embed_tokens(tokens)  # [T, H]
        cos, sin = self.backbone.rotary_emb(hidden[None], positions[None])  # [1, T, d]
        cos, sin = cos[0, :, None, :], sin[0, :, None, :]  # [T, 1, d]

        offsets = [0]
        for n in lengths:
            offsets.append(offsets[-1] + n)
        decode = [i for i, n in enumerate(lengths) if n == 1]
        prefill = [i for i, n in enumerate(lengths) if n > 1]
        gqa = self.num_kv_heads != self.num_heads
        if decode:
            # One attention call for all single-token items over rows [0, hi): row r attends to its first
            # length+1 positions; rows without a decode item get a harmless one-key mask.
            d_rows = torch.tensor([items[i].row for i in decode], device=device)
            d_pos = torch.tensor([starts[i] for i in decode], device=device)
            d_tok = torch.tensor([offsets[i] for i in decode], device=device)
            hi = int(d_rows.max()) + 1
            span = int(d_pos.max()) + 1
            row_len = torch.ones(hi, dtype=torch.long, device=device)
            row_len[d_rows] = d_pos + 1
            d_mask = (torch.arange(span, device=device)[None, :] < row_len[:, None])[:, None, None, :]
        masks: dict[int, torch.Tensor | None] = {}
        for i in prefill:  # causal masks offset by the cached prefix
            s, n = starts[i], lengths[i]
            if s == 0:
                masks[i] = None  # plain causal
            else:
                key_pos = torch.arange(s + n, device=device)
                masks[i] = key_pos[None, :] <= torch.arange(s, s + n, device=device)[:, None]  # [n, s+n]

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
            keys, values = pool.data[layer_idx][0], pool.data[layer_idx][1]  # [rows, kv_heads, cap, d]
            out = torch.empty_like(q)  # [T, heads, d]
            if decode:
                keys[d_rows, :, d_pos] = k[d_tok]
                values[d_rows, :, d_pos] = v[d_tok]
                q_rows = q.new_zeros(hi, self.num_heads, 1, self.head_dim)
                q_rows[d_rows, :, 0] = q[d_tok]
                o = F.scaled_dot_product_attention(
                    q_rows,
                    keys[:hi, :, :span],
                    values[:hi, :, :span],
                    attn_mask=d_mask,
                    scale=self.scale,
                    enable_gqa=gqa,
                )
                out[d_tok] = o[d_rows, :, 0]
            for i in prefill:
                row, s, n, a = items[i].row, starts[i], lengths[i], offsets[i]
                keys[row, :, s : s + n] = k[a : a + n].transpose(0, 1)
                values[row, :, s : s + n] = v[a : a + n].transpose(0, 1)
                o = F.scaled_dot_product_attention(
                    q[a : a + n].transpose(0, 1)[None],  # [1, heads, n, d]
                    keys[row, :, : s + n][None],
                    values[row, :, : s + n][None],
                    attn_mask=masks[i],
                    is_causal=masks[i] is None,
                    scale=self.scale,
                    enable_gqa=gqa,
                )
                out[a : a + n] = o[0].transpose(0, 1)
            hidden = hidden + attn.o_proj(out.reshape(total, -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))

        for it, s, n in zip(items, starts, lengths):
            pool.lengths[it.row] = s + n

        rows = [offsets[i] + off for i, it in enumerate(items) for off in it.logit_offsets]
        if not rows:
            return [hidden.new_empty(0, self.vocab_size, dtype=torch.float32) for _ in items]
        selected = self.backbone.norm(hidden[torch.tensor(rows, device=device)])
        logits = self.hf.lm_head(selected).float()  # [rows, vocab]
        per_item, i = [], 0
        for it in items:
            per_item.append(logits[i : i + len(it.logit_offsets)])
            i += len(it.logit_offsets)
        return per_item
