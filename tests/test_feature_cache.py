"""The featurizer's hashing cache is an LRU bounded in bytes (issue 13: unique feature strings grew a
scorer from 149 MB to 1.22 GB), and caching never changes a vector."""

from __future__ import annotations

import random
import tracemalloc

import numpy as np
import pytest

from banditloop.core.features import MAX_CACHED_KEY_CHARS, FeatureSpec, Featurizer


def test_unique_strings_stay_within_the_byte_budget_measured_by_the_allocator():
    budget = 2 * 1024 * 1024
    featurizer = Featurizer(FeatureSpec(dim=32), cache_bytes=budget)
    featurizer.values({"warm": "up"})
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(60_000):  # ~10 MB of distinct keys if all were kept; nothing here holds them
            featurizer.values({"user": f"user-{i:012d}-{'x' * (i % 200)}"})
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    info = featurizer.cache_info()
    assert info["bytes"] <= budget and info["evictions"] > 0
    assert grown <= budget * 1.1, f"the cache holds {grown} bytes for a budget of {budget}"


def test_least_recently_used_keys_go_first():
    featurizer = Featurizer(FeatureSpec(dim=16), cache_bytes=0)
    featurizer.values({"hot": "1"})
    entry = featurizer.cache_info()["bytes"]
    assert entry == 0  # a zero budget caches nothing
    featurizer.set_cache_bytes(10_000)
    featurizer.values({"hot": "1"})
    for i in range(500):
        featurizer.values({"hot": "1", "cold": f"{i:04d}"})  # "hot=1" is used again before every new key
    keys = list(featurizer._cache)
    assert "hot=1" in keys and "cold=0000" not in keys and "cold=0499" in keys
    assert featurizer.cache_info()["bytes"] <= 10_000
    featurizer.set_cache_bytes(500)  # lowering the budget evicts at once, oldest first
    assert featurizer.cache_info()["bytes"] <= 500 and "cold=0499" in featurizer._cache


def test_cached_and_uncached_vectors_are_identical():
    rng = random.Random(3)
    spec = FeatureSpec(dim=24, numeric=("age",), interactions=(("country", "device"),))
    cached, uncached = Featurizer(spec, cache_bytes=4096), Featurizer(spec, cache_bytes=0)
    rows = [{"age": rng.random(), "country": rng.choice("abcdef"), "device": rng.choice("xyz"),
             "n": rng.uniform(-5, 5), "long": "L" * rng.choice((10, MAX_CACHED_KEY_CHARS + 50)),
             "u": f"user-{rng.randrange(10_000)}"} for _ in range(3000)]
    for row in rows * 2:  # second pass: hits, and keys evicted and hashed again
        assert cached.values(row) == uncached.values(row)
    assert np.array_equal(cached.transform_many(rows), uncached.transform_many(rows))
    assert not any(len(key) > MAX_CACHED_KEY_CHARS for key in cached._cache)
    with pytest.raises(ValueError):
        cached.set_cache_bytes(-1)
