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

Watermarks. A shard's watermark follows its three inputs record by record; an input that is caught
up and silent for ``input_idleness`` seconds stops holding it back. The policy, and why, is
:mod:`banditloop.pipeline.watermark`; with topics written in event-time order the result equals
``replay`` of the same log.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata
from sqlalchemy.exc import SQLAlchemyError

from banditloop.core.backoff import Backoff
from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.pipeline.consumer_options import ConsumeOptions, kafka_consumer_config
from banditloop.pipeline.dead_letters import DeadLetterSink
from banditloop.pipeline.model import ModelConfig
from banditloop.pipeline.record_decoder import RecordDecoder
from banditloop.pipeline.runner import IncompatibleCheckpoint, LearningRun
from banditloop.pipeline.scheduling import CheckpointTimer
from banditloop.pipeline.shard import EXPECTED_TYPE, Shard, shard_name
from banditloop.pipeline.status import write_status
from banditloop.pipeline.watermark import InputWatermarks

log = logging.getLogger("banditloop.consume")



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
        self.decoder = RecordDecoder(dead_letter, max_future_skew=options.max_future_skew)
        self.topics = options.topics
        self._role = {topic: role for role, topic in self.topics.inputs().items()}
        self.shards: dict[int, Shard] = {}
        self.stop_event = threading.Event()
        self.counters = {"messages": 0, "checkpoints": 0,
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
        consumer = KafkaConsumer(**kafka_consumer_config(self.options))
        consumer.subscribe(topics=list(self.topics.events), listener=_Rebalance(self))
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
                            shard.advance_watermark()
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
        decode = self.decoder.decode
        self.decoder.refresh_clock()
        for tp, records in batch.items():
            shard = self.shards.get(tp.partition)
            role = self._role.get(tp.topic)
            if shard is None or role is None:  # not ours any more (a rebalance is under way)
                continue
            expected = EXPECTED_TYPE[role]
            join = shard.run.join
            process = join.process
            inputs = shard.inputs
            offsets = inputs.offsets
            newest = inputs.max_ts.get(role)
            # the watermark follows this input record by record, bounded by the other inputs
            floor = inputs.floor(exclude=role)
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
                inputs.max_ts[role] = newest
            inputs.touch(role)
            shard.dirty = True
            touched.add(tp.partition)
        for partition in touched:
            self.shards[partition].advance_watermark()

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
        if consumer is None:  # callbacks run inside poll(), while the consumer exists
            raise RuntimeError("partitions assigned to a worker that is not running")
        partitions = sorted({tp.partition for tp in assigned})
        by_partition: dict[int, set[str]] = {}
        for tp in assigned:
            by_partition.setdefault(tp.partition, set()).add(tp.topic)
        expected = set(self.topics.events)
        for p, topics in by_partition.items():
            if topics != expected:
                log.error("partition %d assigned for %s only: topics must have equal partition counts "
                          "for impressions and their feedback to meet", p, sorted(topics))
        checkpoints = {cp.shard: cp for cp in self._load_with_retry(partitions)}
        for p in partitions:
            cp = checkpoints.get(shard_name(p))
            if cp is not None:
                if cp.source.get("kind") != "kafka":
                    raise IncompatibleCheckpoint(f"model {self.options.model!r} shard {cp.shard} was not written "
                                                 "by consume; use another --model name")
                run = LearningRun.from_checkpoint(cp, dead_letter=self.decoder.send, expect=self.config)
                offsets = {k: int(v) for k, v in cp.source.get("offsets", {}).items()}
                max_ts = {k: float(v) for k, v in cp.source.get("max_ts", {}).items()}
            else:
                run = LearningRun(self.config, self.options.model, shard=shard_name(p),
                                  dead_letter=self.decoder.send)
                offsets, max_ts = {}, {}
            inputs = InputWatermarks(
                self.topics.inputs(), allowed_lateness=self.config.join.allowed_lateness,
                idleness=self.options.input_idleness, highwater=self._highwater(p), offsets=offsets, max_ts=max_ts)
            self.shards[p] = Shard(partition=p, run=run, inputs=inputs)
            for role, topic in self.topics.inputs().items():
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

    def _highwater(self, partition: int) -> Callable[[str], int | None]:
        """The high watermark offset of an input of ``partition``, as last seen by the consumer."""
        topics = self.topics.inputs()

        def highwater(role: str) -> int | None:
            consumer = self.consumer
            return None if consumer is None else consumer.highwater(TopicPartition(topics[role], partition))

        return highwater

    def _load_with_retry(self, partitions: list[int]) -> list:
        """The partitions' newest checkpoints. A partition cannot be processed without its state, so
        a database outage here is waited out (with backoff) rather than skipped."""
        if not partitions:
            return []
        backoff = self._backoff()
        while True:
            try:
                return self.store.latest_per_shard(self.options.model, [shard_name(p) for p in partitions])
            except SQLAlchemyError as exc:
                if self.stop_event.is_set():
                    raise
                delay = backoff.next()
                log.warning("cannot read checkpoints (%s); retrying in %.1f s", type(exc).__name__, delay)
                time.sleep(delay)

    # -- checkpoints ----------------------------------------------------------------------------
    def checkpoint(self, deadline: float | None = None) -> bool:
        """Write every changed shard in one transaction; on database errors pause consumption and
        retry with backoff (until ``deadline`` when stopping). True when durable."""
        shards = [s for s in self.shards.values() if s.dirty]
        if not shards:
            return True
        backoff = self._backoff()
        paused = False
        consumer = self.consumer
        try:
            while True:
                try:
                    self._save(shards)
                    return True
                except SQLAlchemyError as exc:
                    self.counters["checkpoint_failures"] += 1
                    delay = backoff.next()
                    log.warning("checkpoint failed (%s); retrying in %.1f s", type(exc).__name__, delay)
                    if deadline is not None and time.monotonic() + delay > deadline:
                        log.error("giving up the final checkpoint: the next start resumes from the last durable one")
                        return False
                    if consumer is not None and not paused:
                        consumer.pause(*consumer.assignment())
                        paused = True
                    self._wait(delay, consumer)
                    shards = [s for s in self.shards.values() if s.dirty]  # a rebalance may have moved some
                    if not shards:
                        return True
                    if self.stop_event.is_set() and deadline is None:
                        deadline = time.monotonic() + self.options.shutdown_retry_seconds
        finally:
            if paused and consumer is not None:
                consumer.resume(*consumer.paused())
                self._last_activity = time.monotonic()  # time paused for the database is not idle time

    def _backoff(self) -> Backoff:
        return Backoff(self.options.retry_initial, self.options.retry_max)

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
            topics = self.topics.inputs()
            for role, offset in shard.inputs.offsets.items():
                topic = topics[role]
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
                total += max(0, highwater - shard.inputs.offsets.get(role, 0))
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
                 self.decoder.invalid, self.decoder.dead_letters, self.counters["checkpoints"])

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
            "invalid": self.decoder.invalid,
            "dead_letters": self.decoder.dead_letters,
            "checkpoints": self.counters["checkpoints"],
            "checkpoint_failures": self.counters["checkpoint_failures"],
            "rebalances": self.counters["rebalances"],
            "versions": {shard_name(p): s.run.version for p, s in sorted(self.shards.items())},
            "last_checkpoint_seconds": self.last_checkpoint_seconds,
            "seconds": round(elapsed, 3),
            "events_per_second": round(self.counters["messages"] / elapsed, 1) if elapsed > 0 else None,
        }
