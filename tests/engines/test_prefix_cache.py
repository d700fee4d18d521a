import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latr_sglang.engines.prefix_cache import PrefixCache, common_prefix_len
from latr_sglang.engines.ragged_model import KVBuffer


def _kv(length: int) -> KVBuffer:
    return KVBuffer(torch.zeros(1, 2, 1, length, 2))  # [layers, 2, kv_heads, length, d]


def test_common_prefix_len():
    a = np.array([1, 2, 3, 4])
    assert common_prefix_len(a, np.array([1, 2, 9])) == 2
    assert common_prefix_len(a, np.array([1, 2])) == 2
    assert common_prefix_len(a, np.array([5])) == 0
    assert common_prefix_len(a, np.array([], dtype=np.int64)) == 0


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
