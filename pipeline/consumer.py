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
worker pauses its partitions and retries with backoff; after ``checkpoint_budget`` seconds it gives
its partitions back to the group. A worker claims a lease on each shard it is assigned before it
restores it and writes only while it holds it (:mod:`~banditloop.pipeline.shard_writer`): a worker paused
while another took over cannot roll the model back. Unreadable checkpoints: :mod:`~banditloop.pipeline.shard_restore`.

Watermarks. A shard's watermark follows its three inputs record by record; an input that is caught
up and silent for ``input_idleness`` seconds stops holding it back. The policy, and why, is
:mod:`banditloop.pipeline.watermark`; with topics written in event-time order the result equals
``replay`` of the same log.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from functools import partial
from typing import Any

from kafka import TopicPartition
from sqlalchemy.exc import SQLAlchemyError

from banditloop.core.backoff import Backoff
from banditloop.pipeline.checkpoints import CheckpointStore, LeaseLost
from banditloop.pipeline.consumer_options import ConsumeOptions, make_client
from banditloop.pipeline.dead_letters import DeadLetterSink
from banditloop.pipeline.kafka_client import KafkaClient, PolledRecords, mirror_offsets, wait_paused
from banditloop.pipeline.model import ModelConfig
from banditloop.pipeline.record_decoder import RecordDecoder
from banditloop.pipeline.scheduling import CheckpointTimer
from banditloop.pipeline.shard import EXPECTED_TYPE, Shard, shard_name
from banditloop.pipeline.shard_restore import restore_shard
from banditloop.pipeline.shard_writer import ShardWriter
from banditloop.pipeline.status import write_status
from banditloop.pipeline.watermark import InputWatermarks

log = logging.getLogger("banditloop.consume")
INF = float("inf")


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
        self.counters = {"messages": 0, "rebalances": 0, "skipped_checkpoints": 0}
        self.writer = ShardWriter(store, options.model, f"{socket.gethostname()}:{os.getpid()}:{options.group}")
        self.consumer: KafkaClient | None = None
        self._retired_counters: dict[str, int] = {}
        self._assignments = 0
        self._fatal: Exception | None = None
        #: set when this worker must give its partitions back (a lost lease, a checkpoint over budget)
        self._rejoin_reason: str | None = None
        #: last time a message arrived or partitions were assigned (the --idle-timeout clock)
        self._last_activity: float | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: object) -> None:
            log.info("signal %d: stopping after the current batch", signum)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _make_consumer(self) -> KafkaClient:
        """The Kafka client (``options.kafka_client``), subscribed with this worker's callbacks."""
        consumer = make_client(self.options)
        consumer.subscribe(list(self.topics.events), self._on_revoked, self._on_assigned)
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
                    batch = consumer.poll(0.2)
                    if self._fatal is not None:
                        raise self._fatal
                    if batch:
                        self._last_activity = time.monotonic()
                        self._process_batch(batch)
                    else:  # idle inputs may now be known to be caught up: let their watermarks move
                        for shard in self.shards.values():
                            shard.advance_watermark()
                    if timer.due():
                        self.checkpoint()
                    if self._rejoin_reason is not None:
                        self._give_back_partitions()
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
            consumer.close()
            self.consumer = None
        elapsed = time.monotonic() - started
        return self.summary(elapsed)

    # -- processing -----------------------------------------------------------------------------
    def _process_batch(self, batch: list[PolledRecords]) -> None:
        """Decode each topic-partition's records at once, then apply them one by one in offset order."""
        touched: set[int] = set()
        lateness = self.config.join.allowed_lateness
        counters = self.counters
        decode_batch = self.decoder.decode_batch
        self.decoder.refresh_clock()
        for tp, offsets, values in batch:
            shard = self.shards.get(tp.partition)
            role = self._role.get(tp.topic)
            if shard is None or role is None:  # not ours any more (a rebalance is under way)
                continue
            counters["messages"] += len(values)
            events = decode_batch(values, offsets, tp, EXPECTED_TYPE[role])
            join = shard.run.join
            process, set_watermark = join.process, join.set_watermark
            inputs = shard.inputs
            newest = inputs.max_ts.get(role, -INF)
            # watermark = min(newest, floor) - lateness, constant once newest reaches the floor; no
            # floor: an active input without events yet holds it back
            floor = inputs.floor(exclude=role)
            capped, below = (True, -INF) if floor is None else (False, floor)
            invalid = 0
            for event in events:
                if event is None:
                    invalid += 1
                    continue
                ts = event.ts
                if ts > newest:
                    newest = ts
                    if ts < below:
                        set_watermark(ts - lateness)
                    elif not capped:
                        set_watermark(below - lateness)
                        capped = True
                process(event)
            shard.run.invalid, inputs.offsets[role] = shard.run.invalid + invalid, offsets[-1] + 1
            if newest != -INF:
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
        except LeaseLost as exc:
            self.writer.leases_lost += len(exc.shards)
            log.error("%s: not writing their state at hand-over (the new owner's is newer)", exc)
        except SQLAlchemyError:
            log.exception("checkpoint before hand-over failed; the next owner resumes from the last durable one")
        for p in partitions:
            self._retire(self.shards.pop(p))
            self.writer.release([shard_name(p)])

    def _retire(self, shard: Shard) -> None:
        for key, value in shard.run.counters().items():
            self._retired_counters[key] = self._retired_counters.get(key, 0) + value

    def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        # the Kafka client logs and swallows exceptions raised in rebalance callbacks: keep the error
        # and stop the worker with it (a shard that cannot be restored must not consume silently)
        try:
            self._assign(assigned)
        except Exception as exc:
            log.error("cannot take partitions over: %s", exc)
            self._fatal = exc
            self.stop_event.set()

    def _assign(self, assigned: list[TopicPartition]) -> None:
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
        # a partition cannot be processed without its lease and its state: a database outage is waited out
        self._backoff().retry(lambda: self.writer.claim([shard_name(p) for p in partitions]),
                              retry_on=(SQLAlchemyError,), what="claim partitions", give_up=self.stop_event.is_set)
        restored = 0
        for p in partitions:
            name = shard_name(p)
            r = self._backoff().retry(partial(restore_shard, self.store, self.config, self.options.model, name,
                                              self.decoder.send),
                                      retry_on=(SQLAlchemyError,), what="read checkpoints",
                                      give_up=self.stop_event.is_set)
            restored += r.version is not None
            self.counters["skipped_checkpoints"] += len(r.skipped)
            run, offsets, max_ts = r.run, r.offsets, r.max_ts
            inputs = InputWatermarks(self.topics.inputs(), allowed_lateness=self.config.join.allowed_lateness,
                                     idleness=self.options.input_idleness, highwater=partial(self._highwater, p),
                                     offsets=offsets, max_ts=max_ts)
            self.shards[p] = Shard(partition=p, run=run, inputs=inputs)
            for role, topic in self.topics.inputs().items():
                tp = TopicPartition(topic, p)
                if tp not in assigned:
                    continue
                if role in offsets:
                    consumer.seek(tp, offsets[role])
                else:
                    consumer.seek_to_beginning(tp)
        log.info("assigned partitions %s (restored %d from checkpoints)", partitions, restored)
        self._assignments += 1
        if self.options.ready_file:
            write_status(self.options.ready_file, {
                "pid": os.getpid(), "group": self.options.group, "partitions": partitions,
                "restored": restored, "assignments": self._assignments})

    def _highwater(self, partition: int, role: str) -> int | None:
        """The high watermark offset of an input of ``partition``, as last seen by the consumer."""
        consumer = self.consumer
        return None if consumer is None else consumer.highwater(TopicPartition(self.topics.inputs()[role], partition))

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
        budget_end = time.monotonic() + self.options.checkpoint_budget
        try:
            while True:
                try:
                    self._save(shards)
                    return True
                except LeaseLost as exc:  # another worker owns these now: its state wins, ours is dropped
                    self._drop_lost(exc)
                    shards = [s for s in self.shards.values() if s.dirty]
                    if not shards:
                        return True
                except SQLAlchemyError as exc:
                    self.writer.failures += 1
                    delay = backoff.next()
                    log.warning("checkpoint failed (%s); retrying in %.1f s", type(exc).__name__, delay)
                    if deadline is not None and time.monotonic() + delay > deadline:
                        log.error("giving up the final checkpoint: the next start resumes from the last durable one")
                        return False
                    if deadline is None and time.monotonic() + delay > budget_end:
                        self._rejoin_reason = (f"no durable checkpoint within --checkpoint-budget "
                                               f"{self.options.checkpoint_budget:g} s")
                        return False
                    if consumer is not None and not paused:
                        consumer.pause_all()
                        paused = True
                    wait_paused(consumer, delay)
                    shards = [s for s in self.shards.values() if s.dirty]  # a rebalance may have moved some
                    if not shards:
                        return True
                    if self.stop_event.is_set() and deadline is None:
                        deadline = time.monotonic() + self.options.shutdown_retry_seconds
        finally:
            if paused and consumer is not None:
                consumer.resume_all()
                self._last_activity = time.monotonic()  # time paused for the database is not idle time

    def _drop_lost(self, exc: LeaseLost) -> None:
        self.writer.release(exc.shards)
        self.writer.leases_lost += len(exc.shards)
        for name in exc.shards:
            partition = next((p for p in self.shards if shard_name(p) == name), None)
            if partition is not None:
                self.shards.pop(partition)
        log.error("%s: dropping their state without writing it (it is older than the new owner's)", exc)
        self._rejoin_reason = "lost the lease of " + ", ".join(exc.shards)

    def _give_back_partitions(self) -> None:
        """Leave the group and join it again: every partition goes back to the group and this worker
        restores whatever it is assigned next from the durable checkpoints (exactly-once holds: what
        was not durable is read again)."""
        consumer = self.consumer
        log.error("giving partitions %s back to the group: %s", sorted(self.shards), self._rejoin_reason)
        for partition in list(self.shards):
            self._retire(self.shards.pop(partition))
        self.writer.release(list(self.writer.epochs))
        self._rejoin_reason = None
        self.counters["rebalances"] += 1
        if consumer is not None:
            consumer.resubscribe()
        self._last_activity = time.monotonic()

    def _backoff(self) -> Backoff:
        return Backoff(self.options.retry_initial, self.options.retry_max)

    def _save(self, shards: list[Shard]) -> None:
        self.writer.save(shards)
        if self.consumer is not None:
            mirror_offsets(self.consumer, self.topics.inputs(), shards)

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
                 self.decoder.invalid, self.decoder.dead_letters, self.writer.checkpoints)

    def summary(self, elapsed: float) -> dict[str, Any]:
        c = self.join_counters()
        return {
            "command": "consume",
            "model": self.options.model,
            "learner": self.config.learner,
            "group": self.options.group,
            "partitions": sorted(self.shards),
            "messages": self.counters["messages"],
            **{k: c.get(k, 0) for k in ("impressions", "clicks", "conversions", "duplicates", "conflicts", "unmatched",
                                        "late", "held", "rewarded", "ignored")},
            "invalid": self.decoder.invalid,
            "dead_letters": self.decoder.dead_letters,
            "checkpoints": self.writer.checkpoints,
            "checkpoint_failures": self.writer.failures,
            "leases_lost": self.writer.leases_lost,
            "skipped_checkpoints": self.counters["skipped_checkpoints"],
            "rebalances": self.counters["rebalances"],
            "versions": {shard_name(p): s.run.version for p, s in sorted(self.shards.items())},
            "last_checkpoint_seconds": self.writer.last_seconds,
            "seconds": round(elapsed, 3),
            "events_per_second": round(self.counters["messages"] / elapsed, 1) if elapsed > 0 else None,
        }
