"""Event-time join of impressions with their clicks and conversions.

One join serves every entry point (replay, simulation, live topics) so they learn identically.

Semantics
---------
* An impression opens a join entry keyed by ``impression_id`` and is handed to the sink at once:
  learners count it immediately (a reward of 0 so far).
* Feedback (click or conversion) joins its impression if ``imp.ts - clock_skew <= fb.ts <=
  imp.ts + window`` (``click_window`` or ``conversion_window``). The reward of the impression is
  recomputed from everything joined so far with the :class:`~banditloop.core.reward.RewardSpec` and only the
  *increment* goes to the sink, so a click that arrives hours later is learned when it arrives, and a
  second click or a duplicate changes nothing.
* Feedback whose impression has not arrived yet is held, until the impression comes or the
  watermark passes ``fb.ts + clock_skew`` (then it is unmatched).
* The watermark is event time minus ``allowed_lateness``; the caller advances it (from the
  maximum event time seen, or the minimum over input partitions for live topics). Impressions older
  than the watermark are late (dropped and dead-lettered); impressions whose windows have closed
  before the watermark are evicted, which bounds the join state.
* The impression's feedback window *closes* when the watermark passes ``imp.ts + window``, with
  ``window`` the click window for a click reward and the longer of both windows otherwise; the sink
  then gets ``on_close`` (the final reward is ``imp.applied``), exactly once. This is when a learner
  that does not count a pending impression as a failure (Beta TS, logistic TS, KL-UCB) learns its
  negative. Feedback that would change the reward of a closed impression is late (dead-lettered):
  a closed window is final, so what a learner learned at the close is never contradicted.
* Duplicates (same impression, same feedback ``event_id``) are applied once. They are recognised
  while the impression is in the join state, which is exactly as long as they could matter.
* A redelivery with identical content is a plain duplicate (counted in ``duplicates``). One with the
  same identity but *different* content (an impression id shown with another arm, time or context; a
  feedback ``event_id`` with another time, value or type) is a *conflicting duplicate*: the first one
  wins, and the later one is counted in ``conflicts`` and dead-lettered ("conflicting duplicate").
  The join keeps a 64-bit digest of the content (:func:`content_digest`) per open impression and per
  feedback joined, not the content; states written before digests existed treat every redelivery
  of what they hold as a plain duplicate.

The state (open impressions and held feedback) exports to plain JSON-able data for checkpoints.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

import msgspec

from banditloop.core.events import Click, Conversion, Event, Feedback, Impression, encode_event
from banditloop.core.reward import RewardSpec
from banditloop.pipeline.dead_letters import DeadLetterSink


@dataclass(frozen=True)
class JoinConfig:
    """Join windows in seconds of event time: feedback joins its impression when it is at most
    ``clock_skew`` earlier and ``click_window``/``conversion_window`` later; the watermark trails the
    newest event time by ``allowed_lateness``.

    >>> JoinConfig(click_window=1800.0).to_dict()["click_window"]
    1800.0
    """

    click_window: float = 3600.0
    conversion_window: float = 7 * 86400.0
    allowed_lateness: float = 60.0
    clock_skew: float = 5.0

    def __post_init__(self) -> None:
        for name in ("click_window", "conversion_window", "allowed_lateness", "clock_skew"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")

    @cached_property  # read for every impression and watermark move; the config is frozen
    def retention(self) -> float:
        return max(self.click_window, self.conversion_window)

    def to_dict(self) -> dict:
        return {"click_window": self.click_window, "conversion_window": self.conversion_window,
                "allowed_lateness": self.allowed_lateness, "clock_skew": self.clock_skew}


class OpenImpression(msgspec.Struct, array_like=True, gc=False):
    """What the join keeps of an impression until its windows close.

    ``gc=False``: not tracked by Python's cyclic garbage collector. Its fields (strings, numbers, a
    flat dict, a list of strings) cannot form a reference cycle, and the join holds one per open
    impression, so tracking them only made every full collection walk the whole join state.
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
    #: :func:`content_digest` of the impression (0: unknown, a state written before digests)
    digest: int = 0
    #: :func:`content_digest` of each feedback in ``seen``, in the same order (may be shorter in
    #: states written before digests: the missing ones, first, are unknown)
    seen_digests: tuple[int, ...] = ()


class JoinSink(Protocol):
    """Where joined events go (a learner adapter)."""

    def on_impression(self, imp: OpenImpression) -> None: ...

    def on_reward(self, imp: OpenImpression, delta: float) -> None: ...

    def on_close(self, imp: OpenImpression) -> None:
        """The impression's feedback window closed; ``imp.applied`` is its final reward."""


COUNTER_NAMES = ("impressions", "clicks", "conversions", "duplicates", "unmatched", "late", "held",
                 "evicted", "rewarded", "closed", "conflicts")

_canonical = msgspec.msgpack.Encoder(order="deterministic")


def content_digest(event: Event) -> int:
    """A signed 64-bit digest (never 0) of what the join and the learners take from an event besides
    its identity: an impression's event id, time, arm, context, the shown arm's features, propensity
    and number of candidates; a feedback's type, time and value. Dict keys are sorted, floats are
    taken bit for bit (binary msgpack: hashing the full JSON made replay 30 % slower).

    >>> a = Click(event_id="c1", ts=130.0, impression_id="i1")
    >>> content_digest(a) == content_digest(Click(event_id="c1", ts=130.0, impression_id="i1"))
    True
    >>> content_digest(a) == content_digest(Click(event_id="c1", ts=131.0, impression_id="i1"))
    False
    """
    if isinstance(event, Impression):
        shown = event.arm_features.get(event.arm) if event.arm_features else None
        content: tuple = (event.event_id, event.ts, event.arm, event.context, shown, event.propensity,
                          len(event.candidates) if event.candidates else 0)
    elif isinstance(event, Click):
        content = ("click", event.ts)
    else:
        content = ("conversion", event.ts, event.value)
    digest = int.from_bytes(hashlib.blake2b(_canonical.encode(content), digest_size=8).digest(), "little", signed=True)
    return digest or 1


class _JoinState(msgspec.Struct):
    open: list[OpenImpression]
    pending: list[Click | Conversion]
    watermark: float | None
    counters: dict[str, int]


_state_encoder = msgspec.json.Encoder()
_state_decoder = msgspec.json.Decoder(_JoinState)


@dataclass
class EventJoin:
    """Joins events into a sink; see the module docstring.

    >>> class Printer:
    ...     def on_impression(self, imp): print("impression", imp.arm)
    ...     def on_reward(self, imp, delta): print("reward", imp.arm, delta)
    >>> join = EventJoin(Printer(), config=JoinConfig(click_window=60))
    >>> join.process(Impression(event_id="e1", ts=100.0, impression_id="i1", arm="ad-1"))
    impression ad-1
    'impression'
    >>> join.process(Click(event_id="c1", ts=130.0, impression_id="i1"))
    reward ad-1 1.0
    'click'
    >>> join.process(Click(event_id="c1", ts=130.0, impression_id="i1"))   # a duplicate: ignored
    'duplicate'
    """

    sink: JoinSink
    reward: RewardSpec = field(default_factory=RewardSpec)
    config: JoinConfig = field(default_factory=JoinConfig)
    clip_reward: bool = False
    #: events the join refuses (unmatched feedback, ...) go here, encoded, with ``dead_letter_source``
    dead_letter: DeadLetterSink | None = None
    dead_letter_source: str = "join"

    def __post_init__(self) -> None:
        self.open: dict[str, OpenImpression] = {}
        self.pending: dict[str, list[Feedback]] = {}
        self.watermark: float | None = None
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self._evict_heap: list[tuple[float, str]] = []
        self._close_heap: list[tuple[float, str]] = []
        self._pending_heap: list[tuple[float, str]] = []
        c = self.config
        #: seconds after the impression at which its feedback window closes (see the module docstring)
        self.close_after = c.click_window if self.reward.kind == "click" else c.retention

    # -- input ----------------------------------------------------------------------------------
    def process(self, event: Event) -> str:
        """Apply one decoded event; returns what happened (``"impression"``, ``"click"``,
        ``"conversion"``, ``"duplicate"``, ``"conflict"``, ``"held"``, ``"late"`` or ``"unmatched"``)."""
        if isinstance(event, Impression):
            return self._impression(event)
        return self._feedback(event)

    def advance(self, event_time: float) -> None:
        """Move the watermark to ``event_time - allowed_lateness`` (never backwards) and evict."""
        self.set_watermark(event_time - self.config.allowed_lateness)

    def set_watermark(self, watermark: float) -> None:
        if self.watermark is not None and watermark <= self.watermark:
            return
        self.watermark = watermark
        heap = self._close_heap
        close_after = self.close_after
        while heap and heap[0][0] < watermark:
            _, imp_id = heapq.heappop(heap)
            imp = self.open.get(imp_id)
            if imp is not None and not imp.closed and imp.ts + close_after < watermark:
                imp.closed = True
                self.counters["closed"] += 1
                self.sink.on_close(imp)
        retention = self.config.retention
        heap = self._evict_heap
        while heap and heap[0][0] < watermark:
            _, imp_id = heapq.heappop(heap)
            imp = self.open.get(imp_id)
            if imp is not None and imp.ts + retention < watermark:
                del self.open[imp_id]
                self.counters["evicted"] += 1
        heap = self._pending_heap
        skew = self.config.clock_skew
        while heap and heap[0][0] < watermark:
            _, imp_id = heapq.heappop(heap)
            held = self.pending.get(imp_id)
            if held is None:
                continue
            keep = [fb for fb in held if fb.ts + skew >= watermark]
            for fb in held:
                if fb.ts + skew < watermark:
                    self.counters["held"] -= 1
                    self._unmatched(fb, "no impression arrived within the allowed lateness")
            if keep:
                self.pending[imp_id] = keep
            else:
                del self.pending[imp_id]

    def close(self) -> None:
        """End of input (replay): every held feedback is unmatched; open impressions stay."""
        for held in self.pending.values():
            for fb in held:
                self.counters["held"] -= 1
                self._unmatched(fb, "no impression for this feedback in the input")
        self.pending.clear()
        self._pending_heap.clear()

    # -- internals ------------------------------------------------------------------------------
    def _late(self, ts: float) -> bool:
        return self.watermark is not None and ts < self.watermark

    def _impression(self, ev: Impression) -> str:
        digest = content_digest(ev)
        first = self.open.get(ev.impression_id)
        if first is not None:
            if first.digest not in (0, digest):
                return self._conflict(ev, f"impression {ev.impression_id} was already joined")
            self.counters["duplicates"] += 1
            return "duplicate"
        if self._late(ev.ts):
            self.counters["late"] += 1
            self._dead(ev, "late impression: older than the watermark")
            return "late"
        features = None
        if ev.arm_features is not None:
            features = ev.arm_features.get(ev.arm)
        imp = OpenImpression(impression_id=ev.impression_id, event_id=ev.event_id, ts=ev.ts, arm=ev.arm,
                             context=ev.context, arm_features=features, propensity=ev.propensity,
                             candidates=len(ev.candidates) if ev.candidates else 0, digest=digest)
        self.open[ev.impression_id] = imp
        heapq.heappush(self._evict_heap, (ev.ts + self.config.retention, ev.impression_id))
        heapq.heappush(self._close_heap, (ev.ts + self.close_after, ev.impression_id))
        self.counters["impressions"] += 1
        self.sink.on_impression(imp)
        held = self.pending.pop(ev.impression_id, None)
        if held:
            for fb in held:
                self.counters["held"] -= 1
                self._join(imp, fb)
        return "impression"

    def _feedback(self, fb: Feedback) -> str:
        imp = self.open.get(fb.impression_id)
        if imp is not None:
            return self._join(imp, fb)
        held = self.pending.get(fb.impression_id)
        same = None if held is None else next((h for h in held if h.event_id == fb.event_id), None)
        if same is not None:
            if same != fb:
                return self._conflict(fb, f"{_kind(fb)} {fb.event_id} is already held for its impression")
            self.counters["duplicates"] += 1
            return "duplicate"
        if self._late(fb.ts + self.config.clock_skew):
            return self._unmatched(fb, "unknown or expired impression")
        self.pending.setdefault(fb.impression_id, []).append(fb)
        heapq.heappush(self._pending_heap, (fb.ts + self.config.clock_skew, fb.impression_id))
        self.counters["held"] += 1
        return "held"

    def _join(self, imp: OpenImpression, fb: Feedback) -> str:
        digest = content_digest(fb)
        if fb.event_id in imp.seen:
            at = imp.seen.index(fb.event_id) - (len(imp.seen) - len(imp.seen_digests))  # digests align at the end
            if at >= 0 and imp.seen_digests[at] != digest:
                return self._conflict(fb, f"{_kind(fb)} {fb.event_id} was already joined to its impression")
            self.counters["duplicates"] += 1
            return "duplicate"
        is_click = isinstance(fb, Click)
        window = self.config.click_window if is_click else self.config.conversion_window
        lag = fb.ts - imp.ts
        if lag < -self.config.clock_skew:
            return self._unmatched(fb, "feedback precedes its impression by more than the clock skew")
        if lag > window:
            return self._unmatched(fb, f"outside the {'click' if is_click else 'conversion'} window")
        clicked = imp.clicked or is_click
        conversions = imp.conversions + (0 if is_click else 1)
        value_sum = imp.value_sum + (0.0 if isinstance(fb, Click) or fb.value is None else fb.value)
        reward = self.reward.value(clicked, conversions, value_sum)
        if not math.isfinite(reward):  # e.g. an enormous weight × value: never let it reach a model
            return self._unmatched(fb, f"reward is not finite ({reward!r})")
        if self.clip_reward:
            reward = min(max(reward, 0.0), 1.0)
        delta = reward - imp.applied
        imp.seen = (*imp.seen, fb.event_id)  # (a redelivery of a late event is a duplicate)
        imp.seen_digests = (*imp.seen_digests, digest)
        if imp.closed and delta != 0.0:  # the window closed: what was learned at the close stands
            self.counters["late"] += 1
            self._dead(fb, f"late {'click' if is_click else 'conversion'}: its impression's window closed")
            return "late"
        imp.clicked, imp.conversions, imp.value_sum = clicked, conversions, value_sum
        kind = "click" if is_click else "conversion"
        self.counters["clicks" if is_click else "conversions"] += 1
        if delta != 0.0:
            if imp.applied == 0.0:
                self.counters["rewarded"] += 1
            imp.applied = reward
            self.sink.on_reward(imp, delta)
        return kind

    def _unmatched(self, fb: Feedback, reason: str) -> str:
        self.counters["unmatched"] += 1
        self._dead(fb, f"unmatched {'click' if isinstance(fb, Click) else 'conversion'}: {reason}")
        return "unmatched"

    def _conflict(self, event: Event, reason: str) -> str:
        self.counters["conflicts"] += 1
        self._dead(event, f"conflicting duplicate: {reason} with other content (the first one wins)")
        return "conflict"

    def _dead(self, event: Event, reason: str) -> None:
        if self.dead_letter is not None:
            self.dead_letter(encode_event(event), reason, self.dead_letter_source)

    # -- state ----------------------------------------------------------------------------------
    def export_state(self) -> bytes:
        """JSON bytes of the open impressions, held feedback, watermark and counters."""
        pending = [fb for held in self.pending.values() for fb in held]
        return _state_encoder.encode(_JoinState(open=list(self.open.values()), pending=pending,
                                                watermark=self.watermark, counters=dict(self.counters)))

    def import_state(self, data: bytes) -> None:
        state = _state_decoder.decode(data)
        self.__post_init__()
        self.watermark = state.watermark
        self.counters.update(state.counters)
        for imp in state.open:
            self.open[imp.impression_id] = imp
            self._evict_heap.append((imp.ts + self.config.retention, imp.impression_id))
            if not imp.closed:
                self._close_heap.append((imp.ts + self.close_after, imp.impression_id))
        heapq.heapify(self._evict_heap)
        heapq.heapify(self._close_heap)
        for fb in state.pending:
            self.pending.setdefault(fb.impression_id, []).append(fb)
            self._pending_heap.append((fb.ts + self.config.clock_skew, fb.impression_id))
        heapq.heapify(self._pending_heap)


def _kind(fb: Feedback) -> str:
    return "click" if isinstance(fb, Click) else "conversion"
