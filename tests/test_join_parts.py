"""Full snapshots of the join state written in parts: the same state as one value, parts written in
the checkpoint's transaction (a crash between two parts leaves the previous checkpoint as it was),
retention and re-saving that keep parts and rows together, and main's single-value checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import func, select, text

from banditloop.core.events import Click, Impression
from banditloop.pipeline import join_state, open_columns
from banditloop.pipeline.checkpoint_tables import checkpoints_table, join_parts_table, tune_postgres
from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.pipeline.join_state import COLUMNS, DELTA, PARTS, DeltaPolicy, read_header
from banditloop.pipeline.open_store import OpenStore
from banditloop.pipeline.runner import LearningRun
from tests.test_join_deltas import CONFIG, drive, events, state_of

DATA = Path(__file__).parent / "data"
MAIN_DB = "checkpoints-main-03d6417.db"  # written by main at 03d6417: full snapshots as one value (COLUMNS)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cp.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def small_parts(monkeypatch):
    """Parts of about 2 KB: a few dozen rows each, so that a test's state is cut into many."""
    monkeypatch.setattr(open_columns, "PART_BYTES", 2048)


def busy_run(count: int = 200, evicted: bool = True) -> LearningRun:
    """A run whose join holds clicked impressions, joined feedback, a long id, an impression without
    vectors (its context kept) and, when ``evicted``, the slots of evicted impressions (some reused)."""
    run = LearningRun(CONFIG, "m", shard="p0")
    for ev in events(0, count):
        run.process(ev)
    if evicted:  # every window of the first ones closes: they leave, and new ones take some of their slots
        count = 5000 + count // 2
        for ev in events(5000, count - 5000):
            run.process(ev)
    run.process(Impression(event_id="e-long", ts=float(count), impression_id="i-" + "x" * 80, arm="a1",
                           context={"x0": 0.5, "x1": 1.0}))
    run.process(Click(event_id="c-long", ts=count + 1.0, impression_id="i-" + "x" * 80))
    store = run.join.store
    slot = store.add("i-raw", "e-raw", count + 2.0, "a2", 0.25, 3, 11)  # as a sink that stores no vector
    store.contexts[slot] = ({"x0": 1.0, "site": "s1"}, None)
    return run


def restored(data: bytes) -> LearningRun:
    run = LearningRun(CONFIG, "m", shard="p0")
    run.join.import_state(data)
    return run


@pytest.mark.parametrize("evicted", [False, True])
def test_a_snapshot_in_parts_restores_the_state_of_one_in_one_value(evicted):
    run = busy_run(200 if evicted else 20, evicted)
    if not evicted:
        assert len(run.join.store) == len(run.join.store.ts)  # every slot live: the columns taken as they are
    else:
        assert len(run.join.store) < len(run.join.store.ts)
    whole = run.join.export_state()
    assert read_header(whole).kind == COLUMNS
    parted = join_state.export_parted(run.join, part_bytes=1000)
    assert read_header(parted).kind == PARTS
    parts = list(parted.parts())
    assert len(parts) > 3 and len(parted) < len(whole)
    from_parts, from_whole = restored(parted), restored(whole)
    assert state_of(from_parts) == state_of(from_whole) == state_of(run)
    # the same rows, in the same order, with the same side data: one value written again is the same bytes
    assert from_parts.join.export_state() == from_whole.join.export_state() == whole
    assert parts == list(parted.parts())  # each call builds the parts again, the same


def test_a_missing_or_damaged_part_is_refused():
    run = busy_run()
    parted = join_state.export_parted(run.join, part_bytes=1000)
    parts = list(parted.parts())
    for broken in (parts[:-1], parts[:2] + parts[3:], [*parts[:2], parts[2][:-5], *parts[3:]]):
        bad = join_state.Parted(parted)
        bad.parts = lambda broken=broken: iter(broken)
        with pytest.raises(ValueError):
            restored(bad)
    with pytest.raises(ValueError, match="parts were not read"):
        restored(bytes(parted))


def test_checkpoints_write_full_snapshots_in_parts_and_restore_them(url, small_parts):
    store = CheckpointStore(url, keep=0)
    run = LearningRun(CONFIG, "m", shard="p0")
    run.join.delta_policy = DeltaPolicy(full_every=3)
    states = drive(run, store, chunks=5, check=True)
    with store.engine.connect() as conn:
        rows = dict(conn.execute(select(checkpoints_table.c.version, checkpoints_table.c.join_state)).all())
        parts = dict(conn.execute(select(join_parts_table.c.version, func.count())
                                  .group_by(join_parts_table.c.version)).all())
    # (each version was restored as it was written: version 1 from its parts too)
    kinds = [None if rows[v] is None else read_header(rows[v]).kind for v in sorted(rows)]
    assert kinds == [None, None, None, PARTS, DELTA]  # the newest two versions keep their join states (chains)
    assert set(parts) == {4} and parts[4] > 3  # version 1's parts went with its join state
    assert state_of(LearningRun.from_checkpoint(store.latest("m", "p0"))) == states[5]
    store.close()


def test_a_failure_between_parts_leaves_the_previous_checkpoint_and_the_run_usable(url, small_parts, monkeypatch):
    store = CheckpointStore(url, keep=0)
    run = LearningRun(CONFIG, "m", shard="p0")
    states = drive(run, store, chunks=2)
    for ev in events(80, 40):
        run.process(ev)
    run.version = None  # the next checkpoint is a full snapshot
    real = join_state.export_parted

    def failing(join, part_bytes=None):
        out = real(join, part_bytes)
        parts = out.parts

        def some():
            for number, part in enumerate(parts()):
                if number == 2:
                    raise OSError("the database went away")
                yield part
        out.parts = some
        return out

    monkeypatch.setattr(join_state, "export_parted", failing)
    with pytest.raises(OSError):
        store.save_many([run.snapshot({"kind": "kafka", "offsets": {}, "max_ts": {}})])
    monkeypatch.setattr(join_state, "export_parted", real)
    assert store.shard_versions("m", "p0") == [2, 1]
    with store.engine.connect() as conn:
        assert set(conn.scalars(select(join_parts_table.c.version).distinct())) == {1}
    assert state_of(LearningRun.from_checkpoint(store.latest("m", "p0"))) == states[2]
    # nothing of the failed parts holds the join's columns: it grows and checkpoints again
    more = drive(run, store, chunks=1, start=120)
    assert state_of(LearningRun.from_checkpoint(store.latest("m", "p0"))) == more[max(more)]
    store.close()


KILLED_CHILD = textwrap.dedent("""
    import json, os, signal, sys
    from banditloop.pipeline import join_state, open_columns
    from banditloop.pipeline.checkpoints import CheckpointStore
    from banditloop.pipeline.runner import LearningRun
    from tests.test_join_deltas import CONFIG, drive, events

    open_columns.PART_BYTES = 2048
    store = CheckpointStore(sys.argv[1], keep=0)
    run = LearningRun(CONFIG, "m", shard="p0")
    drive(run, store, chunks=2)
    print(json.dumps({"open": len(run.join.open), "counters": dict(run.join.counters)}), flush=True)
    for ev in events(80, 40):
        run.process(ev)
    run.version = None
    real = join_state.export_parted

    def dying(join, part_bytes=None):
        out = real(join, part_bytes)
        parts = out.parts

        def some():
            for number, part in enumerate(parts()):
                if number == 3:
                    os.kill(os.getpid(), signal.SIGKILL)
                yield part
        out.parts = some
        return out

    join_state.export_parted = dying
    store.save_many([run.snapshot({"kind": "kafka", "offsets": {}, "max_ts": {}})])
""")


def test_kill_9_between_parts_leaves_the_previous_checkpoint(url):
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", KILLED_CHILD, url], capture_output=True, text=True, timeout=120,
                          cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]
    before = json.loads(proc.stdout.splitlines()[0])
    store = CheckpointStore(url, keep=0)
    assert store.shard_versions("m", "p0") == [2, 1]
    with store.engine.connect() as conn:
        assert set(conn.scalars(select(join_parts_table.c.version).distinct())) == {1}
    back = LearningRun.from_checkpoint(store.latest("m", "p0"))
    assert len(back.join.open) == before["open"] and dict(back.join.counters) == before["counters"]
    store.close()


def test_retention_and_replacement_drop_the_parts_with_the_join_states(url, small_parts):
    store = CheckpointStore(url, keep=3)
    run = LearningRun(CONFIG, "m", shard="p0")
    run.join.delta_policy = DeltaPolicy(full_every=1)  # every checkpoint a full snapshot
    drive(run, store, chunks=6)
    other = LearningRun(CONFIG, "m", shard="p1")  # another shard's parts are its own
    drive(other, store, chunks=1)

    def with_parts() -> dict[str, set[int]]:
        with store.engine.connect() as conn:
            rows = conn.execute(select(join_parts_table.c.shard, join_parts_table.c.version).distinct()).all()
        out: dict[str, set[int]] = {}
        for shard, version in rows:
            out.setdefault(shard, set()).add(version)
        return out

    assert with_parts() == {"p0": {5, 6}, "p1": {7}}  # the newest two of each shard keep their join states
    store.replace_on_next_save("m")
    drive(run, store, chunks=1, start=400)
    assert with_parts() == {"p0": {8}}
    store.close()


def test_a_stored_snapshot_in_parts_saved_again_copies_its_parts(url, small_parts):
    """As the demo does to keep only the final model: the newest rows, read without their parts, saved
    again with keep=1."""
    store = CheckpointStore(url, keep=0)
    run = LearningRun(CONFIG, "m", shard="p0")
    run.join.delta_policy = DeltaPolicy(full_every=1)
    states = drive(run, store, chunks=3)
    compact = CheckpointStore(store.url, keep=1)
    latest = compact.latest_per_shard("m")
    assert read_header(latest[0].join_state).kind == PARTS and not hasattr(latest[0].join_state, "parts")
    (version,) = compact.save_many(latest)
    assert store.shard_versions("m", "p0") == [version]
    assert state_of(LearningRun.from_checkpoint(store.latest("m", "p0"))) == states[3]
    with store.engine.connect() as conn:
        assert set(conn.scalars(select(join_parts_table.c.version).distinct())) == {version}
    store.close()
    compact.close()


def test_a_checkpoint_written_by_main_in_one_value_still_loads(tmp_path):
    db = tmp_path / "main.db"
    shutil.copy(DATA / MAIN_DB, db)
    store = CheckpointStore(f"sqlite:///{db}", keep=0)  # adds the parts table
    with store.engine.connect() as conn:
        first = conn.scalar(select(checkpoints_table.c.join_state).where(checkpoints_table.c.version == 1))
    assert read_header(first).kind == COLUMNS
    one = LearningRun.from_checkpoint(store.load("diag", "p0", 1))
    assert len(one.join.open) == 100

    def body(data: bytes) -> open_columns.ColumnsState:  # (counters added since are not compared)
        state = msgspec.msgpack.decode(memoryview(data)[25:], type=open_columns.ColumnsState)
        return msgspec.structs.replace(state, counters={k: v for k, v in state.counters.items() if k != "ignored"})

    assert body(one.join.export_state()) == body(first)  # read exactly as written
    newest = LearningRun.from_checkpoint(store.latest("diag", "p0"))  # a delta on a delta on that
    assert len(newest.join.open) == 300 and newest.join.watermark == 297.0
    newest.version = None  # a full snapshot now: in parts, on top of main's rows
    states = drive(newest, store, chunks=2, start=300)
    first_new, last = sorted(states)
    assert [read_header(store.load("diag", "p0", v).join_state).kind for v in (first_new, last)] == [PARTS, DELTA]
    assert state_of(LearningRun.from_checkpoint(store.latest("diag", "p0"))) == states[last]
    store.close()


def test_a_delta_applied_in_batches_leaves_the_store_as_one_applied_an_impression_at_a_time():
    run = busy_run()
    store = run.join.store
    changed = [store.plain(s) for s in list(store)[::3]]  # open impressions, changed
    for n, imp in enumerate(changed):
        imp.applied, imp.conversions, imp.clicked, imp.closed = 1.5 + n, n % 3, n % 2 == 0, n % 5 == 0
        imp.seen, imp.seen_digests = (f"c-{n}",), (n,)
        imp.arm = "a-new" if n == 4 else imp.arm
        if n % 7 == 0:
            imp.x = None  # a context not featurized
    fresh = [store.plain(s) for s in list(store)[:5]]
    for n, imp in enumerate(fresh):
        imp.impression_id, imp.event_id = f"fresh-{n}", f"fe-{n}"
    upserts = changed[:10] + fresh + changed[10:]

    def applied(batched: bool) -> OpenStore:
        copy = restored(run.join.export_state()).join.store
        for imp_id in ["i150", "i160", "i170"]:  # a delta's deletes first: their slots are free
            copy.remove(copy.find(imp_id))
        if batched:
            open_columns.upsert_many(copy, [msgspec.structs.replace(i) for i in upserts])
        else:
            for imp in upserts:
                slot = copy.find(imp.impression_id)
                if slot >= 0:
                    copy.remove(slot)
                copy.load(msgspec.structs.replace(imp))
        return copy

    one, batch = applied(False), applied(True)
    assert list(one) == list(batch) and one.free == batch.free
    assert [one.plain(s) for s in one] == [batch.plain(s) for s in batch]
    assert one.arms == batch.arms and one.contexts == batch.contexts and one.seen == batch.seen


def test_postgres_join_state_columns_are_compressed_with_lz4_once(postgres_url):
    store = CheckpointStore(postgres_url)
    with store.engine.begin() as conn:
        assert tune_postgres(conn) == []  # the store set them when it opened the database
        rows = conn.execute(text("SELECT attname, attcompression FROM pg_attribute WHERE attrelid IN "
                                 "('banditloop_checkpoints'::regclass, 'banditloop_join_parts'::regclass) "
                                 "AND attname IN ('join_state', 'data')")).all()
    assert sorted(rows) == [("data", "l"), ("join_state", "l")]
    store.close()
