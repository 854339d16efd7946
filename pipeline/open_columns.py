"""A full snapshot of the join state in columns (kind ``COLUMNS`` of :mod:`banditloop.pipeline.join_state`).

The open impressions of an :class:`~banditloop.pipeline.open_store.OpenStore` as written: each column
of the live rows as raw little-endian bytes (times, rewards, propensities, digests, counts, arm codes,
flags, the vector slab, the fixed-width id rows) in one msgpack body, and what only a few rows have
(long ids, joined feedback ids, contexts not featurized, shared vectors) by row number. Writing it
builds no object per impression (when every slot is live, the columns are written without a copy),
and reading it fills a store's columns directly.

>>> from banditloop.pipeline.open_store import CLICKED, CLOSED, LIVE, OpenImpression, OpenStore
>>> store = OpenStore()
>>> s = store.add("i1", "e1", 5.0, "a", 0.5, 3, 9); store.put_vectors(s, 0, bytes(16), None)
>>> back = OpenStore(); load(back, msgspec.msgpack.decode(msgspec.msgpack.encode(columns(store, [], 1.0, {})),
...                                                      type=ColumnsState))
>>> back.plain(back.find("i1")) == store.plain(s)
True
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import msgspec
import numpy as np

from banditloop.core.events import Click, Conversion
from banditloop.pipeline.open_store import CLICKED, CLOSED, LIVE, OpenImpression, OpenStore

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
    columns_ = {}
    for name, code in _COLUMNS:
        column = array(code)
        column.frombytes(getattr(state, name))
        if len(column) != n:
            raise ValueError(f"join state column {name} has {len(column)} rows, not {n}")
        columns_[name] = column
    xs = array("d")
    xs.frombytes(state.xs)
    _fill(store, state, columns_, bytearray(state.ids), bytearray(state.event_ids), xs)


#: the per-row columns of a store: name, ``array`` type code
_COLUMNS = (("ts", "d"), ("applied", "d"), ("value_sum", "d"), ("propensity", "d"), ("digest", "q"),
            ("conversions", "i"), ("candidates", "i"), ("arm", "i"), ("flags", "B"))


def _fill(store: OpenStore, state: ColumnsState | ColumnsHead, columns_: dict[str, array], ids: bytearray,
          event_ids: bytearray, xs: array) -> None:
    """Put the rows read (``columns_``, the id rows, the vector slab) and ``state``'s side dicts in ``store``."""
    n = state.n
    for name, size, width in (("ids", len(ids), state.id_width), ("event ids", len(event_ids), state.event_width),
                              ("vectors", 8 * len(xs), 8 * state.dx)):
        if size != n * width:
            raise ValueError(f"join state {name} hold {size} bytes, not {n} rows of {width}")
    for name, column in columns_.items():
        setattr(store, name, column)
    store.gen = array("I", bytes(4 * n))
    store.arms = [sys.intern(a) for a in state.arms]
    store._arm_code = {a: i for i, a in enumerate(store.arms)}
    for arena, width, data, long in ((store.ids, state.id_width, ids, state.long_ids),
                                     (store.event_ids, state.event_width, event_ids, state.long_event_ids)):
        arena.width, arena.data, arena.long = width, data, dict(long)
    store.dx = state.dx
    store.xs = xs
    store._zero_x = bytes(8 * state.dx)
    store.odd_x, store.zs = dict(state.odd_x), dict(state.zs)
    store.contexts = dict(state.contexts)
    store.seen = {r: (tuple(a), tuple(b)) for r, (a, b) in state.seen.items()}
    store.free, store.live = [], n
    hashes = np.empty(n, dtype=np.int64)
    for a in range(0, n, 65536):  # the ids decoded a block at a time
        b = min(n, a + 65536)
        hashes[a:b] = np.fromiter(map(hash, store.ids.many(np.arange(a, b))), dtype=np.int64, count=b - a)
    size = 1024
    while size < 2 * n + 2:
        size *= 2
    store._table_init(size)
    store._place(hashes, np.arange(n, dtype=np.int64))


# -- a full snapshot in parts (kind ``PARTS``): a head, then blocks of rows written one at a time ------------
#: about this many bytes of rows per part (a few MB: what a checkpoint holds in memory at once)
PART_BYTES = 4 << 20


class ColumnsHead(msgspec.Struct, array_like=True):
    """What a full snapshot in parts holds besides its rows: :class:`ColumnsState` without the columns, and
    how the ``n`` rows are cut into ``parts`` parts (:class:`ColumnsPart`) of ``rows_per_part`` rows."""

    n: int
    parts: int
    rows_per_part: int
    id_width: int
    long_ids: dict[int, str]
    event_width: int
    long_event_ids: dict[int, str]
    arms: list[str]
    dx: int
    odd_x: dict[int, bytes]
    zs: dict[int, bytes]
    contexts: dict[int, tuple[dict[str, float | str], dict[str, float | str] | None]]
    seen: dict[int, tuple[list[str], list[int]]]
    pending: list[Click | Conversion]
    watermark: float | None
    counters: dict[str, int]


class ColumnsPart(msgspec.Struct, array_like=True):
    """Rows ``start`` to ``start + n`` of a full snapshot in parts, each column as raw little-endian bytes."""

    start: int
    n: int
    ids: bytes
    event_ids: bytes
    ts: bytes
    applied: bytes
    value_sum: bytes
    propensity: bytes
    digest: bytes
    conversions: bytes
    candidates: bytes
    arm: bytes
    flags: bytes
    xs: bytes


def in_parts(store: OpenStore, pending: list[Any], watermark: float | None, counters: dict[str, int],
             part_bytes: int = PART_BYTES) -> tuple[ColumnsHead, Callable[[], Iterator[ColumnsPart]]]:
    """The store's live rows as a head and a function yielding its parts, each built when it is reached
    (encode and write each before the next; the store must not change until the last is written).

    >>> from banditloop.pipeline.open_store import CLICKED, CLOSED, LIVE, OpenImpression, OpenStore
    >>> store = OpenStore()
    >>> for i in range(5): s = store.add(f"i{i}", f"e{i}", float(i), "a", 0.5, 3, 9)
    >>> head, parts = in_parts(store, [], None, {}, part_bytes=200)
    >>> head.n, head.parts, [p.n for p in parts()]
    (5, 3, [2, 2, 1])
    >>> back = OpenStore(); load_parts(back, head, parts())
    >>> [back.plain(back.find(f"i{i}")) == store.plain(store.find(f"i{i}")) for i in range(5)]
    [True, True, True, True, True]
    """
    slots = store.slots()
    n = len(slots)
    whole = n == len(store.ts)
    row = {int(s): i for i, s in enumerate(slots.tolist())} if not whole else None

    def side(d: dict[int, Any]) -> dict[int, Any]:
        return dict(d) if row is None else {row[s]: v for s, v in d.items() if s in row}

    iw, ew, dx = store.ids.width, store.event_ids.width, store.dx
    per_row = iw + ew + sum(array(code).itemsize for _, code in _COLUMNS) + 8 * dx
    per_part = max(1, part_bytes // per_row)
    head = ColumnsHead(n, -(-n // per_part), per_part, iw, side(store.ids.long), ew, side(store.event_ids.long),
                       list(store.arms), dx, side(store.odd_x), side(store.zs), side(store.contexts),
                       {r: (list(a), list(b)) for r, (a, b) in side(store.seen).items()},
                       pending, watermark, counters)

    def take(data: Any, width: int, dtype: Any, a: int, b: int) -> bytes:
        """Rows a..b of a column (``width`` items of ``dtype`` per row), copied: a view kept by a part that
        was not written (a failed transaction) would stop the store's columns from growing."""
        if whole:
            size = width * np.dtype(dtype).itemsize
            with memoryview(data) as view, view.cast("B") as raw:
                return bytes(raw[a * size:b * size])
        flat = np.frombuffer(data, dtype=dtype)
        return (flat.reshape(-1, width) if width != 1 else flat)[slots[a:b]].tobytes()

    def parts() -> Iterator[ColumnsPart]:
        for a in range(0, n, per_part):
            b = min(n, a + per_part)
            c = {name: take(getattr(store, name), 1, code, a, b) for name, code in _COLUMNS}
            yield ColumnsPart(a, b - a, take(store.ids.data, iw, np.uint8, a, b),
                              take(store.event_ids.data, ew, np.uint8, a, b), c["ts"], c["applied"],
                              c["value_sum"], c["propensity"], c["digest"], c["conversions"], c["candidates"],
                              c["arm"], c["flags"], take(store.xs, dx, np.float64, a, b) if dx else b"")

    return head, parts


def load_parts(store: OpenStore, head: ColumnsHead, parts: Iterable[ColumnsPart]) -> None:
    """Fill an empty ``store`` with the rows of a snapshot in parts (``parts`` in order, read one at a time)."""
    columns_ = {name: array(code) for name, code in _COLUMNS}
    ids, event_ids, xs = bytearray(), bytearray(), array("d")
    rows = count = 0
    for part in parts:
        if part.start != rows or part.n <= 0:
            raise ValueError(f"join state part {count} holds rows from {part.start} ({part.n}), not from {rows}")
        for name, column in columns_.items():
            column.frombytes(getattr(part, name))
            if len(column) != rows + part.n:
                raise ValueError(f"join state part {count}: column {name} does not hold {part.n} rows")
        ids += part.ids
        event_ids += part.event_ids
        xs.frombytes(part.xs)
        rows += part.n
        count += 1
    if rows != head.n or count != head.parts:
        raise ValueError(f"join state parts hold {rows} rows in {count} parts, not {head.n} in {head.parts}")
    _fill(store, head, columns_, ids, event_ids, xs)


def upsert_many(store: OpenStore, imps: Sequence[OpenImpression]) -> None:
    """Put checkpointed open impressions (a delta's upserts) in ``store``, each replacing the open
    impression with its id: as removing it and loading the new record would (the freed slot is the one
    taken again), the impressions already open overwritten in place, their columns a batch at a time;
    the others loaded one by one, in order (they take the free slots as they would one at a time)."""
    find, slots, existing, new = store.find, [], [], []
    for imp in imps:
        s = find(imp.impression_id)
        if s >= 0:
            slots.append(s)
            existing.append(imp)
        else:
            new.append(imp)
    if existing:
        _overwrite(store, slots, existing)
    intern = sys.intern
    for imp in new:
        imp.arm = intern(imp.arm)
        store.load(imp)


def _overwrite(store: OpenStore, slots: list[int], imps: list[OpenImpression]) -> None:
    sl = np.array(slots, dtype=np.int64)
    codes = store._arm_code
    for imp in imps:
        if imp.arm not in codes:
            codes[imp.arm] = len(store.arms)
            store.arms.append(sys.intern(imp.arm))
    for name, dtype, values in (
            ("ts", np.float64, [i.ts for i in imps]), ("applied", np.float64, [i.applied for i in imps]),
            ("value_sum", np.float64, [i.value_sum for i in imps]),
            ("propensity", np.float64, [math.nan if i.propensity is None else i.propensity for i in imps]),
            ("digest", np.int64, [i.digest for i in imps]), ("conversions", np.int32, [i.conversions for i in imps]),
            ("candidates", np.int32, [i.candidates for i in imps]), ("arm", np.int32, [codes[i.arm] for i in imps]),
            ("flags", np.uint8, [LIVE | (CLICKED if i.clicked else 0) | (CLOSED if i.closed else 0) for i in imps])):
        column = np.frombuffer(getattr(store, name), dtype=dtype)
        column[sl] = values
        del column
    for s, imp in zip(slots, imps, strict=True):
        store.event_ids.put(s, imp.event_id)
        for side in (store.contexts, store.seen, store.zs, store.odd_x):
            if side:
                side.pop(s, None)
        if imp.seen or imp.seen_digests:
            store.seen[s] = (imp.seen, imp.seen_digests)
        if imp.x is not None:
            store.put_vectors(s, store.gen[s], imp.x, imp.z)
        else:
            store.contexts[s] = (imp.context, imp.arm_features)
