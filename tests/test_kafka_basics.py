"""Kafka foundations against the bundled Tansu broker: broker lifecycle, topics, keyed producing,
consumer groups (co-partitioned assignment), committed offsets and dead letters.

Polls use generous deadlines and stop as soon as the condition holds; nothing asserts on timing.
"""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.coordinator.assignors.range import RangePartitionAssignor

from banditloop.core.events import Click, Conversion, Impression, decode_event, encode_event
from banditloop.pipeline.broker import DevBroker, wait_for_kafka
from banditloop.pipeline.producer import (
    MAX_DEAD_LETTER_PAYLOAD,
    EventProducer,
    decode_dead_letter,
    partition_for_key,
    produce_log,
)
from banditloop.pipeline.topics import TopicMismatchError, TopicNames, ensure_topics, topic_partitions

pytestmark = pytest.mark.kafka

DEADLINE = 60.0
#: Tansu holds a JoinGroup for session_timeout/2, so a short session keeps group tests quick.
GROUP_CONFIG = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def fresh_topics() -> TopicNames:
    tag = uuid.uuid4().hex[:8]
    return TopicNames(impressions=f"kb-imp-{tag}", clicks=f"kb-clk-{tag}", conversions=f"kb-cnv-{tag}",
                      dead_letters=f"kb-dead-{tag}")


def group_consumer(bootstrap: str, topics: TopicNames, group: str) -> KafkaConsumer:
    return KafkaConsumer(*topics.events, bootstrap_servers=bootstrap, group_id=group,
                         auto_offset_reset="earliest", enable_auto_commit=False, allow_auto_create_topics=False,
                         partition_assignment_strategy=[RangePartitionAssignor], **GROUP_CONFIG)


def poll_until(consumer: KafkaConsumer, done: Callable[[], bool], sink: list | None = None,
               timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        for records in consumer.poll(timeout_ms=200).values():
            if sink is not None:
                sink.extend(records)


def events_for(n: int, tag: str, t0: float = 1_700_000_000.0) -> list[Impression | Click | Conversion]:
    out: list[Impression | Click | Conversion] = []
    for i in range(n):
        iid = f"{tag}-imp-{i}"
        out.append(Impression(event_id=f"{iid}-e", ts=t0 + i, impression_id=iid, arm=f"a{i % 3}",
                              context={"x": float(i)}))
        out.append(Click(event_id=f"{iid}-c", ts=t0 + i + 0.5, impression_id=iid))
        if i % 2 == 0:
            out.append(Conversion(event_id=f"{iid}-v", ts=t0 + i + 0.7, impression_id=iid, value=1.5))
    return out


def proc_alive(pid: int) -> bool:
    """Alive and not a zombie (a zombie has exited; it only awaits reaping by its new parent)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


# ------------------------------------------------------------------------------------- broker


def test_broker_starts_answers_and_stops_without_orphans():
    broker = DevBroker()
    with broker:
        pid = broker.pid
        assert pid is not None and proc_alive(pid)
        assert os.getpgid(pid) == pid  # own process group: stop() signals the whole group
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
        wait_for_kafka(broker.bootstrap, timeout=10)
    assert not broker.is_running() and broker.pid is None
    assert not proc_alive(pid)
    broker.stop()  # idempotent


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_broker_dies_with_a_sigkilled_parent():
    code = ("import time\nfrom banditloop.pipeline.broker import DevBroker\n"
            "b = DevBroker().start()\nprint(b.pid, flush=True)\ntime.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        line = parent.stdout.readline() if parent.stdout else ""
        assert line.strip().isdigit(), f"parent did not report a broker pid: {line!r}"
        broker_pid = int(line)
        assert proc_alive(broker_pid)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
    deadline = time.monotonic() + 30
    while proc_alive(broker_pid):
        assert time.monotonic() < deadline, f"broker {broker_pid} outlived its SIGKILLed parent"
        time.sleep(0.05)


# ------------------------------------------------------------------------------------- topics


def test_ensure_topics_creates_n_partitions_idempotently(kafka_bootstrap):
    names = fresh_topics()
    created = ensure_topics(kafka_bootstrap, names, 3)
    assert created == {names.impressions: 3, names.clicks: 3, names.conversions: 3, names.dead_letters: 1}
    assert ensure_topics(kafka_bootstrap, names, 3) == created  # second call: nothing to do
    assert topic_partitions(kafka_bootstrap, list(names.all())) == created
    with pytest.raises(TopicMismatchError, match="must all have 5 partitions"):
        ensure_topics(kafka_bootstrap, names, 5)


def test_ensure_topics_rejects_unequal_existing_counts(kafka_bootstrap):
    names = fresh_topics()
    ensure_topics(kafka_bootstrap, TopicNames(impressions=names.impressions, clicks=names.clicks,
                                              conversions=names.conversions + "-other",
                                              dead_letters=names.dead_letters), 2)
    ensure_topics(kafka_bootstrap, TopicNames(impressions=names.impressions + "-x", clicks=names.clicks + "-x",
                                              conversions=names.conversions,
                                              dead_letters=names.dead_letters + "-x"), 4)
    with pytest.raises(TopicMismatchError):
        ensure_topics(kafka_bootstrap, names, 2)


# ------------------------------------------------------------------------------------- producing


def test_impression_and_feedback_land_in_the_same_partition_number(kafka_bootstrap):
    names = fresh_topics()
    ensure_topics(kafka_bootstrap, names, 4)
    events = events_for(60, "kp")
    with EventProducer(kafka_bootstrap, names) as producer:
        futures = [(e, producer.send(e)) for e in events]
        producer.flush()
        assert sum(producer.acked.values()) == len(events)
    partition_of: dict[str, set[int]] = {}
    for event, future in futures:
        meta = future.get(timeout=30)
        assert meta.topic == producer.topic_for(event)
        partition_of.setdefault(event.impression_id, set()).add(meta.partition)
    for iid, parts in partition_of.items():
        assert parts == {partition_for_key(iid, 4)}, iid
    assert len({p for parts in partition_of.values() for p in parts}) > 1  # really spread out


def test_produce_log_publishes_in_event_time_order_and_skips_invalid(kafka_bootstrap, tmp_path):
    names = fresh_topics()
    ensure_topics(kafka_bootstrap, names, 2)
    events = events_for(30, "pl")
    shuffled = events[1::2] + events[0::2]  # out of event-time order
    path = tmp_path / "log.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        for i, event in enumerate(shuffled):
            fh.write(encode_event(event).decode() + "\n")
            if i == 5:
                fh.write("not json\n\n")
            if i == 9:
                fh.write('{"type": "click", "event_id": "x", "ts": "yesterday", "impression_id": "i"}\n')
    summary = produce_log(path, kafka_bootstrap, names)
    assert summary["invalid"] == 2 and summary["reordered"] is True
    assert summary["sent"] == {names.impressions: 30, names.clicks: 30, names.conversions: 15}
    assert summary["lines"] == len(events) + 2

    reader = KafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    tps = [TopicPartition(t, p) for t in names.events for p in range(2)]
    reader.assign(tps)
    reader.seek_to_beginning()
    got: list = []
    poll_until(reader, lambda: len(got) >= len(events), got)
    reader.close()
    for tp in tps:  # within every partition, records are in event-time order
        ts = [decode_event(r.value).ts for r in got if (r.topic, r.partition) == (tp.topic, tp.partition)]
        assert ts == sorted(ts)
    assert sorted(decode_event(r.value).event_id for r in got) == sorted(e.event_id for e in events)


# ------------------------------------------------------------------------------------- consumer groups


def test_group_consumer_over_three_topics_receives_everything_and_commits(kafka_bootstrap):
    names = fresh_topics()
    ensure_topics(kafka_bootstrap, names, 3)
    events = events_for(40, "g1")
    with EventProducer(kafka_bootstrap, names) as producer:
        for e in events:
            producer.send(e)
        producer.flush()
    group = "kb-" + names.impressions
    consumer = group_consumer(kafka_bootstrap, names, group)
    got: list = []
    poll_until(consumer, lambda: len(got) >= len(events), got)
    assert len(consumer.assignment()) == 9
    assert sorted(decode_event(r.value).event_id for r in got) == sorted(e.event_id for e in events)
    consumer.commit()
    per_topic = {t: sum(1 for r in got if r.topic == t) for t in names.events}
    committed = {t: sum(consumer.committed(TopicPartition(t, p)) or 0 for p in range(3)) for t in names.events}
    assert committed == per_topic
    consumer.close()

    # A new member of the group resumes from the committed offsets: nothing to re-read.
    again = group_consumer(kafka_bootstrap, names, group)
    poll_until(again, lambda: len(again.assignment()) == 9)
    assert {tp: again.position(tp) for tp in again.assignment()} == {
        tp: again.committed(tp) for tp in again.assignment()}
    assert not any(again.poll(timeout_ms=500).values())
    again.close()


def test_two_consumers_split_partitions_co_partitioned(kafka_bootstrap):
    names = fresh_topics()
    ensure_topics(kafka_bootstrap, names, 4)
    group = "kb-" + names.impressions
    consumers = [group_consumer(kafka_bootstrap, names, group) for _ in range(2)]
    received: list[list] = [[], []]
    stop = threading.Event()

    def pump(i: int) -> None:
        while not stop.is_set():
            for records in consumers[i].poll(timeout_ms=200).values():
                received[i].extend(records)

    threads = [threading.Thread(target=pump, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    try:
        all_tps = {TopicPartition(t, p) for t in names.events for p in range(4)}

        def split() -> bool:
            a, b = (c.assignment() for c in consumers)
            return bool(a) and bool(b) and not (a & b) and (a | b) == all_tps

        deadline = time.monotonic() + DEADLINE
        while not split():
            assert time.monotonic() < deadline, "the group never split the partitions"
            time.sleep(0.1)
        numbers = []
        for c in consumers:
            by_topic = {t: {tp.partition for tp in c.assignment() if tp.topic == t} for t in names.events}
            assert len({frozenset(v) for v in by_topic.values()}) == 1, by_topic  # same numbers everywhere
            numbers.append(by_topic[names.impressions])
        assert not (numbers[0] & numbers[1]) and numbers[0] | numbers[1] == set(range(4))

        events = events_for(80, "g2")
        with EventProducer(kafka_bootstrap, names) as producer:
            for e in events:
                producer.send(e)
            producer.flush()
        deadline = time.monotonic() + DEADLINE
        while len(received[0]) + len(received[1]) < len(events):
            assert time.monotonic() < deadline, "not everything was received"
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        for c in consumers:
            c.close()
    # Each impression and all its feedback reached the same consumer.
    owner: dict[str, set[int]] = {}
    for i, records in enumerate(received):
        for r in records:
            owner.setdefault(r.key.decode(), set()).add(i)
    assert all(len(v) == 1 for v in owner.values())
    assert {o for v in owner.values() for o in v} == {0, 1}
    assert sorted(decode_event(r.value).event_id for rs in received for r in rs) == sorted(
        e.event_id for e in events)


# ------------------------------------------------------------------------------------- dead letters


def test_dead_letters_carry_reason_source_and_payload(kafka_bootstrap):
    names = fresh_topics()
    ensure_topics(kafka_bootstrap, names, 1)
    cases = [
        (b'{"type": "impression"', "not JSON: truncated", f"{names.impressions}/0/17"),
        (b"\xff\xfe\x00binary", "not JSON: invalid utf-8", f"{names.clicks}/0/3"),
        (b"x" * (MAX_DEAD_LETTER_PAYLOAD + 10), "oversized: too big", f"{names.conversions}/0/0"),
    ]
    with EventProducer(kafka_bootstrap, names) as producer:
        for raw, reason, source in cases:
            producer.send_dead_letter(raw, reason, source)
        producer.flush()
    reader = KafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    tp = TopicPartition(names.dead_letters, 0)
    reader.assign([tp])
    reader.seek_to_beginning(tp)
    got: list = []
    poll_until(reader, lambda: len(got) >= len(cases), got)
    reader.close()
    records = [decode_dead_letter(r.value) for r in got]
    assert [(r["reason"], r["source"]) for r in records] == [(reason, source) for _, reason, source in cases]
    assert records[0]["payload"] == '{"type": "impression"' and records[0]["raw"] == cases[0][0]
    assert "payload" not in records[1] and records[1]["raw"] == cases[1][0]  # base64 for non-UTF-8
    assert records[2]["payload_truncated"] is True and records[2]["payload_bytes"] == len(cases[2][0])
    assert len(records[2]["raw"]) == MAX_DEAD_LETTER_PAYLOAD
