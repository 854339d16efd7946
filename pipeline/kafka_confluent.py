"""confluent-kafka (librdkafka) as the Kafka client of a consume worker (``consume --kafka-client confluent``).

The same protocol as kafka-python (:mod:`banditloop.pipeline.kafka_client`): offsets are never
committed for real (auto-commit and the offset store are off; commits mirror the checkpoints for lag
monitors only), and a partition starts where its checkpoint says. librdkafka cannot seek a partition
before it is assigned, so the seeks the worker asks for inside ``on_assigned`` are collected and the
partitions are then assigned *at* those offsets (``assign`` with explicit offsets, in the rebalance
callback): no record before the checkpointed offset is ever fetched. Group protocol: eager, range
assignor (a member gets the same partition numbers of every topic), as with kafka-python.

Rebalance callbacks run inside :meth:`ConfluentClient.poll` (librdkafka serves them from
``consume``); the final revocation of :meth:`~ConfluentClient.close` is not forwarded (kafka-python
does not call its listener on close either: the worker has made its final checkpoint already).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kafka import TopicPartition

from banditloop.pipeline.kafka_client import PartitionsCallback, PolledRecords

ck: Any
try:  # the optional extra "confluent"
    import confluent_kafka as ck
except ImportError:  # pragma: no cover - depends on the installation
    ck = None

log = logging.getLogger("banditloop.consume")

#: how often (seconds) the broker is asked for a high watermark librdkafka has not cached yet
HIGHWATER_QUERY_INTERVAL = 5.0


class ConfluentClient:
    """:class:`~banditloop.pipeline.kafka_client.KafkaClient` over :class:`confluent_kafka.Consumer`;
    ``config`` is its librdkafka configuration plus ``max.poll.records`` (records per :meth:`poll`)."""

    name = "confluent"

    def __init__(self, config: dict[str, Any]) -> None:
        if ck is None:
            raise ImportError("the confluent Kafka client needs confluent-kafka: pip install 'banditloop[confluent]'")
        self.config = dict(config)
        settings = dict(config)
        self.max_records = int(settings.pop("max.poll.records", 2000))
        settings.setdefault("logger", logging.getLogger("banditloop.kafka"))
        self.consumer = ck.Consumer(settings)
        self._topics: list[str] = []
        self._on_revoked: PartitionsCallback | None = None
        self._on_assigned: PartitionsCallback | None = None
        #: seeks asked for inside on_assigned: offset, or None for the beginning
        self._seeks: dict[TopicPartition, int | None] | None = None
        self._closing = False
        self._highwater_asked: dict[TopicPartition, float] = {}
        self._highwater: dict[TopicPartition, int] = {}

    # -- group membership ---------------------------------------------------------------------
    def subscribe(self, topics: list[str], on_revoked: PartitionsCallback, on_assigned: PartitionsCallback) -> None:
        self._topics = list(topics)
        self._on_revoked, self._on_assigned = on_revoked, on_assigned
        self.consumer.subscribe(self._topics, on_assign=self._assign_cb, on_revoke=self._revoke_cb)

    def _assign_cb(self, consumer: Any, partitions: list[Any]) -> None:
        tps = [TopicPartition(p.topic, p.partition) for p in partitions]
        self._seeks = {}
        try:
            if self._on_assigned is not None and not self._closing:
                self._on_assigned(tps)
            seeks = self._seeks
        finally:
            self._seeks = None
        # every partition starts where the worker said; one it did not seek (it failed to take the
        # partition over and is stopping) starts at the beginning, and is never processed anyway
        consumer.assign([ck.TopicPartition(tp.topic, tp.partition, ck.OFFSET_BEGINNING if seeks.get(tp) is None
                                            else seeks[tp]) for tp in tps])

    def _revoke_cb(self, consumer: Any, partitions: list[Any]) -> None:
        if self._on_revoked is not None and not self._closing:
            self._on_revoked([TopicPartition(p.topic, p.partition) for p in partitions])
        consumer.unassign()

    def resubscribe(self) -> None:
        self.consumer.unsubscribe()
        self.consumer.subscribe(self._topics, on_assign=self._assign_cb, on_revoke=self._revoke_cb)

    def close(self) -> None:
        self._closing = True
        self.consumer.close()

    # -- records --------------------------------------------------------------------------------
    def poll(self, timeout: float) -> list[PolledRecords]:
        messages = self.consumer.consume(num_messages=self.max_records, timeout=timeout)
        out: dict[tuple[str, int], tuple[list[int], list[Any]]] = {}
        key: tuple[str, int] | None = None
        offsets: list[int] = []
        values: list[Any] = []
        m: Any
        for m in messages:
            err = m.error()
            if err is not None:
                if err.fatal():
                    raise ck.KafkaException(err)
                log.warning("Kafka: %s", err)
                continue
            k = (m.topic(), m.partition())
            if k != key:
                key = k
                entry = out.get(k)
                if entry is None:
                    entry = out[k] = ([], [])
                offsets, values = entry
            offsets.append(m.offset())
            values.append(m.value())
        return [(TopicPartition(t, p), o, v) for (t, p), (o, v) in out.items()]

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if self._seeks is not None:  # inside on_assigned: the partition is assigned at this offset
            self._seeks[tp] = offset
        else:
            self.consumer.seek(ck.TopicPartition(tp.topic, tp.partition, offset))

    def seek_to_beginning(self, tp: TopicPartition) -> None:
        if self._seeks is not None:
            self._seeks[tp] = None
        else:
            self.consumer.seek(ck.TopicPartition(tp.topic, tp.partition, ck.OFFSET_BEGINNING))

    # -- positions ------------------------------------------------------------------------------
    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(p.topic, p.partition) for p in self.consumer.assignment()}

    def highwater(self, tp: TopicPartition) -> int | None:
        """The end offset as of the last fetch (librdkafka's cache); an end not cached yet (nothing
        fetched from the partition) is asked of the broker, at most every few seconds."""
        cp = ck.TopicPartition(tp.topic, tp.partition)
        try:
            got = self.consumer.get_watermark_offsets(cp, cached=True)
            if got is not None and got[1] >= 0:
                return int(got[1])
            now = time.monotonic()
            if now - self._highwater_asked.get(tp, -HIGHWATER_QUERY_INTERVAL) >= HIGHWATER_QUERY_INTERVAL:
                self._highwater_asked[tp] = now
                got = self.consumer.get_watermark_offsets(cp, timeout=1.0, cached=False)
                if got is not None and got[1] >= 0:
                    self._highwater[tp] = int(got[1])
        except (ck.KafkaException, RuntimeError):
            log.debug("no high watermark for %s", tp, exc_info=True)
        return self._highwater.get(tp)

    def pause_all(self) -> None:
        self.consumer.pause(self.consumer.assignment())

    def resume_all(self) -> None:
        self.consumer.resume(self.consumer.assignment())

    def commit_async(self, offsets: dict[TopicPartition, int]) -> None:
        if offsets:
            self.consumer.commit(offsets=[ck.TopicPartition(tp.topic, tp.partition, o) for tp, o in offsets.items()],
                                 asynchronous=True)
