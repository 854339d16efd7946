"""A full snapshot of the join state in columns (kind ``COLUMNS`` of :mod:`banditloop.pipeline.join_state`).

The open impressions of an :class:`~banditloop.pipeline.open_store.OpenStore` as written: each column
of the live rows as raw little-endian bytes (times, rewards, propensities, digests, counts, arm codes,
flags, the vector slab, the fixed-width id rows) in one msgpack body, and what only a few rows have
(long ids, joined feedback ids, contexts not featurized, shared vectors) by row number. Writing it
builds no object per impression (when every slot is live, the columns are written without a copy),
and reading it fills a store's columns directly.

>>> from banditloop.pipeline.open_store import OpenStore
>>> store = OpenStore()
>>> s = store.add("i1", "e1", 5.0, "a", 0.5, 3, 9); store.put_vectors(s, 0, bytes(16), None)
>>> back = OpenStore(); load(back, msgspec.msgpack.decode(msgspec.msgpack.encode(columns(store, [], 1.0, {})),
...                                                      type=ColumnsState))
>>> back.plain(back.find("i1")) == store.plain(s)
True
"""

from __future__ import annotations

import sys
from array import array
from typing import Any

import msgspec
import numpy as np

from banditloop.core.events import Click, Conversion
from banditloop.pipeline.open_store import OpenStore

_SIDE = dict[int, Any]


class ColumnsState(msgspec.Struct, array_like=True):
    """The body of a ``COLUMNS`` join state (see the module docstring); row ``i`` is the ``i``-th live slot."""

    n: int
    id_width: int
    ids: bytes
    long_ids: dict[int, str]
    event_width: int
    event_ids: bytes
    long_event_ids: dict[int, str]
    ts: bytes
    applied: bytes
    value_sum: bytes
    propensity: bytes
    digest: bytes
    conversions: bytes
    candidates: bytes
    arms: list[str]
    arm: bytes
    flags: bytes
    dx: int
    xs: bytes
    odd_x: dict[int, bytes]
    zs: dict[int, bytes]
    contexts: dict[int, tuple[dict[str, float | str], dict[str, float | str] | None]]
    seen: dict[int, tuple[list[str], list[int]]]
    pending: list[Click | Conversion]
    watermark: float | None
    counters: dict[str, int]


def columns(store: OpenStore, pending: list[Any], watermark: float | None, counters: dict[str, int]) -> ColumnsState:
    """The store's live rows as a :class:`ColumnsState` (encode it at once: it may view the store)."""
    slots = store.slots()
    n = len(slots)
    whole = n == len(store.ts)  # every slot live (no eviction yet): the columns as they are
    row = {int(s): i for i, s in enumerate(slots.tolist())} if not whole else None

    def col(arr: array, dtype: Any) -> Any:
        return memoryview(arr) if whole else np.frombuffer(arr, dtype=dtype)[slots].tobytes()

    def rows(data: bytearray, width: int) -> Any:
        if whole:
            return memoryview(data)[:n * width]
        return np.frombuffer(bytes(data), dtype=np.uint8).reshape(-1, width)[slots].tobytes() if n else b""

    def side(d: dict[int, Any]) -> dict[int, Any]:
        return dict(d) if row is None else {row[s]: v for s, v in d.items() if s in row}

    xs: Any
    if store.dx:
        xs = memoryview(store.xs) if whole else \
            np.frombuffer(store.xs, dtype=np.float64).reshape(-1, store.dx)[slots].tobytes()
    else:
        xs = b""
    return ColumnsState(
        n, store.ids.width, rows(store.ids.data, store.ids.width), side(store.ids.long),
        store.event_ids.width, rows(store.event_ids.data, store.event_ids.width), side(store.event_ids.long),
        col(store.ts, np.float64), col(store.applied, np.float64), col(store.value_sum, np.float64),
        col(store.propensity, np.float64), col(store.digest, np.int64), col(store.conversions, np.int32),
        col(store.candidates, np.int32), list(store.arms), col(store.arm, np.int32), col(store.flags, np.uint8),
        store.dx, xs, side(store.odd_x), side(store.zs), side(store.contexts),
        {r: (list(a), list(b)) for r, (a, b) in side(store.seen).items()},
        pending, watermark, counters)


def load(store: OpenStore, state: ColumnsState) -> None:
    """Fill an empty ``store`` with the rows of ``state``."""
    n = state.n
    for name, code in (("ts", "d"), ("applied", "d"), ("value_sum", "d"), ("propensity", "d"), ("digest", "q"),
                       ("conversions", "i"), ("candidates", "i"), ("arm", "i"), ("flags", "B")):
        column = array(code)
        column.frombytes(getattr(state, name))
        if len(column) != n:
            raise ValueError(f"join state column {name} has {len(column)} rows, not {n}")
        setattr(store, name, column)
    for name, size, width in (("ids", len(state.ids), state.id_width), ("event ids", len(state.event_ids),
                              state.event_width), ("vectors", len(state.xs), 8 * state.dx)):
        if size != n * width:
            raise ValueError(f"join state {name} hold {size} bytes, not {n} rows of {width}")
    store.gen = array("I", bytes(4 * n))
    store.arms = [sys.intern(a) for a in state.arms]
    store._arm_code = {a: i for i, a in enumerate(store.arms)}
    for arena, width, data, long in ((store.ids, state.id_width, state.ids, state.long_ids),
                                     (store.event_ids, state.event_width, state.event_ids, state.long_event_ids)):
        arena.width, arena.data, arena.long = width, bytearray(data), dict(long)
    store.dx = state.dx
    store.xs = array("d")
    store.xs.frombytes(state.xs)
    store._zero_x = bytes(8 * state.dx)
    store.odd_x, store.zs = dict(state.odd_x), dict(state.zs)
    store.contexts = dict(state.contexts)
    store.seen = {r: (tuple(a), tuple(b)) for r, (a, b) in state.seen.items()}
    store.free, store.live = [], n
    get = store.ids.get
    hashes = np.fromiter((hash(get(i)) for i in range(n)), dtype=np.int64, count=n)
    size = 1024
    while size < 2 * n + 2:
        size *= 2
    store._table_init(size)
    store._place(hashes, np.arange(n, dtype=np.int64))
