"""Issue 13: a watermark poisoned by an older version (written before event times were checked) is
repaired by ``banditloop models --repair-watermark``, which writes a new, fenced version per shard."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from kafka import KafkaProducer

from banditloop.commands.models_repair import parse_to
from banditloop.core.events import Click, Impression
from banditloop.pipeline.checkpoints import CheckpointStore, LeaseLost
from banditloop.pipeline.runner import LearningRun
from banditloop.pipeline.shard_restore import CorruptCheckpoint, restore_shard
from banditloop.pipeline.topics import ensure_topics
from banditloop.pipeline.watermark_repair import Lease, lease_is_live, plan_repair
from tests.helpers import assert_states_equal
from tests.test_cli_errors import assert_one_line_error, banditloop
from tests.test_consume import consume_process, fresh_topics, model_config, run_worker

MODEL = "live"


def impression(i: int, ts: float, prefix: str = "i") -> Impression:
    return Impression(event_id=f"e-{prefix}{i}", ts=ts, impression_id=f"{prefix}{i}", arm=f"a{i % 3}",
                      context={"x0": 1.0, "x1": (i % 5) / 5.0})


def poisoned_checkpoint(store: CheckpointStore, now: float, click_ts: float, *, shard: str = "p0",
                        impressions: int = 20) -> int:
    """What an older version wrote after learning ``impressions`` impressions and one click dated
    ``click_ts`` for an unknown impression: the click is held and the watermark follows it."""
    run = LearningRun(model_config(), MODEL, shard=shard)
    for i in range(impressions):
        run.process(impression(i, now - 100.0 + i))
    run.process(Click(event_id="c-ghost", ts=now, impression_id="ghost"))  # held: its impression is unknown
    held = run.join.pending["ghost"]
    held[0] = msgspec.structs.replace(held[0], ts=click_ts)  # dated as the old version let it be
    run.join.watermark = click_ts - run.config.join.allowed_lateness
    cp = run.snapshot({"kind": "kafka", "partition": int(shard[1:]),
                       "offsets": {"impressions": impressions, "clicks": 1},
                       "max_ts": {"impressions": now - 100.0 + impressions - 1, "clicks": click_ts}})
    return store.save(cp)


def repair(db: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return banditloop("models", "--db", db, "--model", MODEL, "--repair-watermark", *args, cwd=cwd)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'w.db'}"
    return request.getfixturevalue("postgres_url")


def test_a_year_3000_click_makes_the_shard_unrestorable_until_repaired(db, tmp_path):
    """An event time the current code refuses even to decode (1e15): the worker stops with
    CorruptCheckpoint; the dry run shows the fix, --yes writes it, and the shard restores with every
    parameter, counter, offset and open impression kept."""
    store = CheckpointStore(db)
    now = time.time()
    old = poisoned_checkpoint(store, now, 1e15)
    with pytest.raises(CorruptCheckpoint):
        restore_shard(store, model_config(), MODEL, "p0")
    before = store.load(MODEL, "p0", old)
    (plan,) = plan_repair(store, MODEL, time.time())  # the dry run
    assert plan.max_ts_before["clicks"] == 1e15 and plan.max_ts_after["clicks"] <= time.time()
    assert plan.dropped_held == 1 and plan.changed and plan.new_version is None and not plan.live
    assert store.latest_version(MODEL) == old  # a dry run writes nothing

    done = repair(db, tmp_path, "--yes", "--reason", "clicks dated 1e15 by v0.1")
    assert done.returncode == 0, done.stderr
    assert "repaired the watermark of model 'live' shard p0" in done.stderr and "1e+15 ->" in done.stdout
    r = restore_shard(store, model_config(), MODEL, "p0")
    assert r.version == old + 1 and r.max_ts["clicks"] <= time.time() and r.max_ts["impressions"] == now - 81.0
    assert r.run.join.watermark <= time.time() - 60.0
    assert r.offsets == {"impressions": 20, "clicks": 1}
    after = store.load(MODEL, "p0", r.version)
    assert_states_equal(after.state, before.state, rtol=0, atol=0)
    assert len(r.run.join.open) == 20 and not r.run.join.pending
    assert {k: v for k, v in after.counters.items() if k not in ("held", "unmatched")} == {
        k: v for k, v in before.counters.items() if k not in ("held", "unmatched")}
    assert (after.counters["held"], after.counters["unmatched"]) == (0, before.counters["unmatched"] + 1)
    record = after.source["watermark_repair"]
    assert record["reason"] == "clicks dated 1e15 by v0.1" and record["from_version"] == old
    assert record["max_ts_before"]["clicks"] == 1e15 and record["by"].startswith("repair:")
    assert not any(p.changed for p in plan_repair(store, MODEL, time.time()))  # nothing left to do
    store.close()


def test_a_live_worker_holding_the_lease_is_refused_unless_forced(tmp_path):
    db = f"sqlite:///{tmp_path / 'w.db'}"
    store = CheckpointStore(db)
    poisoned_checkpoint(store, time.time(), time.time() + 30 * 86400)
    # a worker on this host whose process runs (this one): live
    (epoch,) = store.claim(MODEL, ["p0"], f"{socket.gethostname()}:{os.getpid()}:g").values()
    line = assert_one_line_error(repair(db, tmp_path, "--yes"), "a live worker holds shard(s) p0", "--force")
    assert f":{os.getpid()}:g" in line and store.latest_version(MODEL) == 1
    assert plan_repair(store, MODEL, time.time())[0].live
    forced = repair(db, tmp_path, "--yes", "--force")
    assert forced.returncode == 0, forced.stderr
    assert store.latest_version(MODEL) == 2
    # the worker lost the shard: its next (stale) checkpoint is refused by the fence
    stale = LearningRun(model_config(), MODEL, shard="p0").snapshot({"kind": "kafka"})
    with pytest.raises(LeaseLost):
        store.save_many([stale], fence={"p0": epoch})


def test_which_leases_are_live():
    now = datetime.now(UTC)
    here = socket.gethostname()
    assert lease_is_live(Lease(1, f"{here}:{os.getpid()}:g", now - timedelta(days=1)), None, live_within=300)
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert not lease_is_live(Lease(1, f"{here}:{dead.pid}:g", now), now, live_within=300)
    # another host: live while claimed or checkpointed recently
    elsewhere = Lease(1, "elsewhere:1:g", now - timedelta(hours=1))
    assert lease_is_live(elsewhere, now - timedelta(seconds=10), live_within=300, now=now)
    assert not lease_is_live(elsewhere, now - timedelta(seconds=400), live_within=300, now=now)
    assert not lease_is_live(Lease(2, "repair:x:1", now), now, live_within=300) and not lease_is_live(None, now,
                                                                                                      live_within=1)


def test_usage_errors_are_one_line(tmp_path):
    db = f"sqlite:///{tmp_path / 'w.db'}"
    store = CheckpointStore(db)
    poisoned_checkpoint(store, time.time(), 1e15)
    assert_one_line_error(banditloop("models", "--db", db, "--repair-watermark", cwd=tmp_path), "needs --model")
    assert_one_line_error(repair(db, tmp_path, "--to", "yesterday", "--shard", "p0"), "--to 'yesterday'", "RFC 3339")
    assert_one_line_error(banditloop("models", "--db", db, "--yes", cwd=tmp_path),
                          "--yes go(es) with --repair-watermark")
    with pytest.raises(ValueError, match="no shard p9"):
        plan_repair(store, MODEL, time.time(), shards=["p9"])
    assert parse_to("2026-01-01T00:00:00Z") == 1767225600.0 and parse_to("1767225600") == 1767225600.0
    store.close()


@pytest.mark.kafka
def test_consume_drops_impressions_as_late_until_the_watermark_is_repaired(kafka_bootstrap, tmp_path):
    """The whole story against the real broker: a checkpoint whose watermark a click dated a month
    ahead poisoned; a consume worker drops every new impression as late; the repair command (a
    subprocess); then a consume worker learns the next impressions, none late."""
    topics = fresh_topics()
    ensure_topics(kafka_bootstrap, topics, 1)
    db = f"sqlite:///{tmp_path / 'w.db'}"
    store = CheckpointStore(db)
    now = time.time()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)

    def send(prefix: str, count: int, start: float) -> None:
        for i in range(count):
            ev = impression(i, start + i * 0.01, prefix)
            producer.send(topics.impressions, json.dumps({
                "type": "impression", "event_id": ev.event_id, "ts": ev.ts, "impression_id": ev.impression_id,
                "arm": ev.arm, "context": ev.context}).encode())
        producer.flush()

    send("old", 20, now - 100.0)  # what the old version had read (the checkpoint's offsets)
    producer.send(topics.clicks, json.dumps({"type": "click", "event_id": "c-ghost", "ts": now + 30 * 86400,
                                             "impression_id": "ghost"}).encode())
    poisoned_checkpoint(store, now, now + 30 * 86400)
    send("a", 50, time.time())
    group = "g-" + topics.impressions
    proc = consume_process(kafka_bootstrap, topics, db, MODEL, group, idle="3")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    before = json.loads(out)
    # (counters are the shard's totals, the old version's 20 impressions included)
    assert before["impressions"] == 20 and before["late"] == 50  # poisoned: every new impression is late

    fixed = repair(db, tmp_path, "--yes")
    assert fixed.returncode == 0, fixed.stderr
    send("b", 50, time.time())
    after = run_worker(kafka_bootstrap, topics, store, MODEL, group, idle=2.5)
    assert after["impressions"] == 70 and after["late"] == 50  # the 50 new ones learned, none late
    (cp,) = store.latest_per_shard(MODEL)
    assert cp.counters["impressions"] == 70 and cp.counters["late"] == 50
    assert max(cp.source["max_ts"].values()) <= time.time()
    producer.close()
    store.close()
