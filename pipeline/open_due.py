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
>>> sorted(q.due(0, 10.0, 12.0)[1].tolist())   # ts + 10 < 12: slots 0 and 2
[0, 2]
"""

from __future__ import annotations

import heapq
from array import array
from bisect import bisect_left
from collections.abc import Callable

import numpy as np

_COMPACT = 1 << 16


class DueQueue:
    """Open impressions by time, for two consumers (0: closes, 1: evictions); see the module docstring."""

    def __init__(self) -> None:
        self.ts = array("d")
        self.slot = array("i")
        self.gen = array("I")
        self.heads = [0, 0]
        self.late: list[list[tuple[float, int, int]]] = [[], []]

    def push(self, ts: float, slot: int, gen: int) -> None:
        tsq = self.ts
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
        t = self.ts[head] if head < len(self.ts) else float("inf")
        return min(t, late[0][0]) if late else t

    def due(self, which: int, after: float, watermark: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """Take the entries with ``ts + after < watermark``: (ts, slots, generations, in_order), in
        order of ts when ``in_order`` (none came out of order)."""
        tsq, head = self.ts, self.heads[which]
        if head < len(tsq) and tsq[head] + after < watermark:
            end = bisect_left(tsq, True, lo=head, hi=len(tsq), key=lambda t: t + after >= watermark)
            ts = np.frombuffer(tsq, dtype=np.float64)[head:end].copy()
            slots = np.frombuffer(self.slot, dtype=np.int32)[head:end].copy()
            gens = np.frombuffer(self.gen, dtype=np.uint32)[head:end].copy()
            self.heads[which] = end
        else:
            ts, slots, gens = _EMPTY_F, _EMPTY_I, _EMPTY_U
        heap, late = self.late[which], []
        while heap and heap[0][0] + after < watermark:
            late.append(heapq.heappop(heap))
        if late:
            ts = np.concatenate([ts, [e[0] for e in late]])
            slots = np.concatenate([slots, np.array([e[1] for e in late], dtype=np.int32)])
            gens = np.concatenate([gens, np.array([e[2] for e in late], dtype=np.uint32)])
        self._compact()
        return ts, slots, gens, not late

    def _compact(self) -> None:
        cut = min(self.heads)
        if cut >= _COMPACT and 2 * cut >= len(self.ts):
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
        # closed ones after the first open one are skipped when taken (the store says they are closed)


def in_order(ts: np.ndarray, slots: np.ndarray, after: float, ordered: bool,
             id_of: Callable[[int], str]) -> list[int]:
    """``slots`` by due time (``ts + after``), then impression id."""
    due = ts + after
    if ordered and not (due[1:] == due[:-1]).any():
        return slots.tolist()
    keyed = sorted(zip(due.tolist(), slots.tolist(), strict=True), key=lambda e: (e[0], id_of(e[1])))
    return [s for _, s in keyed]


_EMPTY_F = np.zeros(0, dtype=np.float64)
_EMPTY_I = np.zeros(0, dtype=np.int32)
_EMPTY_U = np.zeros(0, dtype=np.uint32)
