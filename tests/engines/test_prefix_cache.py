import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latr_sglang.engines.prefix_cache import PrefixCache
from latr_sglang.engines.ragged_model import KVBuffer


def common_prefix_len(a, b) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


class ScanCache:
    """The cache's rules as a plain scan over the entries in LRU order (the oracle)."""

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens, self.entries = max_tokens, []  # [(tokens, kv_length)], oldest first

    def match(self, tokens):
        best, best_len = None, 0
        for i, (t, kv) in enumerate(self.entries):
            usable = min(common_prefix_len(t, tokens), kv)
            if usable > best_len:
                best, best_len = i, usable
        if best is None:
            return None, 0
        self.entries.append(self.entries.pop(best))
        return self.entries[-1][0], best_len

    def insert(self, tokens, kv: int) -> None:
        if self.max_tokens == 0 or kv == 0:
            return
        for entry in list(self.entries):
            t, e_kv = entry
            shared = common_prefix_len(t, tokens)
            if shared >= e_kv and kv >= e_kv:
                self.entries.remove(entry)
            elif shared >= kv and e_kv >= kv:
                self.entries.remove(entry)
                self.entries.append(entry)
                return
        self.entries.append((list(tokens), kv))
        while sum(e for _, e in self.entries) > self.max_tokens and self.entries:
            self.entries.pop(0)


def _kv(length: int) -> KVBuffer:
    return KVBuffer(torch.zeros(1, 2, 1, length, 2))  # [layers, 2, kv_heads, length, d]


def test_match_is_limited_by_the_entry_kv_length():
    cache = PrefixCache(max_tokens=100)
    cache.insert(np.array([1, 2, 3, 4, 5]), _kv(4))  # last sampled token has no KV
    entry, usable = cache.match(np.array([1, 2, 3, 4, 5, 6]))
    assert entry is not None and usable == 4


def test_a_continuation_replaces_the_entry_it_extends():
    cache = PrefixCache(max_tokens=100)
    cache.insert(np.array([1, 2, 3]), _kv(2))
    cache.insert(np.array([1, 2, 3, 4, 5]), _kv(4))
    assert len(cache) == 1
    cache.insert(np.array([1, 2, 9, 8]), _kv(3))  # a fork with KV of its own: kept beside its parent
    assert len(cache) == 2
    cache.insert(np.array([1, 2]), _kv(1))  # already covered
    assert len(cache) == 2


def test_lru_eviction_respects_the_memory_bound():
    cache = PrefixCache(max_tokens=10)
    for i in range(5):
        cache.insert(np.array([100 + i, 1, 2, 3]), _kv(3))
    assert cache.held_positions == 9
    assert len(cache) == 3
    assert cache.match(np.array([104, 1, 2, 3]))[1] == 3  # newest kept
    assert cache.match(np.array([100, 1, 2, 3]))[1] == 0  # oldest evicted


@settings(max_examples=60, deadline=None)
@given(
    entries=st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=8), min_size=1, max_size=6),
    query=st.lists(st.integers(0, 3), min_size=1, max_size=10),
)
def test_match_finds_the_longest_usable_prefix(entries, query):
    cache = PrefixCache(max_tokens=10_000)
    for tokens in entries:
        cache.insert(np.array(tokens), _kv(len(tokens) - 1 if len(tokens) > 1 else 1))
    q = np.array(query)
    _, usable = cache.match(q)
    best = max(min(common_prefix_len(np.array(t), q), max(len(t) - 1, 1)) for t in entries)
    assert usable == best


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.booleans(),  # insert (True) or match
            st.lists(st.integers(0, 2), min_size=1, max_size=9),
            st.integers(0, 9),  # the entry's KV length (capped at its token count)
        ),
        min_size=1,
        max_size=40,
    ),
    max_tokens=st.sampled_from([0, 6, 15, 1_000]),
)
def test_the_array_index_keeps_the_scan_rules(ops, max_tokens):
    """Matches (which entry, how long), redundancy drops, LRU order and eviction equal a plain scan's, over
    random interleavings of inserts and matches; rows are reused after drops."""
    cache, oracle = PrefixCache(max_tokens), ScanCache(max_tokens)
    for is_insert, tokens, kv in ops:
        if is_insert:
            kv = min(kv, len(tokens))
            cache.insert(np.array(tokens), _kv(kv) if kv else KVBuffer(torch.zeros(1, 2, 1, 0, 2)))
            oracle.insert(tokens, kv)
        else:
            entry, usable = cache.match(np.array(tokens))
            want_tokens, want = oracle.match(tokens)
            assert usable == want
            assert (entry is None) == (want_tokens is None)
            if entry is not None:
                assert entry.tokens.tolist() == want_tokens
        assert len(cache) == len(oracle.entries)
        assert cache.held_positions == sum(e for _, e in oracle.entries)
