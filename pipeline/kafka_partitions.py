"""kafka-python's rebalance listener for a consume worker (see :mod:`banditloop.pipeline.kafka_client`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from kafka import TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener

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
