"""LRU cache of finished sequences' KV, matched by longest common token prefix.

LATR's continuation requests extend an earlier request's prompt + output (a parent's next chunk, or a child
forked inside it), so a longest-common-prefix match against finished sequences finds their KV; only the tokens
after the match are prefilled. An entry whose tokens are a prefix of a newer entry is dropped as redundant.
A LATR rollout keeps hundreds of entries and looks them up once per request, so a lookup compares the query
with every entry in one array operation over a padded [rows, tokens] matrix kept beside the entries (rows
reused after a drop) instead of one comparison per entry; the LRU order lives in a recency stamp per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from latr_sglang.engines.ragged_model import KVBuffer


@dataclass
class CacheEntry:
    tokens: np.ndarray  # int64 [n]; kv.length <= n (the last sampled token has no KV yet)
    kv: KVBuffer


class PrefixCache:
    def __init__(self, max_tokens: int) -> None:
        if max_tokens < 0:
            raise ValueError(f"max_tokens={max_tokens} must be >= 0")
        self.max_tokens = max_tokens
        self._entries: dict[int, CacheEntry] = {}
        self._next_id = 0
        self.held_positions = 0  # KV positions the entries hold: the memory bound
        # the match index: row r holds one entry's tokens (-1 pads: token ids are >= 0, pads never match)
        self._row_of: dict[int, int] = {}
        self._id_of_row: list[int] = []
        self._tokens = np.full((0, 0), -1, dtype=np.int64)  # [rows, width]
        self._kv_lengths = np.zeros(0, dtype=np.int64)  # [rows]
        self._alive = np.zeros(0, dtype=bool)  # [rows]
        self._stamp = np.zeros(0, dtype=np.int64)  # [rows] last use: the LRU order (eviction, ties)
        self._clock = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _touch(self, entry_id: int) -> None:
        self._clock += 1
        self._stamp[self._row_of[entry_id]] = self._clock

    def _shared_lengths(self, tokens: np.ndarray) -> np.ndarray:
        """[rows] each row's common prefix length with `tokens` (dead rows: that of their old tokens)."""
        n = min(self._tokens.shape[1], len(tokens))
        differs = self._tokens[:, :n] != np.asarray(tokens[:n], dtype=np.int64)[None]  # [rows, n]
        first = differs.argmax(axis=1)  # the first difference, or 0 where there is none
        return np.where(differs[np.arange(len(first)), first], first, n)

    def _in_lru_order(self, rows: np.ndarray) -> np.ndarray:
        return rows[np.argsort(self._stamp[rows], kind="stable")]

    def match(self, tokens: np.ndarray) -> tuple[CacheEntry | None, int]:
        """The entry sharing the longest usable KV prefix with `tokens`, and that length (of equals, the least
        recently used)."""
        if not self._entries:
            return None, 0
        usable = np.where(self._alive, np.minimum(self._shared_lengths(tokens), self._kv_lengths), 0)
        best_len = int(usable.max())
        if best_len <= 0:
            return None, 0
        row = int(self._in_lru_order(np.flatnonzero(usable == best_len))[0])
        entry_id = self._id_of_row[row]
        self._touch(entry_id)
        return self._entries[entry_id], best_len

    def insert(self, tokens: np.ndarray, kv: KVBuffer) -> None:
        if self.max_tokens == 0 or kv.length == 0:
            return
        if self._entries:
            shared, kv_lengths = self._shared_lengths(tokens), self._kv_lengths
            redundant = self._alive & (shared >= kv_lengths) & (kv.length >= kv_lengths)  # the new one serves
            covered = self._alive & (shared >= kv.length) & (kv_lengths >= kv.length)  # an old one serves
            for row in self._in_lru_order(np.flatnonzero(redundant | covered)):
                if redundant[row]:
                    self._drop(self._id_of_row[row])
                else:
                    self._touch(self._id_of_row[row])
                    return
        entry_id = self._next_id
        self._next_id += 1
        self._entries[entry_id] = CacheEntry(tokens, kv)
        self._add_row(entry_id, tokens, kv.length)
        self.held_positions += kv.length
        while self.held_positions > self.max_tokens and self._entries:  # evict the least recently used
            oldest = int(np.where(self._alive, self._stamp, np.iinfo(np.int64).max).argmin())
            self._drop(self._id_of_row[oldest])

    def _add_row(self, entry_id: int, tokens: np.ndarray, kv_length: int) -> None:
        free = np.flatnonzero(~self._alive)
        rows, width = self._tokens.shape
        if len(free):
            row = int(free[0])
        else:  # grow by half, at least 16 rows
            row, extra = rows, max(16, rows // 2)
            self._tokens = np.vstack([self._tokens, np.full((extra, width), -1, dtype=np.int64)])
            self._kv_lengths = np.concatenate([self._kv_lengths, np.zeros(extra, dtype=np.int64)])
            self._alive = np.concatenate([self._alive, np.zeros(extra, dtype=bool)])
            self._stamp = np.concatenate([self._stamp, np.zeros(extra, dtype=np.int64)])
            self._id_of_row += [-1] * extra
        if len(tokens) > self._tokens.shape[1]:
            grow = max(len(tokens), 2 * self._tokens.shape[1]) - self._tokens.shape[1]
            self._tokens = np.pad(self._tokens, ((0, 0), (0, grow)), constant_values=-1)
        self._tokens[row] = -1
        self._tokens[row, : len(tokens)] = tokens
        self._kv_lengths[row], self._alive[row] = kv_length, True
        self._row_of[entry_id], self._id_of_row[row] = row, entry_id
        self._clock += 1
        self._stamp[row] = self._clock

    def _drop(self, entry_id: int) -> None:
        entry = self._entries.pop(entry_id)
        self.held_positions -= entry.kv.length
        self._alive[self._row_of.pop(entry_id)] = False

    def clear(self) -> None:
        self._entries.clear()
        self.held_positions = 0
        self._row_of.clear()
        self._alive[:] = False
