"""Training on shared prefixes: tokens the sequences of a batch share are computed once, not once per row.

A group's n samples share their prompt, a few-shot task's prompts share their examples, and LATR's branches
share a response prefix up to their fork (identical short answers share everything). The usual update
forwards every row's prompt + response. Here the rows go into a prefix tree (a radix tree of token
segments) and the model runs one tree level at a time: a segment is forwarded once, on top of the keys and
values of the segments above it, and every row's log-probs are read off the path of segments that spells
it. Autograd flows through the cached keys and values into the one forward of each shared segment, so
log-probs and gradients equal the unshared computation (tests/openrlhf_ext/test_shared_prefix.py checks
both in float64, and against OpenRLHF's `Actor.forward`).

    tree = PrefixTree(prompts, responses)                   # rows: prompts[i] + responses[i]
    logps = tree.logprobs(model)                            # [b, max response length], 0 past each end
    logps = actor_action_logprobs(actor, tree, r_len)       # the same for an OpenRLHF Actor
    tree.forwarded_tokens, tree.row_tokens                  # what the forward costs, with and without sharing

The reference model's forward takes the same tree under torch.no_grad(). docs/shared_prefix.md says how the
same would go into OpenRLHF's packed-sequence Actor for the Ray path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

MIN_SHARED_SEGMENT = 8  # a shared segment shorter than this is forwarded with each row (a level costs a call)


@dataclass(eq=False)
class Segment:
    """A run of tokens every row below it shares: positions start .. start + len(tokens) - 1."""

    tokens: list[int]
    start: int
    parent: Segment | None
    children: list[Segment] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)  # rows whose sequence ends with this segment

    def path(self) -> list[Segment]:
        """The segments from the top of the tree down to this one."""
        out, node = [], self
        while node is not None:
            out.append(node)
            node = node.parent
        return out[::-1]


class PrefixTree:
    """The rows prompts[i] + responses[i] as a radix tree of segments, grouped by depth for the forward.

    share_responses=False shares prompts only (each response its own segment under its prompt), for the
    benchmark's comparison of what sharing responses adds.
    """

    def __init__(
        self,
        prompts: Sequence[Sequence[int]],
        responses: Sequence[Sequence[int]],
        min_shared: int = MIN_SHARED_SEGMENT,
        share_responses: bool = True,
    ) -> None:
        if not prompts or len(prompts) != len(responses):
            raise ValueError(
                f"{len(prompts)} prompts but {len(responses)} responses (need as many, at least one)"
            )
        if any(len(p) == 0 for p in prompts):
            raise ValueError(
                "prompts: each needs at least one token (the first response token is read at its last)"
            )
        if any(len(r) == 0 for r in responses):
            raise ValueError("responses: each needs at least one token")
        if min_shared < 1:
            raise ValueError(f"min_shared {min_shared}: must be at least 1")
        self.prompt_lens = [len(p) for p in prompts]
        self.response_lens = [len(r) for r in responses]
        top = Segment([], 0, None)  # the empty segment above everything; never forwarded
        for row, (p, r) in enumerate(zip(prompts, responses)):
            if share_responses:
                _insert(top, [*p, *r], row)
            else:
                end = _insert(top, list(p), None)
                end.children.append(Segment(list(r), len(p), end, rows=[row]))
        _merge_short(top, min_shared)
        self.levels: list[list[Segment]] = []  # levels[d]: the segments d below the top
        level = top.children
        while level:
            for seg in level:
                if seg.parent is top:
                    seg.parent = None
            self.levels.append(level)
            level = [c for seg in level for c in seg.children]
        self.ends: list[Segment] = [None] * len(prompts)  # type: ignore[list-item]
        for level in self.levels:
            for seg in level:
                for row in seg.rows:
                    self.ends[row] = seg
        self.forwarded_tokens = sum(len(s.tokens) for level in self.levels for s in level)
        self.row_tokens = sum(self.prompt_lens) + sum(self.response_lens)

    def logprobs(self, model: Any, temperature: float = 1.0, r_len: int | None = None) -> torch.Tensor:
        """[b, r_len] log-prob of each response token given its prompt and the tokens before it, 0 past a
        response's end (r_len: default the longest response)."""
        from transformers import DynamicCache

        device = next(model.parameters()).device
        r_len = r_len or max(self.response_lens)
        # id(seg) -> per layer, the keys and values of its whole path (top .. seg): [1, h, start + len, d];
        # kept for segments with children, whose children attend to it
        path_kv: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        last: dict[int, torch.Tensor] = {}  # id(seg) -> [vocab] log-softmax at its last position
        token_logp: dict[int, torch.Tensor] = {}  # id(seg) -> [len] log-prob of each token (first: 0 at top)
        for level in self.levels:
            b, past = len(level), max(s.start for s in level)
            width = max(len(s.tokens) for s in level)
            ids = torch.zeros((b, width), dtype=torch.long)
            # pasts left-padded, segments right-padded
            mask = torch.zeros((b, past + width), dtype=torch.long)
            for i, s in enumerate(level):
                ids[i, : len(s.tokens)] = torch.tensor(s.tokens)
                mask[i, past - s.start : past + len(s.tokens)] = 1
            starts = torch.tensor([s.start for s in level])
            positions = (starts[:, None] + torch.arange(width)[None]).to(device)  # [b, width]
            ids, mask = ids.to(device), mask.to(device)
            cache = None
            if past:
                cache = DynamicCache(ddp_cache_data=_left_padded(level, past, path_kv), config=model.config)
            keep_cache = any(s.children for s in level)
            out = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                cache_position=torch.arange(past, past + width, device=device),
                use_cache=keep_cache,
            )
            logits = out.logits.float()  # [b, width, vocab]
            if temperature != 1.0:
                logits = logits / temperature
            logp = torch.log_softmax(logits, dim=-1)
            for i, s in enumerate(level):
                n = len(s.tokens)
                within = logp[i, : n - 1].gather(-1, ids[i, 1:n, None])[:, 0]  # tokens 1.. of the segment
                first = last[id(s.parent)][s.tokens[0]] if s.parent is not None else logp.new_zeros(())
                token_logp[id(s)] = torch.cat([first.view(1), within])
                if s.children:
                    last[id(s)] = logp[i, n - 1]
                    # the cache row holds [pads, path above, this segment, pads]: drop the pads
                    path = slice(past - s.start, past + n)
                    path_kv[id(s)] = [
                        (layer.keys[i : i + 1, :, path], layer.values[i : i + 1, :, path])
                        for layer in out.past_key_values.layers
                    ]
        rows = []
        for end, p_len, length in zip(self.ends, self.prompt_lens, self.response_lens):
            full = torch.cat([token_logp[id(s)] for s in end.path()])  # [p_len + length]
            rows.append(F.pad(full[p_len : p_len + length], (0, r_len - length)))
        return torch.stack(rows)


def _left_padded(
    level: list[Segment], past: int, path_kv: dict[int, list[tuple[torch.Tensor, torch.Tensor]]]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the keys and values above each segment of a level (its parent's path), left-padded to
    `past`: [b, heads, past, head_dim]. The pads hold zeros and are masked out."""
    parents = [path_kv[id(s.parent)] for s in level]  # below the top level every segment has a parent
    out = []
    for layer in range(len(parents[0])):
        keys = [F.pad(kv[layer][0], (0, 0, past - s.start, 0)) for kv, s in zip(parents, level)]
        values = [F.pad(kv[layer][1], (0, 0, past - s.start, 0)) for kv, s in zip(parents, level)]
        out.append((torch.cat(keys), torch.cat(values)))
    return out


def _insert(top: Segment, tokens: list[int], row: int | None) -> Segment:
    """Add a sequence to the radix tree below `top`; return the segment it ends with."""
    node, pos = top, 0
    while pos < len(tokens):
        child = next((c for c in node.children if c.tokens[0] == tokens[pos]), None)
        if child is None:
            child = Segment(tokens[pos:], pos, node)
            node.children.append(child)
            node, pos = child, len(tokens)
            break
        k = 0
        while k < len(child.tokens) and pos + k < len(tokens) and child.tokens[k] == tokens[pos + k]:
            k += 1
        if k < len(child.tokens):  # split the child: its first k tokens become their own segment
            head = Segment(child.tokens[:k], child.start, node, children=[child])
            node.children[node.children.index(child)] = head
            child.tokens, child.start, child.parent = child.tokens[k:], child.start + k, head
            child = head
        node, pos = child, pos + k
    if row is not None:
        node.rows.append(row)
    return node


def _merge_short(node: Segment, min_shared: int) -> None:
    """A shared segment shorter than min_shared (that no row ends with) is folded into each of its children:
    its tokens are forwarded once per child instead of costing a level of its own."""
    pending, kept = list(node.children), []
    while pending:
        child = pending.pop()
        if child.children and not child.rows and len(child.tokens) < min_shared:
            for grandchild in child.children:
                grandchild.tokens = child.tokens + grandchild.tokens
                grandchild.start, grandchild.parent = child.start, node
            pending.extend(child.children)
        else:
            kept.append(child)
    node.children = kept[::-1]
    for child in node.children:
        _merge_short(child, min_shared)


def actor_action_logprobs(actor: Any, tree: PrefixTree, r_len: int | None = None) -> torch.Tensor:
    """What OpenRLHF's `Actor.forward(..., action_mask=...)` returns for the tree's rows (left-padded
    prompts, right-padded responses), computed on the shared prefixes."""
    return tree.logprobs(actor.model, getattr(actor, "temperature", 1.0), r_len)


def shared_prefix_logprobs(
    model: Any,
    prompts: Sequence[Sequence[int]],
    responses_by_group: Sequence[Sequence[Sequence[int]]],
    temperature: float = 1.0,
    share_responses: bool = True,
) -> list[list[torch.Tensor]]:
    """Per group (prompts[i] with responses_by_group[i]), per response, its tokens' log-probs: every group
    in one prefix tree (the interface of unshared_logprobs)."""
    if len(prompts) != len(responses_by_group):
        raise ValueError(f"{len(prompts)} prompts but {len(responses_by_group)} groups of responses")
    rows = [(p, r) for p, rs in zip(prompts, responses_by_group) for r in rs]
    tree = PrefixTree([p for p, _ in rows], [r for _, r in rows], share_responses=share_responses)
    logp = tree.logprobs(model, temperature)
    out, k = [], 0
    for rs in responses_by_group:
        out.append([logp[k + j, : len(r)] for j, r in enumerate(rs)])
        k += len(rs)
    return out


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
