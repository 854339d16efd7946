"""Bounded caches keyed by a candidate tuple (row indexes, score blocks), shared by the learners.

A request path usually scores the same candidate list again and again, so learners cache what they
derive from it. Big candidate sets are rarely repeated exactly and are not kept; a full cache starts
over rather than tracking recency (a dict clear is cheaper than an LRU on this path).

>>> cache: dict = {}
>>> cache_put(cache, ("a", "b"), 1)
>>> cache
{('a', 'b'): 1}
"""

from __future__ import annotations

from typing import Any

MAX_ENTRIES = 1024
MAX_CANDIDATES = 512


def cache_put(cache: dict[tuple[str, ...], Any], key: tuple[str, ...], value: Any) -> None:
    """Remember ``value`` for ``key`` unless the key is too long to be worth it; empty a full cache."""
    if len(key) <= MAX_CANDIDATES:
        if len(cache) >= MAX_ENTRIES:
            cache.clear()
        cache[key] = value
