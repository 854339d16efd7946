"""The event-time watermark of one partition read from several input topics.

Each input (impressions, clicks, conversions) has the newest event time read from it. The watermark
is the minimum of those over the inputs that are still *active*, minus the allowed lateness: an input
holds the watermark back until it has delivered an event. An input is *idle* when it has been silent
for ``idleness`` seconds **and** is caught up (its next offset has reached the partition's high
watermark, read through ``highwater``): a quiet topic must not stop event time for the others, but a
topic that merely lags must. When every input is idle, everything available has been read and the
watermark moves to the newest event time seen at all.

No broker is needed: the high watermarks come from a callable, the clock is injectable.

>>> now = [0.0]
>>> ends = {"impressions": 10, "clicks": 3}
>>> wm = InputWatermarks(("impressions", "clicks"), allowed_lateness=5.0, idleness=30.0,
...                      highwater=ends.get, clock=lambda: now[0])
>>> wm.observe("impressions", 100.0, offset=10)
>>> wm.target() is None          # clicks has delivered nothing and is not idle yet: it holds time back
True
>>> wm.observe("clicks", 40.0, offset=3)
>>> wm.target()                  # min(100, 40) - 5
35.0
>>> now[0] = 31.0                # both silent for > 30 s and caught up: read the newest time seen
>>> wm.target()
95.0
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

INF = float("inf")


class InputWatermarks:
    """Newest event time, next offset and last activity per input of one partition; see the module
    docstring. ``highwater(role)`` returns the input's high watermark offset, or None when unknown
    (an input with an unknown high watermark is never idle)."""

    def __init__(self, roles: Iterable[str], *, allowed_lateness: float, idleness: float,
                 highwater: Callable[[str], int | None], clock: Callable[[], float] = time.monotonic,
                 offsets: dict[str, int] | None = None, max_ts: dict[str, float] | None = None) -> None:
        self.roles = tuple(roles)
        self.allowed_lateness = float(allowed_lateness)
        self.idleness = float(idleness)
        self.highwater = highwater
        self.clock = clock
        #: next offset to read per input (restored from a checkpoint, then advanced record by record)
        self.offsets: dict[str, int] = dict(offsets or {})
        #: newest event time read per input
        self.max_ts: dict[str, float] = dict(max_ts or {})
        now = clock()
        #: clock time each input last delivered a record (or the partition was assigned)
        self.last_seen: dict[str, float] = dict.fromkeys(self.roles, now)

    def observe(self, role: str, ts: float, offset: int) -> None:
        """One record read from ``role``: ``ts`` its event time, ``offset`` the next offset to read."""
        self.offsets[role] = offset
        if ts > self.max_ts.get(role, -INF):
            self.max_ts[role] = ts
        self.last_seen[role] = self.clock()

    def touch(self, role: str) -> None:
        """``role`` delivered records (the batch loop updates offsets and times itself, for speed)."""
        self.last_seen[role] = self.clock()

    def is_idle(self, role: str) -> bool:
        if self.clock() - self.last_seen.get(role, 0.0) < self.idleness:
            return False
        end = self.highwater(role)
        return end is not None and self.offsets.get(role, 0) >= end

    def floor(self, exclude: str | None = None) -> float | None:
        """Minimum newest event time over the active inputs (but ``exclude``); ``inf`` when all of
        them are idle; None when an active input has no event time yet (it holds time back)."""
        floor = INF
        for role in self.roles:
            if role == exclude or self.is_idle(role):
                continue
            newest = self.max_ts.get(role)
            if newest is None:
                return None
            floor = min(floor, newest)
        return floor

    def target(self) -> float | None:
        """The watermark the partition may move to now, or None when it must stay where it is."""
        floor = self.floor()
        if floor is None:
            return None
        if floor == INF:
            if not self.max_ts:
                return None
            floor = max(self.max_ts.values())
        return floor - self.allowed_lateness
