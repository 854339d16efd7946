"""Kafka records to events: size and schema checks, wrong-topic detection, dead letters.

A poll batch is decoded a topic-partition at a time (:meth:`RecordDecoder.decode_batch`): one
msgspec typed decode per record in a list comprehension (ranges, sizes and finiteness are checked
in C by the schema's constraints), then one pass for what the schema cannot say. Any record the fast
path is not sure of (not decodable, the wrong type, a time to normalise or in the future, an
impression with an integer arm or a shown arm not among its candidates) goes through
:func:`~banditloop.core.events.decode_event` and the exact one-record checks of
:meth:`RecordDecoder.decode`, so both give the same events and the same dead letters.

>>> from kafka import TopicPartition
>>> from banditloop.core.events import Click
>>> dead = []
>>> decoder = RecordDecoder(lambda raw, reason, source: dead.append((reason, source)))
>>> ok = b'{"type": "click", "event_id": "c1", "ts": 10.0, "impression_id": "i1"}'
>>> events = decoder.decode_batch([ok, b'{"type": "click"', None], [5, 6, 7], TopicPartition("clk", 0), Click)
>>> [type(e).__name__ for e in events]
['Click', 'NoneType', 'NoneType']
>>> [source for _, source in dead]
['clk/0/6', 'clk/0/7']
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import msgspec
from kafka import TopicPartition

from banditloop.core.events import (
    DEFAULT_MAX_FUTURE_SKEW,
    MAX_EVENT_BYTES,
    Event,
    Impression,
    InvalidEvent,
    check_not_future,
    decode_event,
)
from banditloop.pipeline.dead_letters import DeadLetterSink

log = logging.getLogger(__name__)

#: the typed decoder of the fast path (the schema of :func:`~banditloop.core.events.decode_event`)
_event_decoder = msgspec.json.Decoder(Event)


class RecordDecoder:
    """Decodes records of the event topics; anything unusable goes to ``sink`` with its reason and
    ``topic/partition/offset``. Counts ``invalid`` records and ``dead_letters`` sent (the latter
    includes events the join refused).

    Event times more than ``max_future_skew`` seconds ahead of ``clock()`` are refused too: one
    future-dated event would otherwise drag the partition's watermark (which never goes back) into
    the future and make every later event "late". The clock is read once per batch
    (:meth:`refresh_clock`), not per record."""

    def __init__(self, sink: DeadLetterSink | None, *, max_future_skew: float = DEFAULT_MAX_FUTURE_SKEW,
                 clock: Callable[[], float] = time.time) -> None:
        self.sink = sink
        self.invalid = 0
        self.dead_letters = 0
        self.max_future_skew = float(max_future_skew)
        self.clock = clock
        self.horizon = math.inf
        self.refresh_clock()

    def refresh_clock(self) -> None:
        """Event times after ``clock() + max_future_skew`` are refused until the next refresh."""
        self.horizon = self.clock() + self.max_future_skew

    def decode_batch(self, values: list[Any], offsets: list[int], tp: TopicPartition,
                     expected: type) -> list[Event | None]:
        """The events of the records ``values`` read at ``offsets`` from ``tp``, None for each
        dead-lettered one; the same result as :meth:`decode` record by record."""
        decode = _event_decoder.decode
        try:
            if max(map(len, values)) > MAX_EVENT_BYTES:  # TypeError for a tombstone (None)
                raise ValueError("oversized")
            events: list[Event | None] = [decode(raw) for raw in values]
        except (msgspec.DecodeError, TypeError, ValueError):  # something to refuse: one at a time
            return [self.decode(raw, offset, tp, expected) for raw, offset in zip(values, offsets, strict=True)]
        horizon = self.horizon
        impressions = expected is Impression
        for i, event in enumerate(events):
            # anything to normalise, refuse or explain takes the one-record path
            if event.__class__ is not expected or event.ts.__class__ is not float or event.ts > horizon or (  # type: ignore[union-attr]
                    impressions and event.arm.__class__ is not str):  # type: ignore[union-attr]
                events[i] = self.decode(values[i], offsets[i], tp, expected)
            elif impressions and event.candidates is not None:  # type: ignore[union-attr]
                # as decode_event normalises them: candidate ids as strings, the shown arm among them
                candidates = list(map(str, event.candidates))  # type: ignore[union-attr]
                if event.arm in candidates:  # type: ignore[union-attr]
                    event.candidates = candidates  # type: ignore[union-attr]
                else:
                    events[i] = self.decode(values[i], offsets[i], tp, expected)
        return events

    def decode(self, raw: bytes | None, offset: int, tp: TopicPartition, expected: type) -> Event | None:
        """The event in the record ``raw`` read at ``offset`` from ``tp``, or None after dead-lettering it."""
        if raw is None:
            self._dead(b"", "empty message (tombstone)", self._source(offset, tp))
            return None
        if len(raw) > MAX_EVENT_BYTES:
            self._dead(raw, f"oversized: {len(raw)} bytes, more than {MAX_EVENT_BYTES}",  # the record cuts it
                       self._source(offset, tp))
            return None
        try:
            event = decode_event(raw)
        except InvalidEvent as exc:
            self._dead(raw, exc.reason, self._source(offset, tp))
            return None
        if not isinstance(event, expected):
            self._dead(raw, f"wrong topic: a {type(event).__name__.lower()} on {tp.topic}", self._source(offset, tp))
            return None
        if event.ts > self.horizon:
            try:
                check_not_future(event, self.horizon - self.max_future_skew, self.max_future_skew)
            except InvalidEvent as exc:
                self._dead(raw, exc.reason, self._source(offset, tp))
                return None
        return event

    @staticmethod
    def _source(offset: int, tp: TopicPartition) -> str:
        """Where a dead letter came from (built only for dead letters)."""
        return f"{tp.topic}/{tp.partition}/{offset}"

    def _dead(self, raw: bytes, reason: str, source: str) -> None:
        self.invalid += 1
        self.send(raw, reason, source)

    def send(self, raw: bytes, reason: str, source: str) -> None:
        """A :data:`DeadLetterSink` that counts and never raises: a dead-letter outage must not
        stop learning (the join's refusals come here too)."""
        self.dead_letters += 1
        if self.sink is not None:
            try:
                self.sink(raw, reason, source)
            except Exception:  # a dead-letter outage must not stop learning
                log.exception("could not publish a dead letter (%s)", reason)
