"""``consume --kafka-client confluent`` (librdkafka) against the bundled Tansu broker: the same
exactly-once protocol as kafka-python, so the same parameters as ``replay`` after a restart mid-stream
and after a rebalance between a confluent-kafka worker and a kafka-python one sharing the group."""

from __future__ import annotations

import json
import time

import pytest

from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.pipeline.producer import produce_log
from banditloop.pipeline.topics import ensure_topics
from tests.helpers import assert_states_equal
from tests.test_consume import (
    PARTITIONS,
    assert_same_as_replay,
    consume_process,
    consumed,
    fresh_topics,
    make_log,
    run_worker,
)

pytest.importorskip("confluent_kafka")
pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def log_3k(tmp_path_factory):
    return make_log(tmp_path_factory.mktemp("log") / "small.jsonl", steps=3000)


def test_confluent_consume_stopped_mid_stream_and_restarted_equals_replay(kafka_bootstrap, log_3k, tmp_path):
    topics = fresh_topics()
    ensure_topics(kafka_bootstrap, topics, PARTITIONS)
    sent = produce_log(log_3k, kafka_bootstrap, topics)
    total = sum(sent["sent"].values())
    store = CheckpointStore(f"sqlite:///{tmp_path / 'c.db'}")
    group = "g-" + topics.impressions
    first = run_worker(kafka_bootstrap, topics, store, "cf", group, kafka_client="confluent", max_events=total // 2)
    assert 0 < first["messages"] < total and first["partitions"] == list(range(PARTITIONS))
    second = run_worker(kafka_bootstrap, topics, store, "cf", group, kafka_client="confluent")
    assert first["messages"] + second["messages"] >= total  # the rest, from the checkpointed offsets
    assert second["invalid"] == 0
    assert_same_as_replay(store, "cf", log_3k, tmp_path)
    before = consumed(store, "cf")[0]
    again = run_worker(kafka_bootstrap, topics, store, "cf", group, kafka_client="confluent", idle=2.0)
    assert again["messages"] == 0
    assert_states_equal(consumed(store, "cf")[0], before, rtol=0, atol=0)
    store.close()


def test_a_confluent_and_a_kafka_python_worker_share_a_group_and_equal_replay(kafka_bootstrap, tmp_path):
    log = make_log(tmp_path / "log.jsonl", steps=15_000, seed=3)
    topics = fresh_topics()
    ensure_topics(kafka_bootstrap, topics, 4)
    produce_log(log, kafka_bootstrap, topics)
    db = f"sqlite:///{tmp_path / 'mixed.db'}"
    group = "g-" + topics.impressions
    first = consume_process(kafka_bootstrap, topics, db, "mixed", group, "--kafka-client", "confluent", idle="8")
    store = CheckpointStore(db)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and store.latest_version("mixed") is None:
        time.sleep(0.1)
    second = consume_process(kafka_bootstrap, topics, db, "mixed", group, "--kafka-client", "kafka-python",
                             idle="8")  # joins: rebalance
    outs = [p.communicate(timeout=300) for p in (first, second)]
    for proc, (_, err) in zip((first, second), outs, strict=True):
        assert proc.returncode == 0, err
    summaries = [json.loads(out) for out, _ in outs]
    assert [s["kafka_client"] for s in summaries] == ["confluent", "kafka-python"]
    assert sum(s["rebalances"] for s in summaries) >= 2
    assert {cp.shard for cp in store.latest_per_shard("mixed")} == {"p0", "p1", "p2", "p3"}
    assert_same_as_replay(store, "mixed", log, tmp_path)
    store.close()
