"""Live consumption against the real (Tansu) broker and real databases.

Every test uses its own topics and consumer group on the session's broker, and compares what the
consumers checkpointed (merged over shards) with a ``replay`` of the same log.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer

from banditloop.core.features import FeatureSpec, dense_names
from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.pipeline.consumer import ConsumeOptions, ConsumerWorker
from banditloop.pipeline.model import ModelConfig
from banditloop.pipeline.producer import produce_log
from banditloop.pipeline.replay import ReplayOptions, replay_log
from banditloop.pipeline.simulate import SimulationOptions, simulate
from banditloop.pipeline.status import read_status
from banditloop.pipeline.topics import TopicNames, ensure_topics
from banditloop.serving.served import merge_checkpoints
from banditloop.simulators.world import WorldConfig
from tests.helpers import assert_states_equal

pytestmark = pytest.mark.kafka

DIM = 4
PARTITIONS = 3
COUNTS = ("impressions", "clicks", "conversions", "duplicates", "rewarded")


def model_config(learner="diag-linucb"):
    return ModelConfig(learner=learner, features=FeatureSpec(dim=DIM + 1, numeric=dense_names("x", DIM)))


def feature_args():
    return ["--dim", str(DIM + 1), "--numeric", ",".join(dense_names("x", DIM))]


def fresh_topics() -> TopicNames:
    tag = uuid.uuid4().hex[:8]
    return TopicNames(impressions=f"imp-{tag}", clicks=f"clk-{tag}", conversions=f"cnv-{tag}",
                      dead_letters=f"dead-{tag}")


def topic_args(topics: TopicNames):
    return ["--impressions-topic", topics.impressions, "--clicks-topic", topics.clicks,
            "--conversions-topic", topics.conversions, "--dead-letter-topic", topics.dead_letters]


def make_log(path: Path, steps: int, seed: int = 11) -> Path:
    simulate(WorldConfig(arms=8, dim=DIM, seed=seed, click_delay_mean=20.0, conversion_delay_mean=300.0),
             model_config(), "sim", None, SimulationOptions(steps=steps, out=path, quiet=True))
    return path


@pytest.fixture(scope="module")
def small_log(tmp_path_factory):
    return make_log(tmp_path_factory.mktemp("log") / "small.jsonl", steps=3000)


def replayed(log: Path, tmp_path: Path, learner="diag-linucb"):
    store = CheckpointStore(f"sqlite:///{tmp_path / 'replay.db'}")
    summary = replay_log(log, model_config(learner), "replay", store, ReplayOptions(quiet=True))
    state = store.latest("replay").state
    store.close()
    return summary, state


def consumed(store: CheckpointStore, model: str):
    checkpoints = store.latest_per_shard(model)
    _, learner = merge_checkpoints(checkpoints)
    counters = {k: sum(int(cp.counters.get(k, 0)) for cp in checkpoints) for k in (*COUNTS, "invalid", "held")}
    return learner.export_state(), counters, checkpoints


def assert_same_as_replay(store, model, log, tmp_path):
    summary, state = replayed(log, tmp_path)
    merged, counters, _ = consumed(store, model)
    assert {k: counters[k] for k in COUNTS} == {k: summary[k] for k in COUNTS}
    assert_states_equal(merged, state, rtol=1e-9, atol=1e-12)


def run_worker(bootstrap, topics, store, model, group, *, idle=3.0, dead=None, **kw):
    worker = ConsumerWorker(model_config(kw.pop("learner", "diag-linucb")), ConsumeOptions(
        bootstrap=bootstrap, group=group, model=model, topics=topics, idle_timeout=idle,
        checkpoint_interval=kw.pop("checkpoint_interval", 1.0), log_interval=60, **kw), store, dead_letter=dead)
    return worker.run()


def test_simulate_produce_consume_equals_replay(kafka_bootstrap, small_log, tmp_path):
    topics = fresh_topics()
    ensure_topics(kafka_bootstrap, topics, PARTITIONS)
    sent = produce_log(small_log, kafka_bootstrap, topics)
    assert sent["invalid"] == 0
    store = CheckpointStore(f"sqlite:///{tmp_path / 'c.db'}")
    ready = tmp_path / "ready.json"
    summary = run_worker(kafka_bootstrap, topics, store, "live", "g-" + topics.impressions, ready_file=str(ready))
    assert summary["partitions"] == list(range(PARTITIONS))
    status = read_status(ready)
    assert status is not None and status["partitions"] == list(range(PARTITIONS))
    assert status["restored"] == 0 and status["assignments"] >= 1 and status["pid"] == os.getpid()
    assert summary["invalid"] == 0 and summary["checkpoints"] >= 1
    assert_same_as_replay(store, "live", small_log, tmp_path)
    # a restart finds nothing new and changes nothing
    before = consumed(store, "live")[0]
    again = run_worker(kafka_bootstrap, topics, store, "live", "g-" + topics.impressions, idle=2.0)
    assert again["messages"] == 0
    assert_states_equal(consumed(store, "live")[0], before, rtol=0, atol=0)


def test_malformed_duplicate_out_of_order_and_late_events(kafka_bootstrap, tmp_path):
    topics = fresh_topics()
    ensure_topics(kafka_bootstrap, topics, 1)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=1_048_576)

    def imp(i, ts, **extra):
        return json.dumps({"type": "impression", "event_id": f"e{i}", "ts": ts, "impression_id": f"i{i}",
                           "arm": "a", "context": {"x0": 1.0}, **extra}).encode()

    def clk(i, ts, eid=None):
        return json.dumps({"type": "click", "event_id": eid or f"c{i}", "ts": ts, "impression_id": f"i{i}"}).encode()

    bad = [b"not json", b'{"type":"impression"}', imp(90, 1000).replace(b"1.0", b"NaN"),
           imp(93, 1000, context={"x0": 1e300}),
           b'{"type":"impression","event_id":"n","ts":1000,"impression_id":"n","arm":"a","context":{"x0":1e999}}',
           imp(91, 1000, context={"x0": [1]}), b"{" + b" " * 70_000 + b"}", clk(92, 1000)]  # last: wrong topic
    for raw in bad:
        producer.send(topics.impressions, raw)
    producer.send(topics.clicks, clk(1, 1010))  # before its impression is read
    for i, ts in ((1, 1000), (2, 1001), (2, 1001)):  # impression 2 duplicated
        producer.send(topics.impressions, imp(i, ts))
    producer.send(topics.clicks, clk(2, 1005))
    producer.send(topics.clicks, clk(2, 1005))  # duplicate delivery
    producer.send(topics.clicks, clk(77, 1006))  # unknown impression
    producer.flush()
    store = CheckpointStore(f"sqlite:///{tmp_path / 'm.db'}")
    dead_letters = []

    def consume():  # inputs idle after 1 s: the held click expires within the run
        return run_worker(kafka_bootstrap, topics, store, "messy", "g-" + topics.impressions, input_idleness=1.0,
                          dead=lambda raw, reason, source: dead_letters.append((reason, source)))

    first = consume()
    assert first["invalid"] == len(bad) and first["impressions"] == 2
    # second phase, after a restart from the checkpoint: every input is caught up, so the watermark
    # follows the impressions and one far behind it is late
    producer.send(topics.impressions, imp(3, 5000))
    producer.send(topics.impressions, imp(4, 100))
    producer.flush()
    summary = consume()
    assert summary["messages"] == 2
    assert (summary["impressions"], summary["clicks"], summary["duplicates"]) == (3, 2, 2)
    assert summary["late"] == 1 and summary["unmatched"] == 1
    reasons = [r for r, _ in dead_letters]
    for expected in ("not JSON", "schema", "finite", "oversized", "wrong topic", "late impression",
                     "unmatched click"):
        assert any(expected in r for r in reasons), (expected, reasons)
    state, counters, _ = consumed(store, "messy")
    assert all(np.all(np.isfinite(a)) for a in state.arrays.values())
    assert counters["invalid"] == len(bad)


def test_dead_letters_reach_the_dead_letter_topic(kafka_bootstrap, tmp_path):
    topics = fresh_topics()
    ensure_topics(kafka_bootstrap, topics, 1)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    producer.send(topics.impressions, b"{oops")
    producer.flush()
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "-m", "banditloop.cli", "consume", "--bootstrap", kafka_bootstrap,
                           "--group", "g-" + topics.impressions, "--learner", "diag-linucb", "--model", "dl",
                           "--db", f"sqlite:///{tmp_path / 'dl.db'}", "--idle-timeout", "3", "--json", "--quiet",
                           *feature_args(), *topic_args(topics)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["dead_letters"] == 1
    reader = KafkaConsumer(topics.dead_letters, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                           consumer_timeout_ms=10_000)
    records = [json.loads(r.value) for r in reader]
    reader.close()
    assert len(records) == 1 and records[0]["reason"].startswith("not JSON")
    assert records[0]["payload"] == "{oops" and records[0]["source"].startswith(topics.impressions)


def consume_process(bootstrap, topics, db, model, group, *extra, idle="4"):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.Popen([sys.executable, "-m", "banditloop.cli", "consume", "--bootstrap", bootstrap,
                             "--group", group, "--learner", "diag-linucb", "--model", model, "--db", db,
                             "--checkpoint-interval", "0.3", "--idle-timeout", idle, "--json", "--quiet",
                             *feature_args(), *topic_args(topics), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.fixture(scope="module")
def big_log(tmp_path_factory):
    return make_log(tmp_path_factory.mktemp("log") / "big.jsonl", steps=40_000, seed=5)


def test_kill_9_at_random_points_gives_identical_parameters(kafka_bootstrap, big_log, tmp_path, postgres_url):
    topics = fresh_topics()
    ensure_topics(kafka_bootstrap, topics, PARTITIONS)
    produce_log(big_log, kafka_bootstrap, topics)
    group = "g-" + topics.impressions
    rng = random.Random(2026)
    store = CheckpointStore(postgres_url)
    kills = 0
    for _ in range(3):
        proc = consume_process(kafka_bootstrap, topics, postgres_url, "crashy", group)
        deadline = time.monotonic() + 60
        # kill once some checkpoint exists (or after a random while), mid-stream
        wait = rng.uniform(0.5, 3.0)
        while time.monotonic() < deadline and store.latest_version("crashy") is None:
            time.sleep(0.1)
        time.sleep(wait)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=30)
    # killed members hold their partitions until their session times out (6 s): wait longer than that
    final = consume_process(kafka_bootstrap, topics, postgres_url, "crashy", group, idle="10")
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err
    assert kills >= 2, "the kills should land mid-stream"
    assert_same_as_replay(store, "crashy", big_log, tmp_path)
    store.close()


def test_two_workers_and_a_rebalance_equal_one_worker(kafka_bootstrap, big_log, tmp_path):
    topics = fresh_topics()
    ensure_topics(kafka_bootstrap, topics, 4)
    # the second half is produced only once both workers hold partitions, so each has new work to
    # checkpoint (a worker that joins after the stream is drained has nothing dirty and writes nothing)
    lines = big_log.read_text().splitlines(keepends=True)  # in event-time order
    halves = [tmp_path / "first.jsonl", tmp_path / "second.jsonl"]
    halves[0].write_text("".join(lines[: len(lines) // 2]))
    halves[1].write_text("".join(lines[len(lines) // 2:]))
    produce_log(halves[0], kafka_bootstrap, topics)
    db = f"sqlite:///{tmp_path / 'two.db'}"
    group = "g-" + topics.impressions
    first = consume_process(kafka_bootstrap, topics, db, "pair", group, idle="12")
    store = CheckpointStore(db)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and store.latest_version("pair") is None:
        time.sleep(0.1)
    second = consume_process(kafka_bootstrap, topics, db, "pair", group, idle="12")  # joins: rebalance
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len({owner for _, owner in store.leases("pair").values()}) < 2:
        time.sleep(0.1)
    owners = {owner for _, owner in store.leases("pair").values()}
    assert len(owners) == 2, f"the second worker never claimed partitions: {store.leases('pair')}"
    produce_log(halves[1], kafka_bootstrap, topics)
    outs = [p.communicate(timeout=300) for p in (first, second)]
    for proc, (_, err) in zip((first, second), outs, strict=True):
        assert proc.returncode == 0, err
    summaries = [json.loads(out) for out, _ in outs]
    # (the first worker's partitions were revoked when the second joined; kafka-python also counts the
    # empty revocation before each first join, confluent-kafka does not)
    assert sum(s["rebalances"] for s in summaries) >= 1
    assert all(s["checkpoints"] >= 1 for s in summaries)
    shards = {cp.shard for cp in store.latest_per_shard("pair")}
    assert shards == {"p0", "p1", "p2", "p3"}
    assert_same_as_replay(store, "pair", big_log, tmp_path)
    store.close()


def test_database_outage_during_checkpoints_loses_nothing(kafka_bootstrap, small_log, tmp_path, postgres_url):
    import psycopg

    from conftest import PG_HOST, PG_PORT, PG_USER

    topics = fresh_topics()
    ensure_topics(kafka_bootstrap, topics, PARTITIONS)
    lines = small_log.read_text().splitlines(keepends=True)  # in event-time order
    halves = [tmp_path / "first.jsonl", tmp_path / "second.jsonl"]
    halves[0].write_text("".join(lines[: len(lines) // 2]))
    halves[1].write_text("".join(lines[len(lines) // 2:]))
    produce_log(halves[0], kafka_bootstrap, topics)
    dbname = postgres_url.rsplit("/", 1)[1]
    store = CheckpointStore(postgres_url)
    admin = psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True)

    def outage():
        deadline = time.monotonic() + 60
        while store.latest_version("outage") is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the outage begins once checkpoints are being written
        admin.execute(f'alter database "{dbname}" allow_connections false')
        admin.execute("select pg_terminate_backend(pid) from pg_stat_activity where datname = %s", (dbname,))
        produce_log(halves[1], kafka_bootstrap, topics)  # new events arrive while the database is down
        time.sleep(4.0)
        admin.execute(f'alter database "{dbname}" allow_connections true')

    outage_thread = threading.Thread(target=outage)
    outage_thread.start()
    try:
        summary = run_worker(kafka_bootstrap, topics, store, "outage", "g-" + topics.impressions,
                             checkpoint_interval=0.5, idle=6.0, retry_initial=0.2)
    finally:
        outage_thread.join()
        admin.close()
    assert summary["checkpoint_failures"] >= 1
    assert_same_as_replay(store, "outage", small_log, tmp_path)
    store.close()


def test_future_dated_feedback_is_dead_lettered_and_cannot_stop_learning(kafka_bootstrap, tmp_path):
    """Issue 13 (1): clicks dated far in the future for unknown impressions, then a pause longer than
    the input idleness, used to drag the watermark to 1e15 and drop every later impression as late."""
    topics = fresh_topics()
    ensure_topics(kafka_bootstrap, topics, 1)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    now = time.time()

    def clk(i, ts):
        return json.dumps({"type": "click", "event_id": f"c{i}", "ts": ts, "impression_id": f"ghost{i}"}).encode()

    for i in range(30):
        producer.send(topics.clicks, clk(i, 1e15))            # beyond any sane epoch time
        producer.send(topics.clicks, clk(100 + i, now + 86400))  # one day ahead of this clock
    producer.flush()
    store = CheckpointStore(f"sqlite:///{tmp_path / 'f.db'}")
    reasons = []
    dead = lambda raw, reason, source: reasons.append(reason)  # noqa: E731
    first = run_worker(kafka_bootstrap, topics, store, "future", "g-" + topics.impressions, input_idleness=1.0,
                       idle=2.5, dead=dead)
    assert first["invalid"] == 60
    assert sum("future ts" in r for r in reasons) == 30 and sum(r.startswith("ts: not an epoch") for r in reasons) == 30
    for i in range(200):
        producer.send(topics.impressions, json.dumps({
            "type": "impression", "event_id": f"e{i}", "ts": now + i * 0.01, "impression_id": f"i{i}", "arm": "a",
            "context": {"x0": 1.0}}).encode())
    producer.flush()
    producer.close()
    second = run_worker(kafka_bootstrap, topics, store, "future", "g-" + topics.impressions, input_idleness=1.0,
                        idle=2.5, dead=dead)
    assert second["impressions"] == 200 and second["late"] == 0
    (cp,) = store.latest_per_shard("future")
    assert max(cp.source["max_ts"].values()) < now + 10


@pytest.mark.slow
@pytest.mark.postgres
def test_a_paused_worker_cannot_roll_the_model_back_after_another_took_over(kafka_bootstrap, small_log, tmp_path,
                                                                            postgres_url):
    """Issue 13 (2): a worker stopped (SIGSTOP) mid-stream held its partitions and, resumed after
    another worker took over, wrote stale state over the new owner's. Now the new owner claims the
    shards' leases, the zombie's writes are refused, and versions never go back in time."""
    topics = fresh_topics()
    ensure_topics(kafka_bootstrap, topics, PARTITIONS)
    produce_log(small_log, kafka_bootstrap, topics)
    group, model = "g-" + topics.impressions, "zombie-" + topics.impressions
    store = CheckpointStore(postgres_url)
    zombie = consume_process(kafka_bootstrap, topics, postgres_url, model, group, idle="30")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and store.latest_version(model) is None:
        time.sleep(0.05)
    zombie.send_signal(signal.SIGSTOP)
    try:
        successor = consume_process(kafka_bootstrap, topics, postgres_url, model, group, idle="12")
        out, err = successor.communicate(timeout=240)
        assert successor.returncode == 0, err
        assert json.loads(out)["partitions"] == list(range(PARTITIONS))
    finally:
        zombie.send_signal(signal.SIGCONT)
    time.sleep(3)  # the zombie wakes up, tries to write, is refused, rejoins and restores
    zombie.send_signal(signal.SIGTERM)
    zombie_out, zombie_err = zombie.communicate(timeout=120)
    assert zombie.returncode == 0, zombie_err
    assert json.loads(zombie_out)["leases_lost"] >= 1, zombie_err  # it did try to write, and was refused
    # per shard, every newer version has seen at least as many events as the one before it
    for shard in (f"p{p}" for p in range(PARTITIONS)):
        seen = [sum(store.load(model, shard, v).counters.get(k, 0) for k in ("impressions", "clicks"))
                for v in sorted(store.shard_versions(model, shard))]
        assert seen == sorted(seen), (shard, seen)
    assert_same_as_replay(store, model, small_log, tmp_path)
    store.close()
