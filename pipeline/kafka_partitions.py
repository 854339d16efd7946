"""Small Kafka-side pieces of a consume worker: rebalance callbacks, paused waiting, offset mirroring."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from banditloop.pipeline.shard import Shard
from banditloop.pipeline.topics import TopicNames

log = logging.getLogger("banditloop.consume")

PartitionsCallback = Callable[[list[TopicPartition]], None]


class Rebalance(ConsumerRebalanceListener):
    """Forwards the group's revocations and assignments (as lists) to two callbacks."""

    def __init__(self, on_revoked: PartitionsCallback, on_assigned: PartitionsCallback) -> None:
        self.on_revoked = on_revoked
        self.on_assigned = on_assigned

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.on_revoked(list(revoked))

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.on_assigned(list(assigned))


def wait_polling_paused(consumer: KafkaConsumer | None, seconds: float) -> None:
    """Sleep while keeping group membership alive: poll with every partition paused."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if consumer is not None:
            records = consumer.poll(timeout_ms=int(min(0.5, end - time.monotonic()) * 1000) + 1)
            if records:  # cannot happen while paused; never drop data silently
                raise RuntimeError("records returned for paused partitions")
        else:
            time.sleep(min(0.5, end - time.monotonic()))


def mirror_offsets(consumer: KafkaConsumer, topics: TopicNames, shards: Sequence[Shard]) -> None:
    """Commit the shards' durable offsets to Kafka too, for lag monitoring only (the checkpoints
    hold the offsets that count); never fails."""
    roles = topics.inputs()
    offsets = {TopicPartition(roles[role], shard.partition): OffsetAndMetadata(offset, "", -1)
               for shard in shards for role, offset in shard.inputs.offsets.items()}
    try:
        consumer.commit_async(offsets=offsets)
    except Exception:  # informational: never fail a checkpoint on it
        log.debug("offset commit failed", exc_info=True)
