"""Hands events from request handlers to Kafka without ever blocking a request.

A request handler only puts the event on a bounded in-memory queue (``put_nowait``: when the queue
is full the event is dropped and counted, never waited for). One daemon thread owns the
:class:`~banditloop.pipeline.producer.EventProducer`: it connects (retrying with back-off while Kafka is down,
so the service starts and scores without Kafka), sends, and records acknowledgements and failures
in the metrics. ``KafkaProducer.send`` may block for metadata or buffer space; that blocks this
thread only, and the queue absorbs the wait.

An impression event that would be larger than the consumer accepts (``MAX_EVENT_BYTES``) is cut
down rather than lost: first the other candidates' arm features go, then the candidate list; only
if the context alone is too large is it dropped (``publish_errors_total{reason="oversized"}``).

Callers that need to know the outcome (``POST /feedback``) pass ``ack=True`` and get a
:class:`concurrent.futures.Future` that resolves when the broker acknowledges the record or fails.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from banditloop.core.backoff import Backoff
from banditloop.core.events import MAX_EVENT_BYTES, Event, Impression, encode_event
from banditloop.pipeline.topics import TopicNames
from banditloop.serving.http.metrics import ServiceMetrics

log = logging.getLogger("banditloop.serve.publisher")

class Producer(Protocol):
    """What the publisher needs of :class:`banditloop.pipeline.producer.EventProducer`."""

    def send(self, event: Event) -> Any: ...

    def close(self, timeout: float | None = ...) -> None: ...


class EventPublisher:
    """Bounded queue + one sender thread around an event producer (see the module docstring)."""

    def __init__(self, make_producer: Callable[[], Producer], metrics: ServiceMetrics, *,
                 max_queue: int = 10_000, close_timeout: float = 10.0) -> None:
        self._make_producer = make_producer
        self.metrics = metrics
        self.close_timeout = close_timeout
        self._queue: queue.Queue[Any] = queue.Queue(max_queue)
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self.connected = threading.Event()

    @classmethod
    def for_kafka(cls, bootstrap: str, metrics: ServiceMetrics, topics: TopicNames | None = None,
                  partitions: int | None = None, linger_ms: int = 50, **kwargs: Any) -> EventPublisher:
        """A publisher to ``topics`` (default names) of ``bootstrap`` through :class:`EventProducer`;
        with ``partitions``, missing topics are created first (:func:`banditloop.pipeline.topics.ensure_topics`)."""
        names = topics or TopicNames()

        def make() -> Producer:
            from banditloop.pipeline.producer import EventProducer
            from banditloop.pipeline.topics import ensure_topics

            if partitions:
                ensure_topics(bootstrap, names, partitions)
            # impressions are not urgent (learners batch them anyway): a longer linger packs several
            # records per partition batch, which cuts the producer's per-batch CPU (CRC, request)
            return EventProducer(bootstrap, names, client_id="banditloop-serve", linger_ms=linger_ms)

        return cls(make, metrics, **kwargs)

    # -- request side ---------------------------------------------------------------------------
    def publish(self, event: Event, *, ack: bool = False) -> concurrent.futures.Future | None:
        """Queue ``event``; never blocks. With ``ack``, a future of the broker's acknowledgement
        (it fails at once if the event could not even be queued)."""
        future: concurrent.futures.Future | None = concurrent.futures.Future() if ack else None
        if self._closed.is_set():
            self._error("closed", future, RuntimeError("publisher is closed"))
            return future
        try:
            self._queue.put_nowait((event, future))
        except queue.Full:
            self._error("queue_full", future, RuntimeError("publish queue is full (Kafka slow or unreachable)"))
        return future

    def queue_size(self) -> int:
        return self._queue.qsize()

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kafka-publisher", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop taking events, send what is queued (for at most ``close_timeout`` seconds), close the
        producer. Events still queued after that are counted as ``closed`` errors."""
        self._closed.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(2 * self.close_timeout + 5.0)

    # -- sender thread --------------------------------------------------------------------------
    def _run(self) -> None:
        producer = self._connect()
        if producer is None:
            self._drain("closed")
            return
        deadline: float | None = None
        try:
            while True:
                if self._closed.is_set():
                    deadline = deadline or time.monotonic() + self.close_timeout
                    if time.monotonic() > deadline:
                        break
                try:
                    event, future = self._queue.get(timeout=0.1)
                except queue.Empty:
                    if self._closed.is_set():
                        break
                    continue
                self._send(producer, event, future)
        finally:
            try:
                producer.close(timeout=self.close_timeout)
            except Exception:
                log.exception("closing the Kafka producer failed")
            self._drain("closed")

    def _connect(self) -> Producer | None:
        backoff = Backoff(initial=0.5, maximum=10.0)
        while not self._closed.is_set():
            try:
                producer = self._make_producer()
            except Exception as exc:  # NoBrokersAvailable and friends: keep scoring, retry
                delay = backoff.next()
                log.warning("Kafka producer not available (%s); retrying in %.1fs", exc, delay)
                if self._closed.wait(delay):
                    return None
                continue
            self.connected.set()
            log.info("Kafka producer connected")
            return producer
        return None

    def _send(self, producer: Producer, event: Event, future: concurrent.futures.Future | None) -> None:
        fitted = self._fit(event)
        if fitted is None:
            self._error("oversized", future, ValueError(f"event larger than {MAX_EVENT_BYTES} bytes"))
            return
        try:
            kafka_future = producer.send(fitted)
        except Exception as exc:
            log.error("publishing %s %s failed: %s", fitted.__struct_config__.tag, fitted.impression_id, exc)
            self._error("send", future, exc)
            return
        kind = fitted.__struct_config__.tag
        published = self.metrics.published.labels(kind)

        def on_ack(metadata: Any) -> None:
            published.inc()
            if future is not None and not future.done():
                future.set_result(metadata)

        def on_error(exc: BaseException) -> None:
            self._error("kafka", future, exc)

        kafka_future.add_callback(on_ack)
        kafka_future.add_errback(on_error)

    @staticmethod
    def _fit(event: Event) -> Event | None:
        """The event, or a smaller copy of an impression that fits ``MAX_EVENT_BYTES``, or None."""
        if len(encode_event(event)) <= MAX_EVENT_BYTES:
            return event
        if not isinstance(event, Impression):
            return None
        own = None if event.arm_features is None else event.arm_features.get(event.arm)
        smaller = msgspec.structs.replace(event, arm_features=None if own is None else {event.arm: own})
        if len(encode_event(smaller)) <= MAX_EVENT_BYTES:
            log.warning("impression %s: dropped other arms' features to fit %d bytes",
                        event.impression_id, MAX_EVENT_BYTES)
            return smaller
        smaller = msgspec.structs.replace(smaller, candidates=None)
        if len(encode_event(smaller)) <= MAX_EVENT_BYTES:
            log.warning("impression %s: dropped the candidate list to fit %d bytes",
                        event.impression_id, MAX_EVENT_BYTES)
            return smaller
        return None

    def _error(self, reason: str, future: concurrent.futures.Future | None, exc: BaseException) -> None:
        self.metrics.publish_errors.labels(reason).inc()
        if future is not None and not future.done():
            future.set_exception(exc)

    def _drain(self, reason: str) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            self._error(reason, item[1], RuntimeError("publisher closed before the event was sent"))

