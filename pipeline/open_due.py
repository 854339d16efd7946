"""When the join's open impressions close and are evicted: their times in order, without a heap entry each.

An impression's window closes when the watermark passes ``ts + close_after`` and it is evicted when it
passes ``ts + retention``: both orders are the order of ``ts``. Impressions mostly come in time order,
so :class:`DueQueue` appends ``(ts, slot, generation)`` to three arrays and finds what is due with a
binary search from a head (one head for closes, one for evictions); one that comes earlier than the
last appended goes to a small heap per head instead. What is due is returned in the join's order:
by due time, then impression id (as the heaps of impressions did), see :func:`in_order`.

>>> q = DueQueue()
>>> for ts, slot in ((1.0, 0), (2.0, 1), (1.5, 2)):
...     q.push(ts, slot, 0)
>>> sorted(q.due(0, 10.0, 12.0)[1])   # ts + 10 < 12: slots 0 and 2
[0, 2]
"""

from __future__ import annotations

import heapq
import math
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

import numpy as np

from banditloop.pipeline.open_store import LIVE, OpenStore

_COMPACT = 1 << 16
_SCAN = 32  # due entries looked at one by one before a binary search


class DueQueue:
    """Open impressions by time, for two consumers (0: closes, 1: evictions); see the module docstring."""

    def __init__(self) -> None:
        self.ts = array("d")
        self.slot = array("i")
        self.gen = array("I")
        self.heads = [0, 0]
        self.late: list[list[tuple[float, int, int]]] = [[], []]
        #: the smallest ts not yet taken, per consumer (inf: none)
        self.next = [math.inf, math.inf]

    def push(self, ts: float, slot: int, gen: int) -> None:
        tsq = self.ts
        nxt = self.next
        if ts < nxt[0]:
            nxt[0] = ts
        if ts < nxt[1]:
            nxt[1] = ts
        if not tsq or ts >= tsq[-1]:
            tsq.append(ts)
            self.slot.append(slot)
            self.gen.append(gen)
        else:
            heapq.heappush(self.late[0], (ts, slot, gen))
            heapq.heappush(self.late[1], (ts, slot, gen))

    def next_ts(self, which: int) -> float:
        """The smallest ``ts`` not yet taken by consumer ``which`` (inf: none)."""
        head, late = self.heads[which], self.late[which]
        t = self.ts[head] if head < len(self.ts) else math.inf
        return min(t, late[0][0]) if late else t

    def due(self, which: int, after: float, watermark: float) -> tuple[array, array, array, bool]:
        """Take the entries with ``ts + after < watermark``: (ts, slots, generations, in_order), in
        order of ts when ``in_order`` (none came out of order)."""
        tsq, head = self.ts, self.heads[which]
        n, end = len(tsq), head
        while end < n and end - head < _SCAN and tsq[end] + after < watermark:
            end += 1
        if end - head == _SCAN:  # many: a binary search for the rest
            end = bisect_left(tsq, True, lo=end, hi=n, key=lambda t: t + after >= watermark)
        ts, slots, gens = tsq[head:end], self.slot[head:end], self.gen[head:end]
        self.heads[which] = end
        heap = self.late[which]
        ordered = True
        while heap and heap[0][0] + after < watermark:
            t, slot, gen = heapq.heappop(heap)
            ts.append(t)
            slots.append(slot)
            gens.append(gen)
            ordered = False
        if end >= _COMPACT:
            self._compact()
        self.next[which] = self.next_ts(which)
        return ts, slots, gens, ordered

    def take(self, which: int, after: float, watermark: float, store: OpenStore, skip: int) -> Sequence[int]:
        """:func:`in_order` of what :meth:`due` takes: the slots of the live impressions (without flag
        ``skip``) whose ``ts + after < watermark``, in the join's order; quicker for the usual one."""
        tsq, head = self.ts, self.heads[which]
        nxt = head + 1
        if nxt < len(tsq) and not self.late[which] and tsq[head] + after < watermark \
                and not tsq[nxt] + after < watermark:  # exactly one due, in order (events in time order)
            s, g = self.slot[head], self.gen[head]
            self.heads[which] = nxt
            self.next[which] = tsq[nxt]
            if nxt >= _COMPACT:
                self._compact()
            return [s] if store.gen[s] == g and store.flags[s] & (LIVE | skip) == LIVE else []
        return in_order(*self.due(which, after, watermark), after, store, skip)

    def _compact(self) -> None:
        cut = min(self.heads)
        if 2 * cut >= len(self.ts):
            del self.ts[:cut], self.slot[:cut], self.gen[:cut]
            self.heads = [h - cut for h in self.heads]

    def rebuild(self, ts: np.ndarray, slots: np.ndarray, gens: np.ndarray, closed: np.ndarray) -> None:
        """Start again from these open impressions (a restore); ``closed`` ones only await eviction."""
        order = np.argsort(ts, kind="stable")
        self.__init__()  # type: ignore[misc]
        self.ts.frombytes(ts[order].astype(np.float64).tobytes())
        self.slot.frombytes(slots[order].astype(np.int32).tobytes())
        self.gen.frombytes(gens[order].astype(np.uint32).tobytes())
        first_open = np.flatnonzero(~closed[order])
        self.heads[0] = int(first_open[0]) if first_open.size else len(self.ts)
        self.next = [self.next_ts(0), self.next_ts(1)]
        # closed ones after the first open one are skipped when taken (the store says they are closed)


def in_order(ts: array, slots: array, gens: array, ordered: bool, after: float, store: OpenStore,
             skip: int) -> Sequence[int]:
    """Those of ``slots`` that still hold the impression of generation ``gens`` (live, without flag
    ``skip``), by due time (``ts + after``), then impression id."""
    flags, gen = store.flags, store.gen
    if len(slots) == 1:  # the usual case of events in time order
        s = slots[0]
        return [s] if gen[s] == gens[0] and flags[s] & (LIVE | skip) == LIVE else []
    if len(slots) <= _SCAN:
        keep = [i for i, s in enumerate(slots) if gen[s] == gens[i] and flags[s] & (LIVE | skip) == LIVE]
        out = [slots[i] for i in keep]
        due = [ts[i] + after for i in keep]
        if not ordered or any(a == b for a, b in zip(due, due[1:], strict=False)):
            return _sorted(due, out, store)
        return out
    sl = np.frombuffer(slots, dtype=np.int32)
    f = np.frombuffer(flags, dtype=np.uint8)[sl]
    ok = (np.frombuffer(gen, dtype=np.uint32)[sl] == np.frombuffer(gens, dtype=np.uint32)) & (f & (LIVE | skip) == LIVE)
    due_a = np.frombuffer(ts, dtype=np.float64)[ok] + after
    kept = sl[ok]
    del f, sl
    if not ordered or (due_a[1:] == due_a[:-1]).any():
        return _sorted(due_a.tolist(), kept.tolist(), store)
    return array("i", kept.tobytes())


def _sorted(due: list[float], slots: list[int], store: OpenStore) -> list[int]:
    keyed = sorted(zip(due, slots, strict=True), key=lambda e: (e[0], store.id_of(e[1])))
    return [s for _, s in keyed]


def closed_to_sink(store: OpenStore, slots: Sequence[int], sink: Any, arm_only: bool) -> None:
    """The sink's ``on_close`` of the impressions in ``slots``, in order; a sink that reads only their arms
    and final rewards (``LearnerSink.arm_only``) gets them as two lists (``close_arms``), no impression built."""
    if arm_only:
        arms, codes, applied = store.arms, store.arm, store.applied
        sink.close_arms([arms[codes[s]] for s in slots], [applied[s] for s in slots])
        return
    for imp in (store.plain_many(slots, refs=True) if len(slots) > 8 else map(store.ref, slots)):
        sink.on_close(imp)
