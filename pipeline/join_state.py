"""The join state as checkpointed: full snapshots, and deltas chained to them.

Every checkpoint used to export the whole join state. Now a checkpoint writes a *delta* when it can:
the open impressions opened or changed since the previous checkpoint of the shard (upserts, whole
records) and those evicted since (deletes, by id), with the held feedback, watermark and counters
in full (they are small). A delta names its *base*, the version it applies on top of; restoring a
version reads the newest full snapshot of its chain and applies the deltas in order.

A *full* snapshot is written instead (compaction) when there is no base (a new run, a replaced
model), after :attr:`DeltaPolicy.full_every` deltas in a row, or when the deltas since the last full
snapshot together with this one hold more entries than :attr:`DeltaPolicy.max_churn` × the open
impressions (and more than :attr:`DeltaPolicy.min_churn`): restoring then reads at most about
``1 + max_churn`` times the live state.

Format: a 25-byte header (magic ``BLJ2``, kind, base version or -1, chain depth, churn) and a
msgpack body. A checkpoint writes a full snapshot in columns and in *parts* (kind ``PARTS``,
:mod:`banditloop.pipeline.open_columns`): the stored join state is a small head (everything but the
rows), and the rows follow as parts of a few MB each, built, encoded and written one at a time in the
checkpoint's transaction (:mod:`banditloop.pipeline.join_parts`), so a checkpoint of a million open
impressions never holds more than one part in memory besides the join itself. :meth:`export_full`
still builds a whole snapshot in columns as one value (kind ``COLUMNS``, also how checkpoints were
written before parts); it, full snapshots written as lists of open impressions (kind ``FULL``) and
join states written before the header existed (JSON) still read as full snapshots.
"""

from __future__ import annotations

import heapq
import struct
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from banditloop.core.events import Click, Conversion

if TYPE_CHECKING:
    from banditloop.pipeline.open_store import OpenStore

MAGIC = b"BLJ2"
#: a full snapshot as a list of open impressions (read, no longer written), a delta, a columnar full snapshot,
#: a columnar full snapshot in parts (its head; the rows in parts beside it)
FULL, DELTA, COLUMNS, PARTS = 0, 1, 2, 3
_HEADER = struct.Struct(">4sBqIQ")


@dataclass(frozen=True)
class DeltaPolicy:
    """When a checkpoint writes a full snapshot of the join state instead of a delta (compaction).

    ``full_every=0`` writes a full snapshot every time (no deltas).

    >>> DeltaPolicy().full_due(depth=3, churn=10, changes=10, live=1_000_000)
    False
    >>> DeltaPolicy(full_every=4).full_due(depth=3, churn=10, changes=10, live=100)
    True
    """

    full_every: int = 32
    max_churn: float = 0.5
    min_churn: int = 4096

    def full_due(self, *, depth: int, churn: int, changes: int, live: int) -> bool:
        if self.full_every <= 0 or depth + 1 >= self.full_every:
            return True
        total = churn + changes
        return total > self.min_churn and total > self.max_churn * live


@dataclass(frozen=True)
class Header:
    """What a stored join state is: ``kind`` FULL or DELTA, the ``base`` version a delta applies to,
    its ``depth`` (deltas since the full snapshot, itself included) and ``churn`` (their entries)."""

    kind: int
    base: int | None
    depth: int
    churn: int


def read_header(data: bytes) -> Header | None:
    """The header of a stored join state; None for a legacy (JSON) state, which is a full snapshot.

    >>> read_header(b'{"open": []}') is None
    True
    >>> read_header(encode_header(DELTA, 7, 2, 40)).base
    7
    """
    if not data.startswith(MAGIC):
        return None
    if len(data) < _HEADER.size:
        raise ValueError("truncated join state header")
    _, kind, base, depth, churn = _HEADER.unpack_from(data)
    if kind not in (FULL, DELTA, COLUMNS, PARTS) or (kind == DELTA) != (base >= 0):
        raise ValueError(f"bad join state header (kind {kind}, base {base})")
    return Header(kind, base if base >= 0 else None, depth, churn)


def encode_header(kind: int, base: int | None, depth: int, churn: int) -> bytes:
    return _HEADER.pack(MAGIC, kind, -1 if base is None else base, depth, churn)


_encoder = msgspec.msgpack.Encoder()


class JoinCodec:
    """Encodes and decodes the join state of an :class:`~banditloop.pipeline.join.EventJoin` whose open
    impressions are ``open_type`` (given by the join module, which this one does not import)."""

    def __init__(self, open_type: type) -> None:
        self.open_type = open_type
        fb = Click | Conversion
        opens: Any = list[open_type]  # type: ignore[valid-type]
        tail = [("pending", list[fb]), ("watermark", float | None), ("counters", dict[str, int])]
        self.full_type = msgspec.defstruct("FullJoinState", [("open", opens), *tail], array_like=True)
        self.delta_type = msgspec.defstruct("DeltaJoinState", [("upserts", opens), ("deletes", list[str]),
                                                               *tail], array_like=True)
        #: the JSON join state written before deltas (read as a full snapshot)
        self.legacy_type = msgspec.defstruct("LegacyJoinState", [("open", opens), *tail])
        self.full = msgspec.msgpack.Decoder(self.full_type)
        self.delta = msgspec.msgpack.Decoder(self.delta_type)
        self.legacy = msgspec.json.Decoder(self.legacy_type)

def export_full(join: Any) -> bytes:
    """The whole join state (a full snapshot, in columns), the header and body written into one buffer."""
    from banditloop.pipeline import open_columns  # (numpy: not for commands that only list models)

    join._export_seq = join._seq
    pending = [fb for held in join.pending.values() for fb in held]
    buffer = bytearray(encode_header(COLUMNS, None, 0, 0))
    _encoder.encode_into(open_columns.columns(join.store, pending, join.watermark, dict(join.counters)),
                         buffer, len(buffer))
    return buffer  # type: ignore[return-value]  # (bytes-like: stored as it is)


class Parted(bytes):
    """A join state stored in parts: these bytes are its head (kind ``PARTS``), :attr:`parts` gives the
    rest, in order (a new iterator each call); ``stored_bytes`` is set to the head and parts' size once
    written.

    >>> state = Parted(encode_header(PARTS, None, 0, 0)); state.parts = lambda: iter([b"a", b"b"])
    >>> read_header(state).kind == PARTS, list(state.parts())
    (True, [b'a', b'b'])
    """

    parts: Callable[[], Iterable[bytes]]
    stored_bytes: int | None = None


def export_parted(join: Any, part_bytes: int | None = None) -> Parted:
    """The whole join state as a full snapshot in parts (see the module docstring): each part is built
    and encoded when the iterator reaches it, so write every part before the join changes."""
    from banditloop.pipeline import open_columns  # (numpy: not for commands that only list models)

    join._export_seq = join._seq
    pending = [fb for held in join.pending.values() for fb in held]
    head, parts = open_columns.in_parts(join.store, pending, join.watermark, dict(join.counters),
                                        part_bytes or open_columns.PART_BYTES)
    out = Parted(encode_header(PARTS, None, 0, 0) + _encoder.encode(head))
    encode = _encoder.encode
    out.parts = lambda: (encode(part) for part in parts())
    return out


def export_rows(join: Any) -> bytes:
    """The whole join state as a ``FULL`` snapshot (a list of open impressions), as written before columns."""
    pending = [fb for held in join.pending.values() for fb in held]
    store = join.store
    body = _encoder.encode(join.codec.full_type([store.plain(s) for s in store], pending, join.watermark,
                                                dict(join.counters)))
    return encode_header(FULL, None, 0, 0) + body


def export_checkpoint(join: Any, base: int | None) -> bytes:
    """A delta on ``base`` (the version the join state was last saved as or restored from), or a
    full snapshot when there is no base or :class:`DeltaPolicy` says so."""
    changes = len(join._changed) + len(join._removed)
    if base is None or not join._tracking or join.delta_policy.full_due(
            depth=join._depth, churn=join._churn, changes=changes, live=len(join.store)):
        return export_parted(join)
    join._export_seq = join._seq
    store = join.store
    upserts = store.plain_many(list(join._changed))
    deletes = [i for i in join._removed if store.find(i) < 0]
    pending = [fb for held in join.pending.values() for fb in held]
    body = _encoder.encode(join.codec.delta_type(upserts, deletes, pending, join.watermark, dict(join.counters)))
    return encode_header(DELTA, base, join._depth + 1, join._churn + len(upserts) + len(deletes)) + body


def saved(join: Any, written: bytes | None) -> None:
    """``written`` (from the last export) is durable: forget the changes it holds."""
    cut = join._export_seq
    join._changed = {k: s for k, s in join._changed.items() if s > cut}
    join._removed = {k: s for k, s in join._removed.items() if s > cut}
    header = read_header(written) if written else None
    join._depth, join._churn = (header.depth, header.churn) if header is not None else (0, 0)
    join._tracking = True


def import_chain(join: Any, data: bytes, chain: Sequence[bytes] = ()) -> None:
    """Restore ``data`` (a full snapshot, or a delta preceded by its ``chain``, oldest first)."""
    import numpy as np

    from banditloop.pipeline import open_columns
    from banditloop.pipeline.open_store import CLOSED

    blobs = [*chain, data]
    first = read_header(blobs[0])
    codec = join.codec
    join.__post_init__()
    store = join.store
    state: Any
    if first is not None and first.kind == COLUMNS:
        state = msgspec.msgpack.decode(memoryview(blobs[0])[_HEADER.size:], type=open_columns.ColumnsState)
        open_columns.load(store, state)
    elif first is not None and first.kind == PARTS:
        parts = getattr(blobs[0], "parts", None)
        if parts is None:
            raise ValueError("the join state is stored in parts, and its parts were not read")
        state = msgspec.msgpack.decode(memoryview(blobs[0])[_HEADER.size:], type=open_columns.ColumnsHead)
        part_type = open_columns.ColumnsPart
        open_columns.load_parts(store, state, (msgspec.msgpack.decode(p, type=part_type) for p in parts()))
    elif first is None or first.kind == FULL:
        state = codec.legacy.decode(blobs[0]) if first is None else codec.full.decode(
            memoryview(blobs[0])[_HEADER.size:])
        _upsert(store, state.open)
    else:
        raise ValueError("the join state is a delta without the snapshot it applies to")
    pending, watermark, counters = state.pending, state.watermark, state.counters
    del state
    header = first
    for blob in blobs[1:]:
        header = read_header(blob)
        if header is None or header.kind != DELTA:
            raise ValueError("a join state chain continues with something other than a delta")
        delta = codec.delta.decode(memoryview(blob)[_HEADER.size:])
        find, remove = store.find, store.remove
        for imp_id in delta.deletes:
            slot = find(imp_id)
            if slot >= 0:
                remove(slot)
        open_columns.upsert_many(store, delta.upserts)
        pending, watermark, counters = delta.pending, delta.watermark, delta.counters
    join.watermark = watermark
    join.counters.update(counters)
    join._depth, join._churn = (header.depth, header.churn) if header is not None else (0, 0)
    join._tracking = True
    slots = store.slots()
    flags = np.frombuffer(store.flags, dtype=np.uint8)
    join.due.rebuild(np.frombuffer(store.ts, dtype=np.float64)[slots], slots,
                     np.frombuffer(store.gen, dtype=np.uint32)[slots], (flags[slots] & CLOSED) != 0)
    del flags
    for fb in pending:
        join.pending.setdefault(fb.impression_id, []).append(fb)
        join._pending_heap.append((fb.ts + join.config.clock_skew, fb.impression_id))
    heapq.heapify(join._pending_heap)


def _upsert(store: OpenStore, imps: Sequence[Any]) -> None:
    """Put checkpointed open impressions in the store (replacing one with the same id)."""
    intern = sys.intern
    for imp in imps:
        slot = store.find(imp.impression_id)
        if slot >= 0:
            store.remove(slot)
        imp.arm = intern(imp.arm)
        store.load(imp)
