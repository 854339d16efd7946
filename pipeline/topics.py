"""Topic names and idempotent topic creation.

The three event topics must have the **same partition count**: events are keyed by
``impression_id`` and partitioned with the default murmur2 partitioner, so an impression and its
clicks/conversions land in the same partition *number* of their topics only when the counts are
equal (and the range assignor then gives a consumer the same numbers of all three).

Topic metadata is read with a group-less :class:`kafka.KafkaConsumer` rather than
``KafkaAdminClient.list_topics``/``describe_topics``: with kafka-python 2.3.x those fail against
Tansu (``ValueError: 14 is not a valid ACLOperation``); see ``docs/kafka-notes.md``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # kafka-python is imported where it is used: the command line starts without it
    from kafka import KafkaConsumer

__all__ = ["TopicMismatchError", "TopicNames", "ensure_topics", "missing_topics", "topic_partitions"]


@dataclass(frozen=True)
class TopicNames:
    """Names of the three event topics and the dead-letter topic."""

    impressions: str = "impressions"
    clicks: str = "clicks"
    conversions: str = "conversions"
    dead_letters: str = "banditloop-dead-letters"

    @property
    def events(self) -> tuple[str, str, str]:
        """The three event topics (impressions, clicks, conversions)."""
        return (self.impressions, self.clicks, self.conversions)

    def inputs(self) -> dict[str, str]:
        """The learners' inputs by role: ``{"impressions": topic, "clicks": topic, "conversions": topic}``."""
        return {"impressions": self.impressions, "clicks": self.clicks, "conversions": self.conversions}

    def all(self) -> tuple[str, str, str, str]:
        """Event topics followed by the dead-letter topic."""
        return (*self.events, self.dead_letters)

    def for_type(self, event_type: str) -> str:
        """Topic of an event ``type`` tag: ``impression``, ``click`` or ``conversion``."""
        try:
            return {"impression": self.impressions, "click": self.clicks, "conversion": self.conversions}[event_type]
        except KeyError:
            raise ValueError(f"unknown event type {event_type!r}") from None

    def __post_init__(self) -> None:
        names = self.all()
        if any(not n for n in names):
            raise ValueError("topic names must be non-empty")
        if len(set(names)) != len(names):
            raise ValueError(f"topic names must be distinct: {names}")


class TopicMismatchError(RuntimeError):
    """Existing topics do not have the partition counts the pipeline needs."""


def topic_partitions(bootstrap: str, topics: tuple[str, ...] | list[str] | None = None,
                     *, timeout: float = 30.0) -> dict[str, int]:
    """Partition count of each existing topic (all topics when ``topics`` is None); missing ones omitted."""
    consumer = _metadata_consumer(bootstrap, timeout)
    try:
        return _partitions(consumer, topics)
    finally:
        consumer.close()


def _metadata_consumer(bootstrap: str, timeout: float) -> KafkaConsumer:
    from kafka import KafkaConsumer

    return KafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id="banditloop-topics",
        allow_auto_create_topics=False,  # Tansu auto-creates (with 4 partitions) otherwise
        enable_auto_commit=False,
        request_timeout_ms=int(max(timeout, 1.0) * 1000) + 1000,
    )


def _partitions(consumer: KafkaConsumer, topics: tuple[str, ...] | list[str] | None) -> dict[str, int]:
    existing = consumer.topics()  # always a fresh metadata request for all topics
    wanted = existing if topics is None else [t for t in topics if t in existing]
    return {t: len(consumer.partitions_for_topic(t) or ()) for t in wanted}


def ensure_topics(
    bootstrap: str,
    names: TopicNames | None = None,
    partitions: int | None = 1,
    *,
    dead_letter_partitions: int = 1,
    timeout: float = 30.0,
) -> dict[str, int]:
    """Create the topics that are missing; idempotent. Returns ``{topic: partition count}``.

    The three event topics get ``partitions`` partitions each; the dead-letter topic gets
    ``dead_letter_partitions`` (any count is accepted for an existing one). ``partitions=None``
    takes the count of the event topics that exist, or, when none does, the broker's default
    (``num.partitions``; the first topic is created with "broker default" and the others copy its
    count). Raises :class:`TopicMismatchError`, before creating anything, if an existing event
    topic has a different partition count. Safe against a concurrent creator
    (``TopicAlreadyExists`` is re-checked, not raised).
    """
    names = names or TopicNames()
    if (partitions is not None and partitions < 1) or dead_letter_partitions < 1:
        raise ValueError("partition counts must be >= 1")
    consumer = _metadata_consumer(bootstrap, timeout)
    admin = None
    try:
        existing = _partitions(consumer, list(names.all()))
        if partitions is None:
            counts = sorted({existing[t] for t in names.events if t in existing})
            if len(counts) > 1:
                _check(names, existing, counts[0])  # raises: the existing counts differ
            partitions = counts[0] if counts else None
        else:
            _check(names, existing, partitions)
        if partitions is None:  # nothing exists yet: the broker picks the count of the first topic
            admin = _admin(bootstrap, timeout)
            _create(admin, names.impressions, -1, timeout)
            partitions = _wait_visible(consumer, {names.impressions: 1}, timeout)[names.impressions]
        wanted = {t: partitions for t in names.events}
        wanted[names.dead_letters] = dead_letter_partitions
        missing = [t for t in wanted if t not in existing]
        if missing:
            admin = admin or _admin(bootstrap, timeout)
            for topic in missing:  # one by one: a concurrent creator fails only its own topic
                _create(admin, topic, wanted[topic], timeout)
        existing = _wait_visible(consumer, wanted, timeout)
        _check(names, existing, partitions)
        return existing
    finally:
        if admin is not None:
            admin.close()
        consumer.close()


def missing_topics(bootstrap: str, names: TopicNames | None = None, *, timeout: float = 30.0) -> list[str]:
    """The event and dead-letter topics that do not exist."""
    names = names or TopicNames()
    existing = topic_partitions(bootstrap, list(names.all()), timeout=timeout)
    return [t for t in names.all() if t not in existing]


def _admin(bootstrap: str, timeout: float):  # -> KafkaAdminClient
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="banditloop-topics",
                            request_timeout_ms=int(timeout * 1000))


def _create(admin, topic: str, partitions: int, timeout: float) -> None:
    """Create one topic (replication factor 1, or the broker's default with ``partitions=-1``)."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    try:
        admin.create_topics([NewTopic(topic, partitions, 1 if partitions > 0 else -1)],
                            timeout_ms=int(timeout * 1000))
    except TopicAlreadyExistsError:
        pass
    except Exception as exc:
        if partitions > 0:
            raise
        raise TopicMismatchError(f"the broker did not create topic {topic!r} with its default partition count "
                                 f"({type(exc).__name__}: {exc}); pass --partitions N") from exc


def _wait_visible(consumer: KafkaConsumer, wanted: dict[str, int], timeout: float) -> dict[str, int]:
    """Until metadata shows every topic of ``wanted`` (immediate on Tansu; not necessarily elsewhere)."""
    deadline = time.monotonic() + timeout
    while True:
        existing = _partitions(consumer, list(wanted))
        if len(existing) == len(wanted) and all(existing[t] > 0 for t in wanted):
            return existing
        if time.monotonic() >= deadline:
            absent = sorted(set(wanted) - set(existing))
            raise TopicMismatchError(f"topics not visible in metadata after {timeout:.0f}s: {absent}")
        time.sleep(0.1)


def _check(names: TopicNames, existing: dict[str, int], partitions: int) -> None:
    wrong = {t: existing[t] for t in names.events if t in existing and existing[t] != partitions}
    if wrong:
        detail = ", ".join(f"{t!r} has {n}" for t, n in sorted(wrong.items()))
        raise TopicMismatchError(
            f"event topics must all have {partitions} partitions, but {detail}. Impressions and their "
            "feedback only meet in the same partition number when the counts are equal; recreate the "
            "topics (a memory-only dev broker forgets them on restart) or pass the existing count."
        )
