import io
import threading

import numpy as np
import pytest

from banditloop.core.state_codec import CorruptState, decode_state, encode_state
from banditloop.operators.linucb import LinUCB
from banditloop.pipeline.checkpoints import Checkpoint, CheckpointStore
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


def test_nan_in_a_stored_state_never_reaches_a_model():
    state = trained().export_state()
    state.arrays["xty"][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        LinUCB.from_state(decode_state(*encode_state(state)))
