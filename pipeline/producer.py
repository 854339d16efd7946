"""Publishing events (and dead letters) to Kafka.

Every event is keyed by its ``impression_id`` and partitioned by kafka-python's default partitioner
(murmur2 of the key bytes, as in the Java client), so with equal partition counts an impression and
all its clicks and conversions land in the same partition *number* of their three topics; see
:func:`partition_for_key`. The value is :func:`banditloop.core.events.encode_event` (compact JSON, ``ts``
as epoch seconds) and the record timestamp is the event time.

Delivery settings: ``acks="all"``, unlimited retries bounded by ``delivery_timeout_ms``, one
request in flight per connection (so retries never reorder a partition), and no auto-creation of
topics. The idempotent producer (``enable_idempotence``) is **off** by default because Tansu's
memory storage answers ``InitProducerId`` with UNKNOWN_SERVER_ERROR, which makes kafka-python's
producer fail every send; pass ``idempotent=True`` against a real Kafka cluster. Without it a
retried batch can be written twice: consumers must tolerate duplicates (``event_id``).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Any

from kafka import KafkaProducer
from kafka.partitioner.default import murmur2
from kafka.producer.future import FutureRecordMetadata

from banditloop.core.events import (
    TYPE_ORDER,
    Click,
    Conversion,
    Event,
    Impression,
    InvalidEvent,
    decode_event,
    encode_event,
    parse_ts,
)
from banditloop.pipeline.dead_letters import MAX_DEAD_LETTER_PAYLOAD, dead_letter_record
from banditloop.pipeline.logs import iter_lines, load_log
from banditloop.pipeline.topics import TopicNames

__all__ = [
    "MAX_DEAD_LETTER_PAYLOAD",
    "EventProducer",
    "ProduceError",
    "decode_dead_letter",
    "encode_dead_letter",
    "partition_for_key",
    "produce_log",
]

log = logging.getLogger("banditloop.producer")


class ProduceError(RuntimeError):
    """One or more sends were not acknowledged by the broker."""


def partition_for_key(key: str | bytes, partitions: int) -> int:
    """The partition kafka-python's (and Java's) default partitioner picks for ``key``."""
    data = key.encode("utf-8") if isinstance(key, str) else key
    return (murmur2(data) & 0x7FFFFFFF) % partitions


def encode_dead_letter(raw: bytes, reason: str, source: str) -> bytes:
    """The dead-letter record (:func:`banditloop.pipeline.dead_letters.dead_letter_record`) as JSON bytes."""
    record = dead_letter_record(raw, reason, source)
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode_dead_letter(value: bytes) -> dict[str, Any]:
    """Parse a dead-letter record; adds ``raw`` (bytes) decoded from ``payload``/``payload_base64``."""
    record: dict[str, Any] = json.loads(value)
    if "payload_base64" in record:
        record["raw"] = base64.b64decode(record["payload_base64"])
    else:
        record["raw"] = str(record.get("payload", "")).encode("utf-8")
    return record


_TYPE_ROLE = {Impression: "impressions", Click: "clicks", Conversion: "conversions"}


class EventProducer:
    """Sends events to their topic keyed by ``impression_id``; also publishes dead letters.

    ``send`` is asynchronous. :meth:`flush` waits for everything sent so far and raises
    :class:`ProduceError` if any of it failed (since the previous flush). ``acked`` counts
    acknowledged records per topic. Extra keyword arguments go to :class:`kafka.KafkaProducer`.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: TopicNames | None = None,
        *,
        idempotent: bool = False,
        client_id: str = "banditloop-producer",
        **config: Any,
    ) -> None:
        self.topics = topics or TopicNames()
        settings: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": idempotent,
            "max_in_flight_requests_per_connection": 1,
            "linger_ms": 5,
            "batch_size": 64 * 1024,
            "allow_auto_create_topics": False,
            "max_block_ms": 30_000,
            **config,
        }
        self._producer = KafkaProducer(**settings)
        self._lock = threading.Lock()
        self.acked: Counter[str] = Counter()
        self._failures = 0
        self._first_error: BaseException | None = None

    # ----------------------------------------------------------------- sending
    def topic_for(self, event: Event) -> str:
        """The topic an event goes to."""
        try:
            return getattr(self.topics, _TYPE_ROLE[type(event)])
        except KeyError:
            raise TypeError(f"not an event: {type(event).__name__}") from None

    def send(self, event: Event) -> FutureRecordMetadata:
        """Queue ``event`` on its topic, key ``impression_id``, timestamp = event time."""
        topic = self.topic_for(event)
        ts_ms = int(round(parse_ts(event.ts) * 1000))
        return self._send(topic, event.impression_id.encode("utf-8"), encode_event(event),
                          ts_ms if ts_ms >= 0 else None)

    def send_dead_letter(self, raw: bytes, reason: str, source: str) -> FutureRecordMetadata:
        """Publish an unusable message to the dead-letter topic (see :func:`encode_dead_letter`).

        ``source`` says where it came from, e.g. ``"impressions/3/1207"`` (topic/partition/offset).
        """
        return self._send(self.topics.dead_letters, None, encode_dead_letter(raw, reason, source), None)

    def _send(self, topic: str, key: bytes | None, value: bytes, ts_ms: int | None) -> FutureRecordMetadata:
        future = self._producer.send(topic, key=key, value=value, timestamp_ms=ts_ms)
        future.add_callback(self._on_ack, topic)
        future.add_errback(self._on_error, topic)
        return future

    def _on_ack(self, topic: str, _metadata: object) -> None:
        with self._lock:
            self.acked[topic] += 1

    def _on_error(self, topic: str, exc: BaseException) -> None:
        with self._lock:
            self._failures += 1
            if self._first_error is None:
                self._first_error = exc
        log.error("send to %s failed: %s", topic, exc)

    # ----------------------------------------------------------------- lifecycle
    def flush(self, timeout: float | None = None) -> None:
        """Wait for all queued sends; raise :class:`ProduceError` if any failed since the last flush."""
        self._producer.flush(timeout=timeout)
        with self._lock:
            failures, first = self._failures, self._first_error
            self._failures, self._first_error = 0, None
        if failures:
            raise ProduceError(f"{failures} record(s) not delivered; first error: {first!r}") from first

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush and close. Failures are logged, not raised (call :meth:`flush` first to check)."""
        try:
            self.flush(timeout=timeout)
        except ProduceError as exc:
            log.error("closing producer: %s", exc)
        except Exception as exc:  # e.g. a flush timeout: still close the client
            log.error("closing producer: flush failed: %r", exc)
        finally:
            self._producer.close(timeout=timeout)

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _order_key(event: Event) -> tuple[float, int]:
    return (event.ts, TYPE_ORDER[type(event)])


def produce_log(
    path: str | Path,
    bootstrap: str,
    topics: TopicNames | None = None,
    *,
    producer: EventProducer | None = None,
    dead_letter_invalid: bool = False,
    keep_errors: int = 20,
    quiet: bool = True,
) -> dict[str, Any]:
    """Publish a ``.jsonl``/``.jsonl.gz`` event log in event-time order; returns a summary.

    Order is the one :func:`banditloop.pipeline.logs.load_log` (and hence ``replay``) uses: by ``ts``, then
    impression before click before conversion, then line number. A log already in that order is
    streamed (two passes, constant memory); otherwise it is loaded and sorted in memory. Invalid
    lines are counted and skipped (and published to the dead-letter topic with
    ``dead_letter_invalid``, source ``"<path>:<line>"``). Unless ``quiet``, progress bars on stderr
    (after two seconds) show the order check and the sending, whose rate is the summary's
    ``events_per_second``.

    Summary: ``{"path", "lines", "sent": {topic: n}, "invalid", "invalid_reasons", "errors":
    [(line, reason), ...first keep_errors], "reordered", "seconds", "send_seconds",
    "events_per_second"}``. Raises :class:`ProduceError` if the broker did not acknowledge everything.
    """
    from banditloop.pipeline.progress import progress_bar

    started = time.monotonic()
    own = producer is None
    prod = producer if producer is not None else EventProducer(bootstrap, topics)
    topics = prod.topics
    reasons: Counter[str] = Counter()
    errors: list[tuple[int, str]] = []
    sent: Counter[str] = Counter()

    def invalid(number: int, raw: bytes, reason: str) -> None:
        reasons[reason.split(":", 1)[0]] += 1
        if len(errors) < keep_errors:
            errors.append((number, reason))
        if dead_letter_invalid:
            prod.send_dead_letter(raw, reason, f"{path}:{number}")

    def publish(event: Event) -> None:
        prod.send(event)
        sent[prod.topic_for(event)] += 1

    try:
        # Pass 1: is the log already in event-time order? (Validates every line; counts nothing yet.)
        in_order = True
        previous: tuple[float, int] | None = None
        checked = 0
        with progress_bar(None, desc="produce: checking order", unit="line", quiet=quiet) as bar:
            for checked, (_number, raw) in enumerate(iter_lines(path), start=1):
                if checked % 4096 == 0:
                    bar.update(4096)
                try:
                    key = _order_key(decode_event(raw))
                except InvalidEvent:
                    continue
                if previous is not None and key < previous:
                    in_order = False
                    break
                previous = key
            bar.update(checked - bar.n)
        lines = 0
        if in_order:
            send_started = time.monotonic()
            with progress_bar(checked, desc="produce", unit="ev", quiet=quiet) as bar:
                for number, raw in iter_lines(path):
                    lines += 1
                    if lines % 1024 == 0:
                        bar.update(1024)
                    try:
                        event = decode_event(raw)
                    except InvalidEvent as exc:
                        invalid(number, raw, exc.reason)
                        continue
                    publish(event)
                prod.flush()
                bar.update(lines - bar.n)
        else:
            with progress_bar(None, desc="produce: loading and sorting", unit="line", quiet=quiet):
                loaded = load_log(path, on_invalid=invalid, keep_errors=0)
            lines = loaded.lines
            send_started = time.monotonic()
            with progress_bar(len(loaded.events), desc="produce", unit="ev", quiet=quiet) as bar:
                for position, event in enumerate(loaded.events, start=1):
                    publish(event)
                    if position % 1024 == 0:
                        bar.update(1024)
                prod.flush()
                bar.update(len(loaded.events) - bar.n)
        send_seconds = time.monotonic() - send_started
    finally:
        if own:
            prod.close()
    total = sum(sent.values())
    return {
        "path": str(path),
        "lines": lines,
        "sent": {t: sent.get(t, 0) for t in topics.events},
        "invalid": sum(reasons.values()),
        "invalid_reasons": dict(reasons.most_common()),
        "errors": errors,
        "reordered": not in_order,
        "seconds": round(time.monotonic() - started, 3),
        "send_seconds": round(send_seconds, 3),
        "events_per_second": round(total / send_seconds, 1) if send_seconds > 0 else None,
    }
