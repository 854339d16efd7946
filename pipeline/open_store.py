"""The join's open impressions in columns: what :class:`~banditloop.pipeline.join.EventJoin` keeps per
impression until its windows close, without a Python object per impression. Each open impression
is a *slot*: a row of typed columns (``array.array``: time, reward so far, propensity, digest,
flags, ...), its context vector a row of one float64 slab, its impression and event ids
fixed-width rows of a byte arena, and its id found by a 64-bit open-addressing hash table
(Python's ``hash`` of the id, verified against the arena). Slots freed by evictions are reused; a
slot's *generation* tells a queued reference to an evicted impression from the one now in its slot.
What only a few impressions have (the event ids of joined feedback, a context not yet featurized,
shared vectors, ids too long for the arena) is kept in small dicts by slot.

The join and its sink see an impression as an :class:`OpenImpression` built from the columns when
needed (``ref``); what the join changes it writes back (``set_*``).

>>> store = OpenStore()
>>> slot = store.add("i1", "e1", 100.0, "ad-1", None, 0, 7)
>>> store.find("i1") == slot, store.find("nope"), store.id_of(slot), store.arm_of(slot)
(True, -1, 'i1', 'ad-1')
>>> store.remove(slot); store.find("i1"), len(store)
(-1, 0)
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import msgspec
import numpy as np

from banditloop.pipeline.open_ids import IdArena


class OpenImpression(msgspec.Struct, array_like=True, gc=False):
    """What the join keeps of an impression until its windows close (as checkpointed, and as its sink
    sees it; the join itself keeps it in an :class:`OpenStore`).

    ``gc=False``: not tracked by Python's cyclic garbage collector (its fields cannot form a cycle).
    """

    impression_id: str
    event_id: str
    ts: float
    arm: str
    context: dict[str, float | str]
    arm_features: dict[str, float | str] | None = None
    clicked: bool = False
    conversions: int = 0
    value_sum: float = 0.0
    applied: float = 0.0
    #: event ids of the feedback joined so far (a tuple: the shared empty one for most impressions)
    seen: tuple[str, ...] = ()
    #: the logging policy's propensity and the number of candidates (off-policy weighting, see
    #: ``banditloop.pipeline.model.LearnerSink``); defaults keep older join states readable
    propensity: float | None = None
    candidates: int = 0
    #: the feedback window closed (``JoinSink.on_close`` was called)
    closed: bool = False
    #: content digest of the impression (0: unknown, a state written before digests)
    digest: int = 0
    #: digest of each feedback in ``seen``, in order (shorter in older states: the first are unknown)
    seen_digests: tuple[int, ...] = ()
    #: the context (and shared) feature vectors as float64 bytes, stored by the sink at the opening;
    #: when set, the join drops ``context`` and ``arm_features`` (they are only needed to compute them)
    x: bytes | None = None
    z: bytes | None = None


class OpenRef(OpenImpression, gc=False):
    """An open impression as the join hands it to its sink: a copy of its row ``slot`` (generation ``gen``),
    through which the sink stores its vectors (:meth:`OpenStore.put_vectors`). Never encoded."""

    slot: int = -1
    gen: int = 0


_NO_CONTEXT: dict[str, float | str] = {}
_NO_SEEN: tuple[tuple[str, ...], tuple[int, ...]] = ((), ())
_NO_ROW: tuple[Any, Any] = (_NO_CONTEXT, None)

LIVE, CLICKED, CLOSED, HAS_X = 1, 2, 4, 8
_EMPTY, _GONE = -1, -2


class OpenStore:
    """Open impressions as columns (see the module docstring)."""

    def __init__(self) -> None:
        self.ts = array("d")
        self.applied = array("d")
        self.value_sum = array("d")
        self.propensity = array("d")  # NaN: none logged
        self.digest = array("q")
        self.conversions = array("i")
        self.candidates = array("i")
        self.arm = array("i")
        self.flags = array("B")
        self.gen = array("I")
        self.arms: list[str] = []
        self._arm_code: dict[str, int] = {}
        self.ids = IdArena()
        self.event_ids = IdArena()
        #: context vectors: slot ``s`` is ``xs[s*dx:(s+1)*dx]`` when flagged HAS_X (one width per store)
        self.dx = 0
        self.xs = array("d")
        self._zero_x = b""
        self.odd_x: dict[int, bytes] = {}  # vectors of another width than ``dx`` (never in practice)
        self.zs: dict[int, bytes] = {}
        #: (context, arm features) of impressions whose vectors the sink has not stored (yet)
        self.contexts: dict[int, tuple[Any, Any]] = {}
        #: (seen event ids, their digests) of impressions with joined feedback
        self.seen: dict[int, tuple[tuple[str, ...], tuple[int, ...]]] = {}
        self.free: list[int] = []
        self.live = 0
        self._table_init(1024)

    # -- the id table -------------------------------------------------------------------------------
    def _table_init(self, size: int) -> None:
        self._mask = size - 1
        self._hashes = array("q", bytes(8 * size))
        self._slots = array("i", [_EMPTY]) * size
        self._used = 0  # live entries and tombstones

    def find(self, key: str) -> int:
        """The slot of the open impression ``key``, or -1."""
        h = hash(key)
        mask, slots, hashes = self._mask, self._slots, self._hashes
        i = h & mask
        while True:
            s = slots[i]
            if s == _EMPTY:
                return -1
            if s >= 0 and hashes[i] == h and self.ids.equals(s, key):
                return s
            i = (i + 1) & mask

    def _rebuild(self) -> None:
        """A new table (twice the live entries at least, no tombstones), filled vectorised."""
        old_slots = np.frombuffer(self._slots, dtype=np.int32)
        keep = old_slots >= 0
        slots = old_slots[keep].astype(np.int64)
        hashes = np.frombuffer(self._hashes, dtype=np.int64)[keep].copy()
        del old_slots
        size = 1024
        while size < 2 * len(slots) + 2:
            size *= 2
        self._table_init(size)
        self._place(hashes, slots)

    def _place(self, hashes: np.ndarray, slots: np.ndarray) -> None:
        """Insert many (hash, slot) entries by linear probing, a round per probe step."""
        mask = self._mask
        table = np.frombuffer(self._slots, dtype=np.int32)
        table_h = np.frombuffer(self._hashes, dtype=np.int64)
        pos = hashes & mask
        pending = np.arange(len(slots))
        while pending.size:
            p = pos[pending]
            free = table[p] == _EMPTY
            cand, at = pending[free], p[free]
            at, first = np.unique(at, return_index=True)
            won = cand[first]
            table[at], table_h[at] = slots[won], hashes[won]
            placed = np.zeros(len(slots), dtype=bool)
            placed[won] = True
            pending = pending[~placed[pending]]
            pos[pending] = (pos[pending] + 1) & mask
        self._used += len(slots)
        del table, table_h

    # -- slots ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.live

    def add(self, impression_id: str, event_id: str, ts: float, arm: str, propensity: float | None,
            candidates: int, digest: int) -> int:
        """A new open impression (not clicked, nothing applied); returns its slot."""
        code = self._arm_code.get(arm)
        if code is None:
            code = self._arm_code[arm] = len(self.arms)
            self.arms.append(arm)
        p = math.nan if propensity is None else propensity
        if self.free:
            s = self.free.pop()
            self.ts[s], self.applied[s], self.value_sum[s], self.propensity[s] = ts, 0.0, 0.0, p
            self.digest[s], self.conversions[s], self.candidates[s], self.arm[s] = digest, 0, candidates, code
            self.flags[s] = LIVE
            self.gen[s] = (self.gen[s] + 1) & 0xFFFFFFFF
        else:
            s = len(self.ts)
            self.ts.append(ts)
            self.applied.append(0.0)
            self.value_sum.append(0.0)
            self.propensity.append(p)
            self.digest.append(digest)
            self.conversions.append(0)
            self.candidates.append(candidates)
            self.arm.append(code)
            self.flags.append(LIVE)
            self.gen.append(0)
            if self.dx:
                self.xs.frombytes(self._zero_x)
        self.ids.put(s, impression_id)
        self.event_ids.put(s, event_id)
        self.live += 1
        h = hash(impression_id)  # into the id table
        mask, slots = self._mask, self._slots
        i = h & mask
        while slots[i] >= 0:
            i = (i + 1) & mask
        if slots[i] == _EMPTY:
            self._used += 1
        slots[i], self._hashes[i] = s, h
        if self._used * 10 > 7 * (mask + 1):
            self._rebuild()
        return s

    def remove(self, slot: int) -> None:
        ids = self.ids
        if ids.long and slot in ids.long:
            key = ids.long.pop(slot)
        else:  # (IdArena.get, inlined: once per impression)
            w = ids.width
            key = ids.data[slot * w:(slot + 1) * w].rstrip(b"\0").decode()
        mask, slots = self._mask, self._slots  # (_table_drop, inlined)
        i = hash(key) & mask
        while slots[i] != slot:
            i = (i + 1) & mask
        slots[i] = _GONE
        self.flags[slot] = 0
        if self.contexts or self.seen or self.zs or self.odd_x or self.event_ids.long:
            for side in (self.contexts, self.seen, self.zs, self.odd_x, self.event_ids.long):
                side.pop(slot, None)
        self.free.append(slot)
        self.live -= 1

    def id_of(self, slot: int) -> str:
        return self.ids.get(slot)

    def arm_of(self, slot: int) -> str:
        return self.arms[self.arm[slot]]

    def slots(self) -> np.ndarray:
        """The live slots, in slot order."""
        return np.flatnonzero(np.frombuffer(self.flags, dtype=np.uint8) & LIVE) if len(self.flags) else \
            np.zeros(0, dtype=np.int64)

    def __iter__(self) -> Iterator[int]:  # the live slots
        return iter(self.slots().tolist())

    # -- vectors ------------------------------------------------------------------------------------
    def put_vectors(self, slot: int, gen: int, x: bytes, z: bytes | None) -> None:
        """The sink's vectors of the impression in ``slot`` (if it is still generation ``gen``): the
        store keeps them, and no longer its context."""
        if self.gen[slot] != gen or not self.flags[slot] & LIVE:
            return
        n = len(x) // 8
        if not self.dx and not self.odd_x:
            self.dx = n
            self.xs = array("d", bytes(8 * n * len(self.ts)))
            self._zero_x = bytes(8 * n)
        if n == self.dx:
            self.xs[slot * n:(slot + 1) * n] = array("d", x)
        else:
            self.odd_x[slot] = x
        if z is not None:
            self.zs[slot] = z
        self.flags[slot] |= HAS_X
        if self.contexts:
            self.contexts.pop(slot, None)

    def put_matrix(self, slots: list[int], gens: list[int], X: np.ndarray) -> None:
        """:meth:`put_vectors` of many impressions at once (rows of ``X``, no shared vectors)."""
        if not self.dx and not self.odd_x:
            self.put_vectors(slots[0], gens[0], X[0].tobytes(), None)
        if X.shape[1] != self.dx or X.dtype != np.float64:
            for s, g, row in zip(slots, gens, X, strict=True):
                self.put_vectors(s, g, row.tobytes(), None)
            return
        sl = np.array(slots, dtype=np.int64)
        flags = np.frombuffer(self.flags, dtype=np.uint8)
        ok = (np.frombuffer(self.gen, dtype=np.uint32)[sl] == np.array(gens, dtype=np.uint32)) & (flags[sl] & LIVE != 0)
        keep = sl[ok]
        np.frombuffer(self.xs, dtype=np.float64).reshape(-1, self.dx)[keep] = X[ok]
        flags[keep] |= HAS_X
        del flags
        if self.contexts:
            pop = self.contexts.pop
            for s in keep.tolist():
                pop(s, None)

    def x_of(self, slot: int) -> bytes | None:
        if not self.flags[slot] & HAS_X:
            return None
        if self.odd_x and slot in self.odd_x:
            return self.odd_x[slot]
        n = self.dx
        return self.xs[slot * n:(slot + 1) * n].tobytes()

    # -- as objects -----------------------------------------------------------------------------------
    def _row(self, slot: int) -> tuple[Any, ...]:
        flags = self.flags[slot]
        context, features = self.contexts.get(slot, _NO_ROW) if self.contexts else _NO_ROW
        seen, digests = self.seen.get(slot, _NO_SEEN) if self.seen else _NO_SEEN
        p = self.propensity[slot]
        if flags & HAS_X:
            n = self.dx
            x = self.odd_x[slot] if self.odd_x and slot in self.odd_x else self.xs[slot * n:(slot + 1) * n].tobytes()
        else:
            x = None
        return (self.ids.get(slot), self.event_ids.get(slot), self.ts[slot], self.arms[self.arm[slot]],
                context, features, bool(flags & CLICKED), self.conversions[slot], self.value_sum[slot],
                self.applied[slot], seen, None if p != p else p, self.candidates[slot], bool(flags & CLOSED),
                self.digest[slot], digests, x, self.zs.get(slot) if self.zs else None)

    def ref(self, slot: int) -> OpenRef:
        """The impression in ``slot`` as an :class:`OpenRef` (a copy: changes go through ``set_*``)."""
        return OpenRef(*self._row(slot), slot, self.gen[slot])  # type: ignore[call-arg]

    def plain(self, slot: int) -> OpenImpression:
        """The impression in ``slot`` as checkpointed."""
        return OpenImpression(*self._row(slot))

    def plain_many(self, slots: Sequence[int], refs: bool = False) -> list[Any]:
        """:meth:`plain` (or :meth:`ref`) of many slots, the columns read at once."""
        if not slots:
            return []
        sl = np.array(slots, dtype=np.int64)

        def col(arr: array, dtype: Any) -> list[Any]:
            return np.frombuffer(arr, dtype=dtype)[sl].tolist()

        flags = col(self.flags, np.uint8)
        dx = self.dx
        whole = np.frombuffer(self.xs, dtype=np.float64).reshape(-1, dx)[sl].tobytes() if dx else b""
        contexts, seen, zs, odd = self.contexts, self.seen, self.zs, self.odd_x
        arms, gens = self.arms, col(self.gen, np.uint32) if refs else None
        out = []
        for i, (s, f, iid, eid, ts, app, vs, p, d, conv, cand, arm) in enumerate(zip(
                slots, flags, self.ids.many(sl), self.event_ids.many(sl), col(self.ts, np.float64),
                col(self.applied, np.float64), col(self.value_sum, np.float64), col(self.propensity, np.float64),
                col(self.digest, np.int64), col(self.conversions, np.int32), col(self.candidates, np.int32),
                col(self.arm, np.int32), strict=True)):
            context, features = contexts.get(s, _NO_ROW) if contexts else _NO_ROW
            sn, sd = seen.get(s, _NO_SEEN) if seen else _NO_SEEN
            if f & HAS_X:
                x = odd[s] if odd and s in odd else whole[i * 8 * dx:(i + 1) * 8 * dx]
            else:
                x = None
            row = (iid, eid, ts, arms[arm], context, features, bool(f & CLICKED), conv, vs, app, sn,
                   None if p != p else p, cand, bool(f & CLOSED), d, sd, x, zs.get(s) if zs else None)
            out.append(OpenRef(*row, s, gens[i]) if gens is not None else OpenImpression(*row))
        return out

    def load(self, imp: OpenImpression) -> int:
        """Add a checkpointed impression (restore); returns its slot."""
        s = self.add(imp.impression_id, imp.event_id, imp.ts, imp.arm, imp.propensity, imp.candidates, imp.digest)
        self.set_feedback(s, imp.clicked, imp.conversions, imp.value_sum, imp.applied, imp.seen, imp.seen_digests)
        if imp.closed:
            self.flags[s] |= CLOSED
        if imp.x is not None:
            self.put_vectors(s, self.gen[s], imp.x, imp.z)
        else:
            self.contexts[s] = (imp.context, imp.arm_features)
        return s

    def set_feedback(self, slot: int, clicked: bool, conversions: int, value_sum: float, applied: float,
                     seen: tuple[str, ...], seen_digests: tuple[int, ...]) -> None:
        self.flags[slot] = (self.flags[slot] & ~CLICKED) | (CLICKED if clicked else 0)
        self.conversions[slot], self.value_sum[slot], self.applied[slot] = conversions, value_sum, applied
        if seen or seen_digests:
            self.seen[slot] = (seen, seen_digests)




class OpenView(Mapping[str, OpenImpression]):
    """The open impressions of a store as a read-only mapping id -> :class:`OpenImpression` (copies)."""

    def __init__(self, store: OpenStore) -> None:
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __iter__(self) -> Iterator[str]:
        store = self.store
        return (store.id_of(s) for s in store)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.store.find(key) >= 0

    def __getitem__(self, key: str) -> OpenImpression:
        s = self.store.find(key)
        if s < 0:
            raise KeyError(key)
        return self.store.plain(s)
