"""Event-time learning of the delayed-feedback models (``dfm``, ``esmm``) through the join.

Chapelle's online approximation (see :mod:`banditloop.operators.dfm`) learns each pending impression
in factors, each when it is known: ``S(e₁)/S(e₀)`` while it stays unconverted, ``p λ e^{−λd} / S(e₀)``
when its conversion arrives ``d`` seconds after it. :class:`EventTimeSink` drives a learner with
``learns_event_times`` (and a ``tick`` > 0) that way from the join's events:

* **Ticks** on a deterministic grid of event time: grid point ``k·T`` (``T`` = the learner's ``tick``)
  is reached when the watermark reaches it. The join moves its watermark through every grid point it
  passes (``EventJoin.tick``, :meth:`EventTimeSink.ticks_until`): at grid point ``g`` the sink first
  learns, then the join closes the windows that ended before ``g``. At ``g`` every open, unconverted
  impression with ``ts < g ≤ ts + W`` (``W`` = the join's ``close_after``, the window) learns
  ``S(e₁)/S(e₀)`` with ``e₁ = g − ts`` and ``e₀ = g − T − ts`` (0 for its first tick), all of them at
  once with ``learn_elapsed_batch`` (contexts as one matrix), in order of ``(ts, impression_id)``.
* **A conversion** (the first positive reward increment) joined at feedback time ``at``:
  ``learn_conversion(arm, x, delay=at − ts, elapsed_from=e₀)``, ``e₀`` the elapsed time at the last
  grid point the watermark reached (0 if none since the impression). A learner with
  ``conversions_at="tick"`` keeps it and learns it at the next grid point among the survival factors
  (:mod:`banditloop.operators.deferred_conversions`); what it keeps is learned at every grid point, with
  or without pending items, and at the end of a run (watermark at infinity).
* **The close** of an unconverted impression: ``S(W)/S(e₀)``, ``e₀`` the elapsed time at the last grid
  point ``≤ ts + W``. A converted one learns nothing more.
* **Click labels** (``esmm``, ``click_labels``): the pCTR head learns ``imp.clicked`` at the first grid
  point after the click window (``ts + click_window``), or at the close if that comes first.

Every ``e₀`` is a function of ``imp.ts``, ``T`` and the watermark: there is no per-impression state
to checkpoint, and the last grid point follows from the join's checkpointed watermark, so a run
restored mid-stream continues identically. Feedback the join refuses (a conversion after its
impression's window closed: ``late``; beyond the window: ``unmatched``) never reaches the learner,
is counted there and dead-lettered, and does not turn what was learned into a negative. A click that
arrives after its label was learned (later than the allowed lateness) is counted and corrected by the
join (``late_click_labels``, :mod:`banditloop.pipeline.click_labels`): ``esmm`` learns ``learn_late_click``.

With ``batch`` > 0 impressions are queued and featurized as one matrix, as :class:`LearnerSink`
does; every other call applies the queue first, so the learner sees the same calls in the same order
and ends bit for bit where it would have one event at a time.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from banditloop.operators.base import Learner
from banditloop.pipeline.join import OpenImpression
from banditloop.pipeline.model import LearnerSink, Vectorizer
from banditloop.pipeline.open_store import CLOSED, LIVE, OpenRef, OpenStore

if TYPE_CHECKING:
    from banditloop.pipeline.join import EventJoin


def uses_event_times(learner: Learner) -> bool:
    """The learner learns event times through the pipeline: ``learns_event_times`` and a ``tick`` > 0."""
    return bool(learner.learns_event_times) and float(getattr(learner, "tick", 0.0)) > 0.0


class EventTimeSink(LearnerSink):
    """Feeds the join into a learner that learns event times (see the module docstring); the owner
    sets :attr:`join` (the join that feeds it) and ``join.tick = learner.tick``.

    >>> from banditloop.core.events import Conversion, Impression
    >>> from banditloop.operators.dfm import DelayedFeedbackModel
    >>> from banditloop.pipeline.join import EventJoin, JoinConfig
    >>> from banditloop.pipeline.model import ModelConfig, Vectorizer
    >>> from banditloop.core.reward import RewardSpec
    >>> config = ModelConfig("dfm", {"tick": 3600.0}, reward=RewardSpec("conversion"))
    >>> model = config.new_learner()
    >>> sink = EventTimeSink(model, Vectorizer(config), record=True)
    >>> sink.join = join = EventJoin(sink, reward=config.reward, config=JoinConfig(allowed_lateness=0.0), tick=3600.0)
    >>> join.advance(0.0); join.process(Impression(event_id="e", ts=1800.0, impression_id="i", arm="a"))
    'impression'
    >>> join.advance(9000.0)   # grid points 3600 and 7200: elapsed 0 → 1800 → 5400 s
    >>> join.process(Conversion(event_id="c", ts=9000.0, impression_id="i"))
    'conversion'
    >>> sink.learned   # the conversion: delay 7200 s, last seen unconverted at 5400 s
    [('elapsed', 0.0, 1800.0), ('elapsed', 1800.0, 5400.0), ('conversion', 7200.0, 5400.0)]
    """

    def __init__(self, learner: Learner, vectorizer: Vectorizer, batch: int = 0, record: bool = False) -> None:
        super().__init__(learner, vectorizer, None, batch)
        self.record = record
        self.tick = float(learner.tick)  # type: ignore[attr-defined]
        self.join: EventJoin | None = None
        #: with ``record``: what was learned, as (kind, times...) tuples (tests and examples)
        self.learned: list[tuple[Any, ...]] = []

    # -- the grid -------------------------------------------------------------------------------
    def _slot(self, t: float) -> int:
        """Index of the last grid point at or before ``t``."""
        return math.floor(t / self.tick)

    def _seen_until(self, imp: OpenImpression, slot: int) -> float:
        """Elapsed time of ``imp`` at grid point ``slot`` if it was aged there, else 0 (never aged)."""
        return slot * self.tick - imp.ts if slot > self._slot(imp.ts) else 0.0

    def ticks_until(self, join: EventJoin, watermark: float) -> None:
        """Move ``join``'s watermark through every grid point up to ``watermark``: learn at each, then
        let the join close and evict up to it (``EventJoin.set_watermark`` then moves to ``watermark``)."""
        assert join.watermark is not None
        if not math.isfinite(watermark):  # every window closes (end of a run): no later grid point matters
            newest = _max_ts(join.store, default=join.watermark)
            watermark = newest + join.close_after + self.tick
        k, last = self._slot(join.watermark) + 1, self._slot(watermark)
        while k <= last and join.open:  # nothing open: no grid point until the next impression matters
            self._at_tick(join, k)
            join._advance(k * self.tick)
            k += 1
        if not math.isfinite(watermark) and _deferred(self.learner):
            self.learner.flush_deferred()  # type: ignore[attr-defined]  # every window closed: nothing later

    def _at_tick(self, join: EventJoin, k: int) -> None:
        g, window = k * self.tick, join.close_after
        cw = join.config.click_window
        labels = getattr(self.learner, "click_labels", False)
        due, clicks = _at_tick(join.store, k, self.tick, window, cw if labels else None)
        deferred = _deferred(self.learner)  # conversions kept for this tick
        if not (due or clicks or deferred):
            return
        self.flush()
        order = _ORDER
        for imp in sorted(clicks, key=order):
            self._click(imp)
        if not (due or deferred):
            return
        due.sort(key=order)
        X = self._matrix(due) if due else np.empty((0, self.learner.dim))
        e0 = np.array([self._seen_until(imp, k - 1) for imp in due])
        e1 = np.array([min(g - imp.ts, window) for imp in due])
        if self.record:
            self.learned.extend(("elapsed", a, b) for a, b in zip(e0.tolist(), e1.tolist(), strict=True))
        self.learner.learn_elapsed_batch([imp.arm for imp in due], X, e0, e1)  # type: ignore[attr-defined]

    def _click(self, imp: OpenImpression) -> None:
        if self.record:
            self.learned.append(("click", imp.impression_id, imp.clicked))
        self.learner.learn_click(imp.arm, self._vectors(imp)[0], imp.clicked)  # type: ignore[attr-defined]

    @property
    def wants_close(self) -> bool:
        return self.join is not None or bool(self.learner.learns_at_close)

    def learn_late_click(self, imp: OpenImpression) -> None:
        """The click of ``imp`` joined after its click label (a negative) was learned: the learner
        corrects it (``learn_late_click``; see :mod:`banditloop.pipeline.click_labels`)."""
        self.flush()
        if self.record:
            self.learned.append(("late click", imp.impression_id))
        self.learner.learn_late_click(imp.arm, self._vectors(imp)[0])  # type: ignore[attr-defined]

    # -- the join's hooks -------------------------------------------------------------------------
    def on_reward(self, imp: OpenImpression, delta: float, at: float | None = None) -> None:
        if at is None or self.join is None:  # not driven with event times: as LearnerSink
            super().on_reward(imp, delta)
            return
        self.flush()
        x = self._vectors(imp)[0]
        learner = self.learner
        learner.learn_reward(imp.arm, x, delta)  # counts it
        if imp.applied - delta <= 0.0 < imp.applied:  # the first positive increment: the conversion
            w = self.join.watermark
            e0 = 0.0 if w is None else max(self._seen_until(imp, self._slot(w)), 0.0)
            delay = max(at - imp.ts, 0.0)
            if self.record:
                self.learned.append(("conversion", delay, e0))
            learner.learn_conversion(imp.arm, x, delay, e0)  # type: ignore[attr-defined]

    def on_close(self, imp: OpenImpression) -> None:
        join = self.join
        if join is None:
            super().on_close(imp)
            return
        self.flush()
        window = join.close_after
        if getattr(self.learner, "click_labels", False) and (
                self._slot(imp.ts + join.config.click_window) + 1 > self._slot(imp.ts + window)):
            self._click(imp)  # its click label's grid point comes after the close
        if imp.applied > 0.0:
            return  # converted: learned when the conversion arrived
        e0 = min(self._seen_until(imp, self._slot(imp.ts + window)), window)
        if e0 < window:
            if self.record:
                self.learned.append(("close", e0, window))
            self.learner.learn_elapsed(imp.arm, self._vectors(imp)[0], e0, window)  # type: ignore[attr-defined]


def _deferred(learner: Learner) -> int:
    """Conversions the learner keeps for its next tick (``conversions_at="tick"``), 0 for others."""
    return int(getattr(learner, "deferred", 0))


def _ORDER(imp: OpenImpression) -> tuple[float, str]:
    return imp.ts, imp.impression_id


def _max_ts(store: OpenStore, default: float) -> float:
    slots = store.slots()
    return float(np.frombuffer(store.ts, dtype=np.float64)[slots].max()) if slots.size else default


def _at_tick(store: OpenStore, k: int, tick: float, window: float,
             click_window: float | None) -> tuple[list[OpenRef], list[OpenRef]]:
    """Event-time grid point ``k`` (see ``event_time``): the open impressions not closed and within
    their window's last grid point that are unconverted and older than it (due), and those whose
    click label is learned at it (when ``click_window`` is given)."""
    flags = np.frombuffer(store.flags, dtype=np.uint8)
    ts = np.frombuffer(store.ts, dtype=np.float64)
    live = (flags & (LIVE | CLOSED)) == LIVE
    live &= k <= np.floor((ts + window) / tick)
    due = live & (np.frombuffer(store.applied, dtype=np.float64) <= 0.0) & (np.floor(ts / tick) < k)
    clicks = (live & (np.floor((ts + click_window) / tick) + 1 == k)) if click_window is not None else None
    due_slots = np.flatnonzero(due).tolist()
    click_slots = [] if clicks is None else np.flatnonzero(clicks).tolist()
    del flags, ts, live, due, clicks
    return [store.ref(s) for s in due_slots], [store.ref(s) for s in click_slots]
