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
  a closed window is final, so what a learner learned at the close is never contradicted. (Under a
  click reward the impression is evicted at its close, so a click after it is unmatched instead.)
* With a click reward, conversions are *ignored*: the reward does not read them, so they are counted
  (``ignored``) and neither joined, held nor dead-lettered, and an impression leaves the join state
  (is evicted) as soon as its click window closes instead of staying for the conversion window, which
  would keep a week of impressions for nothing. With a conversion or ``click+value`` reward both
  windows apply and an impression stays until the longer one has passed.
* Duplicates (same impression, same feedback ``event_id``) are applied once. They are recognised
  while the impression is in the join state, which is exactly as long as they could matter.
* A redelivery with identical content is a plain duplicate (counted in ``duplicates``). One with the
  same identity but *different* content (an impression id shown with another arm, time or context; a
  feedback ``event_id`` with another time, value or type) is a *conflicting duplicate*: the first one
  wins, and the later one is counted in ``conflicts`` and dead-lettered ("conflicting duplicate").
  The join keeps a 64-bit digest of the content (:mod:`banditloop.core.digest`) per open impression
  and joined feedback; states written before digests treat every redelivery as a plain duplicate.

The open impressions live in columns (:mod:`banditloop.pipeline.open_store`, closes and evictions
from :mod:`banditloop.pipeline.open_due`); the sink gets an ``OpenImpression`` built for the call.
An open impression keeps the feature vectors its sink stored (``x``, ``z``) rather than its context,
when the sink stores them (:class:`~banditloop.pipeline.model.LearnerSink` does), and no context at
all for a sink whose learner reads none (``wants_context``). The state (open impressions and held
feedback) is checkpointed as full snapshots (in columns) and deltas of what changed since the
previous checkpoint (:mod:`banditloop.pipeline.join_state`).

With ``tick`` set (learners that learn event times, :mod:`banditloop.pipeline.event_time`), the sink
also gets each feedback's time (``on_reward(imp, delta, ts)``), and moves the watermark itself
(``ticks_until``) through every multiple of ``tick`` it passes, learning at each.
"""

from __future__ import annotations

import heapq
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

from banditloop.core.digest import content_digest
from banditloop.core.events import Click, Event, Feedback, Impression, encode_event
from banditloop.core.reward import RewardSpec
from banditloop.pipeline import join_state
from banditloop.pipeline.dead_letters import DeadLetterSink
from banditloop.pipeline.join_config import JoinConfig
from banditloop.pipeline.join_state import DeltaPolicy, JoinCodec
from banditloop.pipeline.open_due import DueQueue, closed_to_sink
from banditloop.pipeline.open_store import CLOSED, OpenImpression, OpenRef, OpenStore, OpenView

__all__ = ["COUNTER_NAMES", "EventJoin", "JoinConfig", "JoinSink", "OpenImpression"]


class JoinSink(Protocol):
    """Where joined events go (a learner adapter)."""

    def on_impression(self, imp: OpenImpression) -> None: ...

    def on_reward(self, imp: OpenImpression, delta: float) -> None: ...

    def on_close(self, imp: OpenImpression) -> None:
        """The impression's feedback window closed; ``imp.applied`` is its final reward."""

    # with ``EventJoin.tick`` set, ``on_reward`` takes the feedback's time too (see ``event_time``)


COUNTER_NAMES = ("impressions", "clicks", "conversions", "duplicates", "unmatched", "late", "held",
                 "evicted", "rewarded", "closed", "conflicts", "ignored")

_NO_CONTEXT: dict[str, float | str] = {}
_CODEC = JoinCodec(OpenImpression)


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
    #: when a checkpoint writes a full snapshot rather than a delta
    delta_policy: DeltaPolicy = field(default_factory=DeltaPolicy)
    #: event-time ticks every ``tick`` seconds, and feedback times to ``on_reward`` (see ``event_time``)
    tick: float | None = None
    codec = _CODEC
    @cached_property
    def _arm_only(self) -> bool:  # the sink reads an impression's arm only (``LearnerSink.arm_only``)
        return bool(getattr(self.sink, "arm_only", False))

    def __post_init__(self) -> None:
        #: the open impressions, in columns (see ``open_store``), and when they close and are evicted
        self.store = OpenStore()
        self.due = DueQueue()
        #: the open impressions as a read-only mapping id -> OpenImpression (copies)
        self.open = OpenView(self.store)
        if hasattr(self.sink, "store"):  # the sink stores an impression's vectors there (LearnerSink)
            self.sink.store = self.store
        #: a sink whose learner reads no context (``wants_context`` False): the join keeps none
        self._keep_context = getattr(self.sink, "wants_context", True)
        self.pending: dict[str, list[Feedback]] = {}
        self.watermark: float | None = None
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self._pending_heap: list[tuple[float, str]] = []
        #: impressions opened or changed (slot -> change number) and evicted (id -> change number) since the
        #: last saved checkpoint,
        #: tracked only while the next checkpoint can be a delta (see ``_touch``)
        self._changed: dict[int, int] = {}
        self._removed: dict[str, int] = {}
        self._seq = self._export_seq = 0
        self._tracking = False
        #: deltas (and their entries) since the last full snapshot of the saved or restored state
        self._depth = self._churn = 0
        c = self.config
        #: seconds after the impression at which its feedback window closes (see the module docstring)
        self.close_after = c.close_after(self.reward.kind)
        #: seconds after the impression at which it is evicted: a click reward reads no conversion
        self.retention = self.close_after if self.reward.kind == "click" else c.retention
        self._ignore_conversions = self.reward.kind == "click"

    # -- input ----------------------------------------------------------------------------------
    def process(self, event: Event) -> str:
        """Apply one decoded event; returns what happened (``"impression"``, ``"click"``,
        ``"conversion"``, ``"duplicate"``, ``"conflict"``, ``"held"``, ``"late"``, ``"unmatched"`` or
        ``"ignored"``)."""
        if isinstance(event, Impression):
            return self._impression(event)
        return self._feedback(event)

    def advance(self, event_time: float) -> None:
        """Move the watermark to ``event_time - allowed_lateness`` (never backwards) and evict."""
        self.set_watermark(event_time - self.config.allowed_lateness)

    def set_watermark(self, watermark: float) -> None:
        if self.watermark is not None and watermark <= self.watermark:
            return
        if self.tick is not None and self.watermark is not None:  # the sink ticks and advances to each
            self.sink.ticks_until(self, watermark)  # type: ignore[attr-defined]  # grid point passed
        self._advance(watermark)

    def _advance(self, watermark: float) -> None:
        self.watermark = watermark
        due = self.due
        close_after = self.close_after
        if due.next[0] + close_after < watermark:
            store, counters = self.store, self.counters
            closing = due.take(0, close_after, watermark, store, CLOSED)
            sink = self.sink
            wants = closing and getattr(sink, "wants_close", True)  # (a sink that learns nothing at the close)
            for start in range(0, len(closing), 4096):  # (the sink sees no other impression's flags)
                chunk = closing if len(closing) <= 8 else list(closing[start:start + 4096])
                for s in chunk:
                    store.flags[s] |= CLOSED
                    if self._tracking:
                        self._touch(s)
                counters["closed"] += len(chunk)
                if wants:
                    closed_to_sink(store, chunk, sink, self._arm_only)
        retention = self.retention
        if due.next[1] + retention < watermark:
            store, counters = self.store, self.counters
            for s in due.take(1, retention, watermark, store, 0):
                if self._tracking:
                    imp_id = store.id_of(s)
                    self._seq += 1
                    self._changed.pop(s, None)
                    self._removed[imp_id] = self._seq
                store.remove(s)
                counters["evicted"] += 1
        heap = self._pending_heap
        skew = self.config.clock_skew if heap else 0.0
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
    def _touch(self, slot: int) -> None:
        """Record a change for the next delta. Nothing is tracked before a checkpoint was saved or
        restored (the first is a full snapshot: a run without checkpoints keeps no record), nor once
        so much changed that the next checkpoint is a full snapshot anyway."""
        if not self._tracking:
            return
        self._seq += 1
        self._changed[slot] = self._seq
        if not self._seq & 4095 and self.delta_policy.full_due(
                depth=self._depth, churn=self._churn, changes=len(self._changed) + len(self._removed),
                live=len(self.store)):
            self._tracking = False
            self._changed, self._removed = {}, {}

    def _late(self, ts: float) -> bool:
        return self.watermark is not None and ts < self.watermark

    def _impression(self, ev: Impression) -> str:
        digest = content_digest(ev)
        store, counters = self.store, self.counters
        slot = store.find(ev.impression_id)
        if slot >= 0:
            if store.digest[slot] not in (0, digest):
                return self._conflict(ev, f"impression {ev.impression_id} was already joined")
            counters["duplicates"] += 1
            return "duplicate"
        if self.watermark is not None and ev.ts < self.watermark:
            counters["late"] += 1
            self._dead(ev, "late impression: older than the watermark")
            return "late"
        features = None if ev.arm_features is None else ev.arm_features.get(ev.arm)
        arm = sys.intern(ev.arm)
        candidates = len(ev.candidates) if ev.candidates else 0
        slot = store.add(ev.impression_id, ev.event_id, ev.ts, arm, ev.propensity, candidates, digest)
        gen = store.gen[slot]
        self.due.push(ev.ts, slot, gen)
        counters["impressions"] += 1
        self._touch(slot)
        imp = None
        if self._arm_only:  # the sink reads the arm only: no impression built
            self.sink.impression_arm(arm)  # type: ignore[attr-defined]
        else:
            if self._keep_context:  # until the sink stores its vectors
                store.contexts[slot] = (ev.context, features)
            imp = OpenRef(ev.impression_id, ev.event_id, ev.ts, arm, ev.context, features, False, 0, 0.0, 0.0, (),
                          ev.propensity, candidates, False, digest, (), None, None, slot, gen)
            self.sink.on_impression(imp)
            if imp.x is not None:  # the sink keeps the vectors: the context is no longer needed
                store.put_vectors(slot, gen, imp.x, imp.z)
                imp.context, imp.arm_features = _NO_CONTEXT, None
        for fb in self.pending.pop(ev.impression_id, None) or ():
            counters["held"] -= 1
            self._join(imp or store.ref(slot), fb)
        return "impression"

    def _feedback(self, fb: Feedback) -> str:
        if self._ignore_conversions and not isinstance(fb, Click):  # the reward reads no conversion
            self.counters["ignored"] += 1
            return "ignored"
        slot = self.store.find(fb.impression_id)
        if slot >= 0:
            return self._join(self.store.ref(slot), fb)
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

    def _join(self, imp: OpenRef, fb: Feedback) -> str:
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
        self.store.seen[imp.slot] = (imp.seen, imp.seen_digests)
        self._touch(imp.slot)
        if imp.closed and delta != 0.0:  # the window closed: what was learned at the close stands
            self.counters["late"] += 1
            self._dead(fb, f"late {'click' if is_click else 'conversion'}: its impression's window closed")
            return "late"
        was_clicked = imp.clicked
        imp.clicked, imp.conversions, imp.value_sum = clicked, conversions, value_sum
        kind = "click" if is_click else "conversion"
        self.counters["clicks" if is_click else "conversions"] += 1
        if delta != 0.0:
            if imp.applied == 0.0:
                self.counters["rewarded"] += 1
            imp.applied = reward
        self.store.set_feedback(imp.slot, clicked, conversions, value_sum, imp.applied, imp.seen, imp.seen_digests)
        if delta != 0.0:
            if self.tick is None:
                self.sink.on_reward(imp, delta)
            else:  # a sink that learns event times (see the module docstring)
                self.sink.on_reward(imp, delta, fb.ts)  # type: ignore[call-arg]
        if clicked and not was_clicked:
            self.on_click(imp)
        return kind

    def on_click(self, imp: OpenImpression) -> None:
        """Hook: a click made the open impression ``imp`` clicked (after its reward went to the sink);
        see :mod:`banditloop.pipeline.click_labels`."""

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

    # -- state (see banditloop.pipeline.join_state) ------------------------------------------
    def export_state(self) -> bytes:
        """The whole state (open impressions, held feedback, watermark, counters): a full snapshot."""
        return join_state.export_full(self)

    def export_checkpoint(self, base: int | None) -> bytes:
        """What changed since ``base`` (the version last saved or restored), or a full snapshot."""
        return join_state.export_checkpoint(self, base)

    def checkpoint_saved(self, written: bytes | None) -> None:
        """The last exported state (``written``) is durable: the changes it holds are forgotten."""
        join_state.saved(self, written)

    def import_state(self, data: bytes, chain: Sequence[bytes] = ()) -> None:
        """Restore a state: a full snapshot, or a delta after the chain it applies to (oldest first)."""
        join_state.import_chain(self, data, chain)


def _kind(fb: Feedback) -> str:
    return "click" if isinstance(fb, Click) else "conversion"
