import io
import threading

import numpy as np
import pytest
from sqlalchemy import update

from banditloop.core.features import FeatureSpec
from banditloop.core.state_codec import CorruptState, decode_arrays, decode_state, encode_state
from banditloop.operators.linucb import LinUCB
from banditloop.pipeline.checkpoint_tables import checkpoints_table
from banditloop.pipeline.checkpoints import POSTGRES_TIMEOUTS, Checkpoint, CheckpointStore, LeaseLost
from tests.helpers import assert_states_equal


def trained(n=50, seed=0):
    rng = np.random.default_rng(seed)
    learner = LinUCB(3)
    for _ in range(n):
        learner.learn_one(str(rng.integers(4)), rng.normal(size=3), float(rng.random() < 0.3))
    return learner


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cp.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    s = CheckpointStore(url, keep=3)
    yield s
    s.close()


def test_versions_increase_per_model_and_old_ones_are_pruned(store):
    state = trained().export_state()
    for i in range(5):
        store.save(Checkpoint(model="m", config={"i": i}, state=state, source={"events": i}))
    store.save(Checkpoint(model="other", config={}, state=state))
    assert store.latest_version("m") == 5 and store.latest_version("other") == 1
    assert [v for v, _, _ in store.versions("m")] == [3, 4, 5]
    latest = store.latest("m")
    assert latest.source == {"events": 4} and latest.config == {"i": 4}
    assert_states_equal(latest.state, state, rtol=0, atol=0)
    summary = {m.model: m for m in store.models()}
    assert summary["m"].latest_version == 5 and summary["m"].versions == 3


def test_shards_are_written_together_and_read_as_newest_per_shard(store):
    a, b = trained(seed=1).export_state(), trained(seed=2).export_state()
    assert store.save_many([Checkpoint(model="m", shard="p0", config={}, state=a),
                            Checkpoint(model="m", shard="p1", config={}, state=b)]) == [1, 2]
    store.save(Checkpoint(model="m", shard="p0", config={}, state=b))
    shards = {cp.shard: cp for cp in store.latest_per_shard("m")}
    assert {s: cp.version for s, cp in shards.items()} == {"p0": 3, "p1": 2}


def test_concurrent_writers_get_distinct_versions(store):
    state = trained().export_state()
    errors = []

    def write():
        try:
            for _ in range(5):
                store.save(Checkpoint(model="race", config={}, state=state))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.latest_version("race") == 15


def test_state_codec_refuses_pickled_objects_and_bad_metadata():
    arrays, meta = encode_state(trained().export_state())
    buf = io.BytesIO()
    np.savez(buf, xtx=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(CorruptState):
        decode_state(buf.getvalue(), meta)
    with pytest.raises(CorruptState):
        decode_state(arrays, "{not json")
    with pytest.raises(CorruptState):
        decode_state(b"not a zip", meta)


def test_a_compressed_state_is_refused_before_it_is_inflated():
    _, meta = encode_state(trained().export_state())
    buf = io.BytesIO()
    np.savez_compressed(buf, xtx=np.zeros((4096, 4096)))  # 128 MiB of zeros in ~130 KB
    assert len(buf.getvalue()) < 1_000_000
    with pytest.raises(CorruptState, match="inflate"):
        decode_arrays(buf.getvalue(), max_bytes=64 * 1024**2)
    assert decode_arrays(buf.getvalue(), max_bytes=256 * 1024**2)["xtx"].shape == (4096, 4096)


def test_nan_in_a_stored_state_never_reaches_a_model():
    state = trained().export_state()
    state.arrays["xty"][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        LinUCB.from_state(decode_state(*encode_state(state)))


def test_a_fenced_write_from_a_worker_whose_lease_was_taken_over_is_refused(store):
    state = trained().export_state()
    first = store.claim("m", ["p0", "p1"], "worker-a")
    assert first == {"p0": 1, "p1": 1}
    store.save_many([Checkpoint(model="m", shard="p0", config={}, state=state)], fence={"p0": 1})
    # worker b takes p1 over (worker a was paused); a's stale write of p0 and p1 is refused whole
    assert store.claim("m", ["p1"], "worker-b") == {"p1": 2}
    with pytest.raises(LeaseLost) as lost:
        store.save_many([Checkpoint(model="m", shard=s, config={"stale": True}, state=state) for s in ("p0", "p1")],
                        fence={"p0": 1, "p1": 1})
    assert lost.value.shards == ["p1"]
    assert store.latest("m", "p1") is None and store.latest_version("m") == 1
    assert store.save_many([Checkpoint(model="m", shard="p1", config={}, state=state)], fence={"p1": 2}) == [2]
    assert store.leases("m") == {"p0": (1, "worker-a"), "p1": (2, "worker-b")}


def test_an_unreadable_version_is_skipped_for_the_newest_readable_one(store):
    from banditloop.pipeline.model import ModelConfig
    from banditloop.pipeline.runner import LearningRun
    from banditloop.pipeline.shard_restore import CorruptCheckpoint, restore_shard

    config = ModelConfig("linucb", features=FeatureSpec(dim=3))
    run = LearningRun(config, "m", shard="p0")
    for version in (1, 2, 3):
        store.save(Checkpoint(model="m", shard="p0", config=config.to_dict(), state=run.learner.export_state(),
                              join_state=run.join.export_state(),
                              source={"kind": "kafka", "offsets": {"impressions": version}, "max_ts": {}}))
    with store.engine.begin() as conn:  # damage the newest row's join state
        conn.execute(update(checkpoints_table).where(checkpoints_table.c.version == 3)
                     .values(join_state=b'{"open": [tr'))
    restored = restore_shard(store, config, "m", "p0")
    assert restored.version == 2 and restored.offsets == {"impressions": 2}
    assert len(restored.skipped) == 1 and "version 3" in restored.skipped[0]
    with store.engine.begin() as conn:  # now every version is damaged: stop, loudly
        conn.execute(update(checkpoints_table).values(state_arrays=b"not a zip"))
    with pytest.raises(CorruptCheckpoint, match="none of its 3 stored versions"):
        restore_shard(store, config, "m", "p0")


@pytest.mark.postgres
def test_postgres_sessions_have_lock_statement_and_idle_transaction_timeouts(postgres_url):
    store = CheckpointStore(postgres_url)
    with store.engine.connect() as conn:
        values = {name: conn.exec_driver_sql(f"SHOW {name}").scalar() for name in POSTGRES_TIMEOUTS}
    store.close()
    assert values == {"lock_timeout": "10s", "statement_timeout": "5min", "idle_in_transaction_session_timeout": "30s"}


def test_a_model_name_that_does_not_fit_is_refused_before_any_work():
    from banditloop.pipeline.model import ModelConfig
    from banditloop.pipeline.runner import LearningRun

    with pytest.raises(ValueError, match="1 to 200 printable characters"):
        LearningRun(ModelConfig("ts"), "m" * 201)
    with pytest.raises(ValueError, match="model name"):
        LearningRun(ModelConfig("ts"), "")
    assert LearningRun(ModelConfig("ts"), "m" * 200).model == "m" * 200
