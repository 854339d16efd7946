"""Options of a consume worker, and the Kafka consumer configuration they give."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer

from banditloop.core.events import DEFAULT_MAX_FUTURE_SKEW
from banditloop.pipeline.kafka_client import CLIENTS, KafkaClient, KafkaPythonClient
from banditloop.pipeline.topics import TopicNames


@dataclass
class ConsumeOptions:
    bootstrap: str
    group: str
    model: str
    topics: TopicNames = field(default_factory=TopicNames)
    checkpoint_interval: float = 5.0
    max_events: int | None = None
    idle_timeout: float | None = None
    max_poll_records: int = 2000
    log_interval: float = 10.0
    #: backoff bounds (seconds) for checkpoint retries while the database is unreachable
    retry_initial: float = 0.5
    retry_max: float = 30.0
    #: seconds an input must be caught up and silent before it stops holding the watermark back
    input_idleness: float = 30.0
    #: give up when the group has not assigned partitions (even none) within this time
    join_timeout: float = 120.0
    #: how long a shutdown keeps retrying a failing final checkpoint before giving up (nothing is
    #: lost by giving up: the next owner resumes from the last durable checkpoint)
    shutdown_retry_seconds: float = 60.0
    consumer_config: dict[str, Any] = field(default_factory=dict)
    #: after every partition assignment (state restored, offsets sought) the worker writes a JSON
    #: status here, atomically: ``{"pid", "group", "partitions", "restored", "assignments"}``; a
    #: supervisor (the demo) polls it instead of reading logs
    ready_file: str | None = None
    #: a worker that cannot make its state durable within this many seconds gives its partitions back
    #: to the group (instead of holding them while the database, or a lock, keeps it waiting)
    checkpoint_budget: float = 120.0
    #: events dated more than this many seconds after the worker's clock are dead-lettered
    max_future_skew: float = DEFAULT_MAX_FUTURE_SKEW
    #: the Kafka client library: "kafka-python", "confluent", or "auto" (confluent when confluent-kafka is
    #: installed: it is the faster, see docs/kafka-notes.md); ``consumer_config`` overrides that client's
    #: own settings (:mod:`banditloop.pipeline.kafka_client`)
    kafka_client: str = "auto"


def kafka_consumer_config(options: ConsumeOptions) -> dict[str, Any]:
    """``KafkaConsumer`` keyword arguments for a worker: manual offsets (the checkpoints hold the
    real ones), range assignment (a member gets the same partition numbers of every topic), short
    rebalances, no topic auto-creation; ``options.consumer_config`` overrides any of them."""
    from kafka.coordinator.assignors.range import RangePartitionAssignor

    config = {
        "bootstrap_servers": options.bootstrap,
        "group_id": options.group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "partition_assignment_strategy": [RangePartitionAssignor],
        "max_poll_records": options.max_poll_records,
        "fetch_max_bytes": 16 * 1024 * 1024,
        "max_partition_fetch_bytes": 2 * 1024 * 1024,
        "client_id": f"banditloop-{options.group}",
        # a misspelt topic must not silently become a new topic (Tansu auto-creates by default)
        "allow_auto_create_topics": False,
        # brokers hold a group join for up to half the session timeout: keep rebalances short
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
        # one fetch is in flight per broker; if it covers only partitions read to the end the broker
        # holds it for fetch_max_wait_ms (500 ms by default) while other partitions have data waiting
        "fetch_max_wait_ms": 50,
    }
    if "receive_message_max_bytes" in KafkaConsumer.DEFAULT_CONFIG:
        # kafka-python >= 2.3 refuses network frames over 1 MB by default, and brokers (Tansu among
        # them) may answer a fetch with more than max_partition_fetch_bytes: allow large frames.
        config["receive_message_max_bytes"] = 256 * 1024 * 1024
    config.update(options.consumer_config)
    return config



def confluent_consumer_config(options: ConsumeOptions) -> dict[str, Any]:
    """librdkafka settings for a worker using confluent-kafka, the same choices as
    :func:`kafka_consumer_config` (plus ``max.poll.records``: records per poll, read by the adapter);
    ``options.consumer_config`` overrides any of them."""
    config: dict[str, Any] = {
        "bootstrap.servers": options.bootstrap,
        "group.id": options.group,
        "client.id": f"banditloop-{options.group}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "range",
        "check.crcs": True,
        "allow.auto.create.topics": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
        "fetch.wait.max.ms": 50,
        "fetch.max.bytes": 16 * 1024 * 1024,
        "max.partition.fetch.bytes": 2 * 1024 * 1024,
        "receive.message.max.bytes": 256 * 1024 * 1024,
        "max.poll.records": options.max_poll_records,
    }
    config.update(options.consumer_config)
    return config


def resolve_client(name: str) -> str:
    """``name`` (one of :data:`~banditloop.pipeline.kafka_client.CLIENTS` or ``"auto"``) as the client
    that runs: ``"auto"`` is ``"confluent"`` when confluent-kafka can be imported, else ``"kafka-python"``."""
    if name == "auto":
        try:
            import confluent_kafka  # noqa: F401
        except ImportError:
            return "kafka-python"
        return "confluent"
    if name not in CLIENTS:
        raise ValueError(f"unknown Kafka client {name!r}: auto or one of {', '.join(CLIENTS)}")
    return name


def make_client(options: ConsumeOptions) -> KafkaClient:
    """The Kafka client ``options.kafka_client`` (:func:`resolve_client`) configured for a worker,
    not subscribed yet."""
    if resolve_client(options.kafka_client) == "confluent":
        from banditloop.pipeline.kafka_confluent import ConfluentClient

        return ConfluentClient(confluent_consumer_config(options))
    return KafkaPythonClient(kafka_consumer_config(options))
