"""The Kafka client of a consume worker, behind one small interface: kafka-python or confluent-kafka.

A worker needs little from its client, and the same from both (``consume --kafka-client``):

* ``subscribe(topics, on_revoked, on_assigned)``: join the group; the callbacks get lists of
  :class:`~kafka.TopicPartition` and run inside :meth:`~KafkaClient.poll`. Inside ``on_assigned``
  the worker restores each shard and calls :meth:`~KafkaClient.seek` (or ``seek_to_beginning``) for
  every partition it was given: the checkpoint database holds the offsets that count, never Kafka;
* ``poll(timeout)``: a list of ``(tp, offsets, values)``, one per topic-partition with records,
  offsets ascending (the record values are bytes, or None for a tombstone);
* ``pause_all``/``resume_all`` (database outages), ``assignment``, ``highwater`` (the partition's
  end as last seen, for input idleness and lag), ``commit_async`` (informational only: lag
  monitors), ``resubscribe`` (give every partition back and join again), ``close``.

kafka-python (the default, pure Python) is :class:`KafkaPythonClient`; confluent-kafka (librdkafka, a
C client; extra ``confluent``) is :class:`~banditloop.pipeline.kafka_confluent.ConfluentClient`;
:func:`~banditloop.pipeline.consumer_options.make_client` builds either for a worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any, Protocol

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from banditloop.pipeline.kafka_partitions import PartitionsCallback, Rebalance

log = logging.getLogger("banditloop.consume")

#: records of one topic-partition: offsets and values (bytes, None for a tombstone), in offset order
PolledRecords = tuple[TopicPartition, list[int], list[Any]]

CLIENTS = ("kafka-python", "confluent")


class KafkaClient(Protocol):
    """What a consume worker needs from a Kafka client; see the module docstring."""

    def subscribe(self, topics: list[str], on_revoked: PartitionsCallback, on_assigned: PartitionsCallback) -> None: ...

    def poll(self, timeout: float) -> list[PolledRecords]: ...

    def seek(self, tp: TopicPartition, offset: int) -> None: ...

    def seek_to_beginning(self, tp: TopicPartition) -> None: ...

    def assignment(self) -> set[TopicPartition]: ...

    def highwater(self, tp: TopicPartition) -> int | None: ...

    def pause_all(self) -> None: ...

    def resume_all(self) -> None: ...

    def commit_async(self, offsets: dict[TopicPartition, int]) -> None: ...

    def resubscribe(self) -> None: ...

    def close(self) -> None: ...


class KafkaPythonClient:
    """:class:`KafkaClient` over :class:`kafka.KafkaConsumer`; ``config`` are its keyword arguments."""

    name = "kafka-python"

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.consumer = KafkaConsumer(**config)
        self._topics: list[str] = []
        self._listener: Rebalance | None = None

    def subscribe(self, topics: list[str], on_revoked: PartitionsCallback, on_assigned: PartitionsCallback) -> None:
        self._topics = list(topics)
        self._listener = Rebalance(on_revoked, on_assigned)
        self.consumer.subscribe(topics=self._topics, listener=self._listener)

    def poll(self, timeout: float) -> list[PolledRecords]:
        batch = self.consumer.poll(timeout_ms=int(timeout * 1000))
        return [(tp, [r.offset for r in records], [r.value for r in records])
                for tp, records in batch.items() if records]

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.consumer.seek(tp, offset)

    def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.consumer.seek_to_beginning(tp)

    def assignment(self) -> set[TopicPartition]:
        return set(self.consumer.assignment())

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.consumer.highwater(tp)

    def pause_all(self) -> None:
        self.consumer.pause(*self.consumer.assignment())

    def resume_all(self) -> None:
        self.consumer.resume(*self.consumer.paused())

    def commit_async(self, offsets: dict[TopicPartition, int]) -> None:
        self.consumer.commit_async(offsets={tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})

    def resubscribe(self) -> None:
        self.consumer.unsubscribe()
        self.consumer.subscribe(topics=self._topics, listener=self._listener)

    def close(self) -> None:
        self.consumer.close(autocommit=False)


def wait_paused(client: KafkaClient | None, seconds: float) -> None:
    """Sleep while keeping group membership alive: poll with every partition paused."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if client is not None:
            if client.poll(min(0.5, end - time.monotonic()) + 0.001):  # cannot happen while paused
                raise RuntimeError("records returned for paused partitions")
        else:
            time.sleep(min(0.5, end - time.monotonic()))


def mirror_offsets(client: KafkaClient, roles: dict[str, str], shards: Iterable[Any]) -> None:
    """Commit the shards' durable offsets to Kafka too, for lag monitoring only (the checkpoints
    hold the offsets that count); never fails. ``roles`` maps input roles to topic names."""
    offsets = {TopicPartition(roles[role], shard.partition): offset
               for shard in shards for role, offset in shard.inputs.offsets.items()}
    try:
        client.commit_async(offsets)
    except Exception:  # informational: never fail a checkpoint on it
        log.debug("offset commit failed", exc_info=True)
