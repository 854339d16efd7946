"""Incremental checkpoints of the join state: deltas chained to full snapshots, compaction, the
fallback past a damaged link, retention that keeps the links still needed, and older databases."""

from __future__ import annotations

import shutil
from pathlib import Path

import msgspec
import numpy as np
import pytest
from sqlalchemy import func, select, update

from banditloop.core.events import Click, Impression
from banditloop.core.features import FeatureSpec
from banditloop.core.reward import RewardSpec
from banditloop.pipeline import join_parts
from banditloop.pipeline.checkpoint_tables import checkpoints_table, join_links_table
from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.pipeline.join import JoinConfig
from banditloop.pipeline.join_state import COLUMNS, DELTA, FULL, PARTS, DeltaPolicy, read_header
from banditloop.pipeline.model import ModelConfig
from banditloop.pipeline.runner import LearningRun
from banditloop.pipeline.shard_restore import restore_shard

#: a reward that reads conversions: impressions stay for the conversion window, so the state is large
CONFIG = ModelConfig("diag-linucb", features=FeatureSpec(dim=8, numeric=("x0", "x1")),
                     join=JoinConfig(click_window=30.0, conversion_window=3600.0, allowed_lateness=2.0),
                     reward=RewardSpec("click+value"))
DATA = Path(__file__).parent / "data"


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cp.db'}"
    return request.getfixturevalue("postgres_url")


def events(start: int, count: int):
    """Impressions one second apart, a click on every third; windows close and impressions leave."""
    for n in range(start, start + count):
        ts = float(n)
        yield Impression(event_id=f"e{n}", ts=ts, impression_id=f"i{n}", arm=f"a{n % 3}",
                         context={"x0": 0.1 * (n % 7), "x1": 1.0, "site": f"s{n % 4}"})
        if n % 3 == 0:
            yield Click(event_id=f"c{n}", ts=ts + 1.5, impression_id=f"i{n}")


def state_of(run: LearningRun):
    """The join state, copied (open impressions change in place)."""
    j, enc = run.join, msgspec.msgpack.encode
    return ({k: enc(v) for k, v in j.open.items()}, {k: enc(v) for k, v in j.pending.items()}, j.watermark,
            dict(j.counters))


def drive(run: LearningRun, store: CheckpointStore, chunks: int, per: int = 40, start: int = 0,
          check: bool = False):
    """Process ``chunks`` chunks, checkpointing after each; returns {version: state at that version}.
    With ``check``, each version is restored at once and compared with the state it was written from."""
    states = {}
    for c in range(chunks):
        for ev in events(start + c * per, per):
            run.process(ev)
        cp = run.snapshot({"kind": "kafka", "offsets": {"impressions:0": start + (c + 1) * per}, "max_ts": {}})
        store.save_many([cp])
        run.saved(cp)
        states[cp.version] = state_of(run)
        if check:
            restored = LearningRun.from_checkpoint(store.load(run.model, run.shard, cp.version), expect=run.config)
            assert state_of(restored) == states[cp.version]
    return states


def kinds(store: CheckpointStore, model: str = "m") -> dict[int, int | str | None]:
    """version -> FULL (a full snapshot: now written in columns and in parts, ``PARTS``; in columns as one
    value, ``COLUMNS``, before), DELTA, "json" (written before deltas) or None (join state not kept)."""
    with store.engine.connect() as conn:
        rows = conn.execute(select(checkpoints_table.c.version, checkpoints_table.c.join_state)
                            .where(checkpoints_table.c.model == model).order_by(checkpoints_table.c.version)).all()
    out: dict[int, int | str | None] = {}
    for version, data in rows:
        header = None if data is None else read_header(data)
        out[version] = None if data is None else "json" if header is None else (
            FULL if header.kind in (COLUMNS, PARTS) else header.kind)
    return out


def test_deltas_chain_to_full_snapshots_and_restore_exactly(url):
    store = CheckpointStore(url, keep=0)
    run = LearningRun(CONFIG, "m", shard="p0")
    run.join.delta_policy = DeltaPolicy(full_every=4)
    drive(run, store, chunks=9, check=True)  # every version restores to the state it was written from
    # versions 1-4 are no longer needed by the newest two (9 is full, 8 applies to 7, 6 and 5)
    assert list(kinds(store).values()) == [None] * 4 + [FULL, DELTA, DELTA, DELTA, FULL]
    # a delta holds what changed: far smaller than the full state it applies to
    with store.engine.connect() as conn:
        c = checkpoints_table.c
        sizes = dict(conn.execute(select(c.version, func.length(c.join_state))).all())
        sizes[5] += join_parts.size(conn, "m", 5)  # (a full snapshot: its head, and its rows in parts)
    assert sizes[6] < 0.6 * sizes[5] and sizes[7] < 0.6 * sizes[5]
    # learning carries on from a restored delta exactly as without the checkpoint
    resumed = LearningRun.from_checkpoint(store.latest("m", "p0"), expect=CONFIG)
    for ev in events(360, 50):
        run.process(ev)
        resumed.process(ev)
    a, b = run.learner.export_state(), resumed.learner.export_state()
    assert all(np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays)
    store.close()


def test_open_impressions_keep_vectors_not_contexts():
    run = LearningRun(CONFIG, "m")
    for ev in events(0, 10):
        run.process(ev)
    imp = run.join.open["i9"]
    assert imp.context == {} and imp.x is not None and len(imp.x) == 8 * 8
    assert np.array_equal(np.frombuffer(imp.x), run.vectorizer.x({"x0": 0.1 * 2, "x1": 1.0, "site": "s1"}))


def test_a_damaged_delta_falls_back_to_the_newest_version_whose_chain_reads(url):
    store = CheckpointStore(url, keep=0)
    run = LearningRun(CONFIG, "m", shard="p0")
    states = drive(run, store, chunks=5)  # 1 full, then deltas 2..5
    with store.engine.begin() as conn:
        conn.execute(update(checkpoints_table).where(checkpoints_table.c.version == 3)
                     .values(join_state=read_and_damage(store, 3)))
    restored = restore_shard(store, CONFIG, "m", "p0")
    # versions 4 and 5 apply to 3 and cannot be read; 3 itself is damaged: back to 2
    assert restored.version == 2 and restored.offsets == {"impressions:0": 80}
    assert [s.split(":")[0] for s in restored.skipped] == ["version 5", "version 4", "version 3"]
    assert state_of(restored.run) == states[2]
    # the next checkpoint is a full snapshot (version 2 is not the newest: no delta on it), then deltas
    states.update(drive(restored.run, store, chunks=2, start=80))
    assert kinds(store)[6] == FULL and kinds(store)[7] == DELTA
    again = restore_shard(store, CONFIG, "m", "p0")
    assert again.version == 7 and state_of(again.run) == states[7]
    store.close()


def read_and_damage(store: CheckpointStore, version: int) -> bytes:
    with store.engine.connect() as conn:
        c = checkpoints_table.c
        data = conn.execute(select(c.join_state).where(c.version == version)).scalar_one()
    return data[: len(data) // 2]  # truncated


def test_retention_keeps_the_links_of_the_newest_versions(url):
    store = CheckpointStore(url, keep=2)
    run = LearningRun(CONFIG, "m", shard="p0")
    run.join.delta_policy = DeltaPolicy(full_every=4)
    states = drive(run, store, chunks=4)  # 1 full, 2-4 deltas: keep=2 would drop 1 and 2, but 4 needs them
    assert sorted(kinds(store)) == [1, 2, 3, 4] and all(k is not None for k in kinds(store).values())
    assert state_of(LearningRun.from_checkpoint(store.latest("m", "p0"))) == states[4]
    assert store.prune("m", keep=1) == {"m": 0}  # `models --prune` keeps them too
    states.update(drive(run, store, chunks=2, start=160))  # 5 is full, 6 a delta on it: 1-4 are not needed
    assert kinds(store) == {5: FULL, 6: DELTA}
    with store.engine.connect() as conn:
        assert conn.execute(select(join_links_table.c.version)).scalars().all() == [6]
    assert state_of(LearningRun.from_checkpoint(store.latest("m", "p0"))) == states[6]
    store.close()


def test_a_delta_whose_base_is_gone_is_written_as_a_full_snapshot(tmp_path):
    store = CheckpointStore(f"sqlite:///{tmp_path / 'cp.db'}", keep=0)
    run = LearningRun(CONFIG, "m", shard="p0")
    drive(run, store, chunks=2)
    store.replace_on_next_save("m")  # --force: the earlier versions go in the same transaction
    states = drive(run, store, chunks=1, start=80)
    assert kinds(store) == {3: FULL}
    assert state_of(LearningRun.from_checkpoint(store.latest("m", "p0"))) == states[3]
    store.close()


@pytest.mark.parametrize("fixture", ["checkpoints-0.1-8813bba.db", "checkpoints-main-507ea83.db",
                                     "checkpoints-main-03d6417.db"])
def test_older_databases_load_and_continue_with_deltas(tmp_path, fixture):
    db = tmp_path / "old.db"
    shutil.copy(DATA / fixture, db)
    store = CheckpointStore(f"sqlite:///{db}", keep=0)  # adds the links table
    model = "diag-linucb" if "0.1" in fixture else "diag"
    shard = store.heads(model)[0].shard
    cp = store.latest(model, shard)
    run = LearningRun.from_checkpoint(cp)
    before = len(run.join.open)
    assert before > 0
    start = int(run.join.watermark or 0) + 1000
    states = drive(run, store, chunks=3, start=start)
    heads = kinds(store, model)
    assert [heads[v] for v in states] == [DELTA, DELTA, DELTA]  # the first delta applies to the JSON state
    restored = LearningRun.from_checkpoint(store.latest(model, shard))
    assert state_of(restored) == states[max(states)]
    store.close()


def test_changes_are_recorded_only_while_the_next_checkpoint_can_be_a_delta(tmp_path):
    run = LearningRun(CONFIG, "m", shard="p0")
    for ev in events(0, 500):  # no checkpoint yet: the first is a full snapshot, nothing to record
        run.process(ev)
    assert not run.join._changed and not run.join._removed
    store = CheckpointStore(f"sqlite:///{tmp_path / 'cp.db'}", keep=0)
    run.join.delta_policy = DeltaPolicy(min_churn=100, max_churn=0.1)
    drive(run, store, chunks=1, start=500)
    for ev in events(540, 5000):  # far more than a delta is worth: recording stops, the next one is full
        run.process(ev)
    assert not run.join._changed
    states = drive(run, store, chunks=1, start=5540, check=True)
    assert kinds(store)[max(states)] == FULL
    store.close()


def test_a_stored_delta_saved_again_is_written_whole(tmp_path):
    """As the demo does to keep only the final model: save the newest rows again with keep=1."""
    store = CheckpointStore(f"sqlite:///{tmp_path / 'cp.db'}", keep=0)
    run = LearningRun(CONFIG, "m", shard="p0")
    states = drive(run, store, chunks=3)
    compact = CheckpointStore(store.url, keep=1)
    (version,) = compact.save_many(compact.latest_per_shard("m"))
    assert kinds(store) == {version: FULL}
    assert state_of(LearningRun.from_checkpoint(store.latest("m", "p0"))) == states[3]
    store.close()
    compact.close()
