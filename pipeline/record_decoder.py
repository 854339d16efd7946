"""Kafka records to events: size and schema checks, wrong-topic detection, dead letters."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from kafka import TopicPartition

from banditloop.core.events import (
    DEFAULT_MAX_FUTURE_SKEW,
    MAX_EVENT_BYTES,
    Event,
    InvalidEvent,
    check_not_future,
    decode_event,
)
from banditloop.pipeline.dead_letters import DeadLetterSink

log = logging.getLogger(__name__)


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

    def decode(self, record: Any, tp: TopicPartition, expected: type) -> Event | None:
        """The event in ``record`` (read from ``tp``), or None after dead-lettering it."""
        raw = record.value
        if raw is None:
            self._dead(b"", "empty message (tombstone)", self._source(record, tp))
            return None
        if len(raw) > MAX_EVENT_BYTES:
            self._dead(raw, f"oversized: {len(raw)} bytes, more than {MAX_EVENT_BYTES}",  # the record cuts it
                       self._source(record, tp))
            return None
        try:
            event = decode_event(raw)
        except InvalidEvent as exc:
            self._dead(raw, exc.reason, self._source(record, tp))
            return None
        if not isinstance(event, expected):
            self._dead(raw, f"wrong topic: a {type(event).__name__.lower()} on {tp.topic}", self._source(record, tp))
            return None
        if event.ts > self.horizon:
            try:
                check_not_future(event, self.horizon - self.max_future_skew, self.max_future_skew)
            except InvalidEvent as exc:
                self._dead(raw, exc.reason, self._source(record, tp))
                return None
        return event

    @staticmethod
    def _source(record: Any, tp: TopicPartition) -> str:
        """Where a dead letter came from (built only for dead letters)."""
        return f"{tp.topic}/{tp.partition}/{record.offset}"

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
