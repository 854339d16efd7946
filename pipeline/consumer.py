"""Live consumption (``banditloop consume``): Kafka topics → join → learner → checkpoints.

Sharding. The three topics have the same partition count and every event is keyed by
``impression_id``, so partition ``p`` of each topic holds an impression and all its feedback. A
worker owns whole partition *numbers* (the range assignor gives a member the same numbers of every
topic) and keeps one shard per number: a learner, a join and the offsets of its three
topic-partitions. The served model is the merge of all shards (exact for additive learners).

Exactly once. A checkpoint writes, per shard and in one database transaction, the learner state,
the join state and the next offset of each topic-partition. A worker that gets a partition restores
that checkpoint and seeks to those offsets (Kafka's committed offsets are informational only), so
after a crash the events after the last checkpoint are replayed onto exactly the state that had not
seen them: nothing is lost or counted twice. Checkpoints run on an APScheduler interval, before
partitions are handed to another worker, and on SIGTERM/SIGINT. When the database is down the
worker pauses its partitions and retries with backoff; it never gets further ahead of the durable
state than one interval.

Watermarks. A shard's watermark is the minimum over its three inputs of the newest event time
read, minus the allowed lateness, advanced record by record. A topic read faster than another
therefore never makes the other's events late, and with topics written in event-time order the
result equals ``replay`` of the same log. An input that is caught up with the broker and has been
silent for ``input_idleness`` seconds stops holding the watermark back (as Flink's idleness does), so
a topic without traffic (no conversions yet) cannot stall eviction forever; when every input is idle
the watermark moves to the newest event time read. Idleness is decided on wall-clock time, so it is
the one place where timing can change what is learned; keep it well above the producers' bursts.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata
from sqlalchemy.exc import SQLAlchemyError

from banditloop.core.events import MAX_EVENT_BYTES, Click, Conversion, Event, Impression, InvalidEvent, decode_event
from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.pipeline.model import ModelConfig
from banditloop.pipeline.runner import IncompatibleCheckpoint, LearningRun
from banditloop.pipeline.scheduling import CheckpointTimer
from banditloop.pipeline.status import write_status
from banditloop.pipeline.topics import TopicNames

log = logging.getLogger("banditloop.consume")

DeadLetterSink = Callable[[bytes, str, str], None]


def shard_name(partition: int) -> str:
    return f"p{partition}"


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


@dataclass
class Shard:
    """One partition number: its learning run, next offsets and newest event time per input."""

    partition: int
    run: LearningRun
    offsets: dict[str, int]
    max_ts: dict[str, float]
    dirty: bool = False
    #: monotonic time each input last delivered a record (or the shard was assigned)
    last_seen: dict[str, float] = field(default_factory=dict)

    def source(self) -> dict[str, Any]:
        return {"kind": "kafka", "partition": self.partition, "offsets": dict(self.offsets),
                "max_ts": dict(self.max_ts)}


_EXPECTED_TYPE = {"impressions": Impression, "clicks": Click, "conversions": Conversion}


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: ConsumerWorker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.worker._on_revoked(list(revoked))

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.worker._on_assigned(list(assigned))


class ConsumerWorker:
    """One member of the consumer group; see the module docstring."""

    def __init__(self, config: ModelConfig, options: ConsumeOptions, store: CheckpointStore,
                 dead_letter: DeadLetterSink | None = None) -> None:
        self.config = config
        self.options = options
        self.store = store
        self.dead_letter_sink = dead_letter
        self.topics = options.topics
        self._role = {self.topics.impressions: "impressions", self.topics.clicks: "clicks",
                      self.topics.conversions: "conversions"}
        self.shards: dict[int, Shard] = {}
        self.stop_event = threading.Event()
        self.counters = {"messages": 0, "invalid": 0, "dead_letters": 0, "checkpoints": 0,
                         "checkpoint_failures": 0, "rebalances": 0}
        self.last_checkpoint_seconds: float | None = None
        self.consumer: KafkaConsumer | None = None
        self._retired_counters: dict[str, int] = {}
        self._assignments = 0
        #: last time a message arrived or partitions were assigned (the --idle-timeout clock)
        self._last_activity: float | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: object) -> None:
            log.info("signal %d: stopping after the current batch", signum)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _make_consumer(self) -> KafkaConsumer:
        from kafka.coordinator.assignors.range import RangePartitionAssignor

        config = {
            "bootstrap_servers": self.options.bootstrap,
            "group_id": self.options.group,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "partition_assignment_strategy": [RangePartitionAssignor],
            "max_poll_records": self.options.max_poll_records,
            "fetch_max_bytes": 16 * 1024 * 1024,
            "max_partition_fetch_bytes": 2 * 1024 * 1024,
            "client_id": f"banditloop-{self.options.group}",
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
        config.update(self.options.consumer_config)
        consumer = KafkaConsumer(**config)
        consumer.subscribe(topics=[self.topics.impressions, self.topics.clicks, self.topics.conversions],
                           listener=_Rebalance(self))
        return consumer

    def run(self) -> dict[str, Any]:
        """Consume until stopped (signal, ``max_events``, ``idle_timeout``); returns a summary."""
        self.consumer = consumer = self._make_consumer()
        started = time.monotonic()
        last_log = time.monotonic()
        processed_at_log = 0
        try:
            with CheckpointTimer(self.options.checkpoint_interval) as timer:
                while not self.stop_event.is_set():
                    batch = consumer.poll(timeout_ms=200)
                    if batch:
                        self._last_activity = time.monotonic()
                        self._process_batch(batch)
                    else:  # idle inputs may now be known to be caught up: let their watermarks move
                        for shard in self.shards.values():
                            self._advance_watermark(shard)
                    if timer.due():
                        self.checkpoint()
                    if self.options.max_events is not None and self.counters["messages"] >= self.options.max_events:
                        log.info("reached --max-events %d", self.options.max_events)
                        break
                    if self._last_activity is None:
                        if time.monotonic() - started > self.options.join_timeout:
                            raise TimeoutError(f"no partition assignment within {self.options.join_timeout:.0f} s")
                    elif self.options.idle_timeout is not None:
                        idle = time.monotonic() - self._last_activity
                        if idle >= self.options.idle_timeout:
                            log.info("no message for %.1f s (--idle-timeout): stopping", idle)
                            break
                    if time.monotonic() - last_log >= self.options.log_interval:
                        rate = (self.counters["messages"] - processed_at_log) / (time.monotonic() - last_log)
                        self._log_progress(rate)
                        last_log, processed_at_log = time.monotonic(), self.counters["messages"]
            self.checkpoint(deadline=time.monotonic() + self.options.shutdown_retry_seconds)
        finally:
            consumer.close(autocommit=False)
            self.consumer = None
        elapsed = time.monotonic() - started
        return self.summary(elapsed)

    # -- processing -----------------------------------------------------------------------------
    def _process_batch(self, batch: dict[TopicPartition, list[Any]]) -> None:
        touched: set[int] = set()
        lateness = self.config.join.allowed_lateness
        counters = self.counters
        decode = self._decode
        for tp, records in batch.items():
            shard = self.shards.get(tp.partition)
            role = self._role.get(tp.topic)
            if shard is None or role is None:  # not ours any more (a rebalance is under way)
                continue
            expected = _EXPECTED_TYPE[role]
            join = shard.run.join
            process = join.process
            offsets = shard.offsets
            newest = shard.max_ts.get(role)
            # the watermark follows this input record by record, bounded by the other inputs
            floor = self._floor(shard, exclude=role)
            for record in records:
                counters["messages"] += 1
                offsets[role] = record.offset + 1
                event = decode(record, tp, expected)
                if event is None:
                    shard.run.invalid += 1
                    continue
                if newest is None or event.ts > newest:
                    newest = event.ts
                    if floor is not None:
                        join.set_watermark(min(newest, floor) - lateness)
                process(event)
            if newest is not None:
                shard.max_ts[role] = newest
            shard.last_seen[role] = time.monotonic()
            shard.dirty = True
            touched.add(tp.partition)
        for partition in touched:
            self._advance_watermark(self.shards[partition])

    def _decode(self, record: Any, tp: TopicPartition, expected: type) -> Event | None:
        raw = record.value
        if raw is None:
            self._dead(b"", "empty message (tombstone)", self._source(record, tp))
            return None
        if len(raw) > MAX_EVENT_BYTES:
            self._dead(raw[:1024], f"oversized: {len(raw)} bytes, more than {MAX_EVENT_BYTES}",
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
        return event

    @staticmethod
    def _source(record: Any, tp: TopicPartition) -> str:
        """Where a dead letter came from (built only for dead letters)."""
        return f"{tp.topic}/{tp.partition}/{record.offset}"

    def _dead(self, raw: bytes, reason: str, source: str) -> None:
        self.counters["invalid"] += 1
        self._send_dead_letter(raw, reason, source)

    def _send_dead_letter(self, raw: bytes, reason: str, source: str) -> None:
        self.counters["dead_letters"] += 1
        if self.dead_letter_sink is not None:
            try:
                self.dead_letter_sink(raw, reason, source)
            except Exception:  # a dead-letter outage must not stop learning
                log.exception("could not publish a dead letter (%s)", reason)

    def _join_dead_letter(self, partition: int) -> Callable[[Event, str], None]:
        from banditloop.core.events import encode_event

        def send(event: Event, reason: str) -> None:
            self._send_dead_letter(encode_event(event), reason, f"join/p{partition}")

        return send

    def _floor(self, shard: Shard, exclude: str | None = None) -> float | None:
        """Minimum newest event time over the inputs (but ``exclude``) that are not idle; ``+inf``
        when all of them are idle; None when a non-idle input has no event time yet (it holds the
        watermark back)."""
        floor = float("inf")
        for role in ("impressions", "clicks", "conversions"):
            if role == exclude or self._idle(shard, role):
                continue
            newest = shard.max_ts.get(role)
            if newest is None:
                return None
            floor = min(floor, newest)
        return floor

    def _idle(self, shard: Shard, role: str) -> bool:
        consumer = self.consumer
        if consumer is None:
            return False
        if time.monotonic() - shard.last_seen.get(role, 0.0) < self.options.input_idleness:
            return False
        highwater = consumer.highwater(TopicPartition(getattr(self.topics, role), shard.partition))
        return highwater is not None and shard.offsets.get(role, 0) >= highwater

    def _advance_watermark(self, shard: Shard) -> None:
        """The minimum newest event time over the inputs that are not idle or, when all are idle,
        the newest event time read at all (everything available has been read)."""
        floor = self._floor(shard)
        if floor is None:
            return
        if floor == float("inf"):
            if not shard.max_ts:
                return
            floor = max(shard.max_ts.values())
        join = shard.run.join
        before = join.watermark
        join.set_watermark(floor - self.config.join.allowed_lateness)
        if join.watermark != before:
            shard.dirty = True

    # -- partitions -----------------------------------------------------------------------------
    def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        partitions = sorted({tp.partition for tp in revoked} & set(self.shards))
        self.counters["rebalances"] += 1
        if not partitions:
            return
        log.info("partitions %s revoked: checkpointing before hand-over", partitions)
        try:
            self._save([self.shards[p] for p in partitions])
        except SQLAlchemyError:
            log.exception("checkpoint before hand-over failed; the next owner resumes from the last durable one")
        for p in partitions:
            self._retire(self.shards.pop(p))

    def _retire(self, shard: Shard) -> None:
        for key, value in shard.run.counters().items():
            self._retired_counters[key] = self._retired_counters.get(key, 0) + value

    def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        self._last_activity = time.monotonic()
        consumer = self.consumer
        partitions = sorted({tp.partition for tp in assigned})
        by_partition: dict[int, set[str]] = {}
        for tp in assigned:
            by_partition.setdefault(tp.partition, set()).add(tp.topic)
        expected = {self.topics.impressions, self.topics.clicks, self.topics.conversions}
        for p, topics in by_partition.items():
            if topics != expected:
                log.error("partition %d assigned for %s only: topics must have equal partition counts "
                          "for impressions and their feedback to meet", p, sorted(topics))
        checkpoints = {cp.shard: cp for cp in self._load_with_retry(partitions)}
        for p in partitions:
            cp = checkpoints.get(shard_name(p))
            dead = self._join_dead_letter(p)
            if cp is not None:
                if cp.source.get("kind") != "kafka":
                    raise IncompatibleCheckpoint(f"model {self.options.model!r} shard {cp.shard} was not written "
                                                 "by consume; use another --model name")
                run = LearningRun.from_checkpoint(cp, dead_letter=dead, expect=self.config)
                offsets = {k: int(v) for k, v in cp.source.get("offsets", {}).items()}
                max_ts = {k: float(v) for k, v in cp.source.get("max_ts", {}).items()}
            else:
                run = LearningRun(self.config, self.options.model, shard=shard_name(p), dead_letter=dead)
                offsets, max_ts = {}, {}
            now = time.monotonic()
            self.shards[p] = Shard(partition=p, run=run, offsets=offsets, max_ts=max_ts,
                                   last_seen=dict.fromkeys(("impressions", "clicks", "conversions"), now))
            for role, topic in (("impressions", self.topics.impressions), ("clicks", self.topics.clicks),
                                ("conversions", self.topics.conversions)):
                tp = TopicPartition(topic, p)
                if tp not in assigned:
                    continue
                if role in offsets:
                    consumer.seek(tp, offsets[role])
                else:
                    consumer.seek_to_beginning(tp)
        log.info("assigned partitions %s (restored %d from checkpoints)", partitions, len(checkpoints))
        self._assignments += 1
        if self.options.ready_file:
            write_status(self.options.ready_file, {
                "pid": os.getpid(), "group": self.options.group, "partitions": partitions,
                "restored": len(checkpoints), "assignments": self._assignments})

    def _load_with_retry(self, partitions: list[int]) -> list:
        """The partitions' newest checkpoints. A partition cannot be processed without its state, so
        a database outage here is waited out (with backoff) rather than skipped."""
        if not partitions:
            return []
        delay = self.options.retry_initial
        while True:
            try:
                return self.store.latest_per_shard(self.options.model, [shard_name(p) for p in partitions])
            except SQLAlchemyError as exc:
                if self.stop_event.is_set():
                    raise
                log.warning("cannot read checkpoints (%s); retrying in %.1f s", type(exc).__name__, delay)
                time.sleep(delay)
                delay = min(delay * 2, self.options.retry_max)

    # -- checkpoints ----------------------------------------------------------------------------
    def checkpoint(self, deadline: float | None = None) -> bool:
        """Write every changed shard in one transaction; on database errors pause consumption and
        retry with backoff (until ``deadline`` when stopping). True when durable."""
        shards = [s for s in self.shards.values() if s.dirty]
        if not shards:
            return True
        delay = self.options.retry_initial
        paused = False
        consumer = self.consumer
        try:
            while True:
                try:
                    self._save(shards)
                    return True
                except SQLAlchemyError as exc:
                    self.counters["checkpoint_failures"] += 1
                    log.warning("checkpoint failed (%s); retrying in %.1f s", type(exc).__name__, delay)
                    if deadline is not None and time.monotonic() + delay > deadline:
                        log.error("giving up the final checkpoint: the next start resumes from the last durable one")
                        return False
                    if consumer is not None and not paused:
                        consumer.pause(*consumer.assignment())
                        paused = True
                    self._wait(delay, consumer)
                    delay = min(delay * 2, self.options.retry_max)
                    shards = [s for s in self.shards.values() if s.dirty]  # a rebalance may have moved some
                    if not shards:
                        return True
                    if self.stop_event.is_set() and deadline is None:
                        deadline = time.monotonic() + self.options.shutdown_retry_seconds
        finally:
            if paused and consumer is not None:
                consumer.resume(*consumer.paused())
                self._last_activity = time.monotonic()  # time paused for the database is not idle time

    def _wait(self, seconds: float, consumer: KafkaConsumer | None) -> None:
        """Sleep while keeping group membership alive (poll with every partition paused)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if consumer is not None:
                records = consumer.poll(timeout_ms=int(min(0.5, end - time.monotonic()) * 1000) + 1)
                if records:  # cannot happen while paused; never drop data silently
                    raise RuntimeError("records returned for paused partitions")
            else:
                time.sleep(min(0.5, end - time.monotonic()))

    def _save(self, shards: list[Shard]) -> None:
        started = time.perf_counter()
        snapshots = [s.run.snapshot(s.source()) for s in shards]
        versions = self.store.save_many(snapshots)
        for shard, version in zip(shards, versions, strict=True):
            shard.run.version = version
            shard.dirty = False
        self.counters["checkpoints"] += 1
        self.last_checkpoint_seconds = time.perf_counter() - started
        self._commit_offsets(shards)

    def _commit_offsets(self, shards: list[Shard]) -> None:
        """Mirror the durable offsets into Kafka, for lag monitoring only."""
        consumer = self.consumer
        if consumer is None:
            return
        offsets = {}
        for shard in shards:
            for role, offset in shard.offsets.items():
                topic = getattr(self.topics, role)
                offsets[TopicPartition(topic, shard.partition)] = OffsetAndMetadata(offset, "", -1)
        try:
            consumer.commit_async(offsets=offsets)
        except Exception:  # informational: never fail a checkpoint on it
            log.debug("offset commit failed", exc_info=True)

    # -- reporting ------------------------------------------------------------------------------
    def lag(self) -> int:
        consumer = self.consumer
        if consumer is None:
            return 0
        total = 0
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            shard = self.shards.get(tp.partition)
            role = self._role.get(tp.topic)
            if highwater is not None and shard is not None and role is not None:
                total += max(0, highwater - shard.offsets.get(role, 0))
        return total

    def join_counters(self) -> dict[str, int]:
        totals = dict(self._retired_counters)
        for shard in self.shards.values():
            for key, value in shard.run.counters().items():
                totals[key] = totals.get(key, 0) + value
        return totals

    def _log_progress(self, rate: float) -> None:
        c = self.join_counters()
        log.info("events/s %.0f | lag %d | partitions %s | impressions %d clicks %d conversions %d | "
                 "join misses %d late %d held %d | invalid %d dead letters %d | checkpoints %d",
                 rate, self.lag(), sorted(self.shards), c.get("impressions", 0), c.get("clicks", 0),
                 c.get("conversions", 0), c.get("unmatched", 0), c.get("late", 0), c.get("held", 0),
                 self.counters["invalid"], self.counters["dead_letters"], self.counters["checkpoints"])

    def summary(self, elapsed: float) -> dict[str, Any]:
        c = self.join_counters()
        return {
            "command": "consume",
            "model": self.options.model,
            "learner": self.config.learner,
            "group": self.options.group,
            "partitions": sorted(self.shards),
            "messages": self.counters["messages"],
            **{k: c.get(k, 0) for k in ("impressions", "clicks", "conversions", "duplicates", "unmatched",
                                        "late", "held", "rewarded")},
            "invalid": self.counters["invalid"],
            "dead_letters": self.counters["dead_letters"],
            "checkpoints": self.counters["checkpoints"],
            "checkpoint_failures": self.counters["checkpoint_failures"],
            "rebalances": self.counters["rebalances"],
            "versions": {shard_name(p): s.run.version for p, s in sorted(self.shards.items())},
            "last_checkpoint_seconds": self.last_checkpoint_seconds,
            "seconds": round(elapsed, 3),
            "events_per_second": round(self.counters["messages"] / elapsed, 1) if elapsed > 0 else None,
        }
