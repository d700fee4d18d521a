"""LRU cache of finished sequences' KV, matched by longest common token prefix.

LATR's continuation requests extend an earlier request's prompt + output (a parent's next chunk, or a child
forked inside it), so a longest-common-prefix match against finished sequences finds their KV; only the tokens
after the match are prefilled. An entry whose tokens are a prefix of a newer entry is dropped as redundant.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from latr_sglang.engines.ragged_model import KVBuffer


@dataclass
class CacheEntry:
    tokens: np.ndarray  # int64 [n]; kv.length <= n (the last sampled token has no KV yet)
    kv: KVBuffer


def common_prefix_len(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if len(diff) else n


class PrefixCache:
    def __init__(self, max_tokens: int) -> None:
        if max_tokens < 0:
            raise ValueError(f"max_tokens={max_tokens} must be >= 0")
        self.max_tokens = max_tokens
        self._entries: OrderedDict[int, CacheEntry] = OrderedDict()
        self._next_id = 0
        self.held_positions = 0  # KV positions the entries hold: the memory bound

    def __len__(self) -> int:
        return len(self._entries)

    def match(self, tokens: np.ndarray) -> tuple[CacheEntry | None, int]:
        """The entry sharing the longest usable KV prefix with `tokens`, and that length."""
        best, best_len, best_id = None, 0, None
        for entry_id, entry in self._entries.items():
            usable = min(common_prefix_len(entry.tokens, tokens), entry.kv.length)
            if usable > best_len:
                best, best_len, best_id = entry, usable, entry_id
        if best_id is not None:
            self._entries.move_to_end(best_id)
        return best, best_len

    def insert(self, tokens: np.ndarray, kv: KVBuffer) -> None:
        if self.max_tokens == 0 or kv.length == 0:
            return
        for entry_id, entry in list(self._entries.items()):
            shared = common_prefix_len(entry.tokens, tokens)
            if shared >= entry.kv.length and kv.length >= entry.kv.length:
                self._drop(entry_id)  # the new entry serves every request the old one could
            elif shared >= kv.length and entry.kv.length >= kv.length:
                self._entries.move_to_end(entry_id)
                return  # an existing entry already covers this one
        self._entries[self._next_id] = CacheEntry(tokens, kv)
        self._next_id += 1
        self.held_positions += kv.length
        while self.held_positions > self.max_tokens and self._entries:
            self._drop(next(iter(self._entries)))

    def _drop(self, entry_id: int) -> None:
        entry = self._entries.pop(entry_id)
        self.held_positions -= entry.kv.length

    def clear(self) -> None:
        self._entries.clear()
        self.held_positions = 0
