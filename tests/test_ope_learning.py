"""Off-policy learning in replay: updates weighted by the clipped inverse propensity."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest

from banditloop.cli import main
from banditloop.core.features import FeatureSpec
from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.pipeline.join import OpenImpression
from banditloop.pipeline.model import ModelConfig
from banditloop.pipeline.replay import ReplayOptions, replay_log

T0 = 1_767_225_600.0
FEATURES = FeatureSpec(dim=3, numeric=("u", "v"))


def _log(path, rows: list[tuple[str, float, float, float | None, int]]) -> str:
    """rows: (arm, u, v, propensity, clicked); candidates a, b, c, d."""
    with open(path, "w") as fh:
        for i, (arm, u, v, p, clicked) in enumerate(rows):
            imp = {"type": "impression", "event_id": f"e{i}", "ts": T0 + i, "impression_id": f"i{i}", "arm": arm,
                   "context": {"u": u, "v": v}, "candidates": ["a", "b", "c", "d"]}
            if p is not None:
                imp["propensity"] = p
            fh.write(json.dumps(imp) + "\n")
            if clicked:
                fh.write(json.dumps({"type": "click", "event_id": f"c{i}", "ts": T0 + i + 3,
                                     "impression_id": f"i{i}"}) + "\n")
    return str(path)


ROWS = [("a", 0.5, -1.0, 0.7, 1), ("a", 1.5, 0.2, 0.7, 0), ("b", -0.3, 0.8, 0.1, 1), ("a", 0.1, 0.1, 0.05, 1),
        ("b", 2.0, -0.5, 0.2, 0), ("a", -1.0, 0.3, None, 1)]


def test_weighted_sufficient_statistics_by_hand(tmp_path):
    config = ModelConfig(learner="linucb", features=FEATURES, ips_clip=5.0)
    store = CheckpointStore(f"sqlite:///{tmp_path / 'w.db'}")
    summary = replay_log(_log(tmp_path / "log.jsonl", ROWS), config, "m", store, ReplayOptions(quiet=True))
    assert summary["ips_clip"] == 5.0 and summary["unweighted"] == 1
    state = store.latest("m").state
    expected = {arm: (np.zeros((3, 3)), np.zeros(3)) for arm in ("a", "b")}
    for arm, u, v, p, clicked in ROWS:
        w = 1.0 if p is None else min(1.0 / (4 * p), 5.0)
        x = np.array([1.0, u, v])
        expected[arm][0][...] += w * np.outer(x, x)
        expected[arm][1][...] += w * clicked * x
    for arm, (xtx, xty) in expected.items():
        r = state.arms.index(arm)
        np.testing.assert_allclose(state.arrays["xtx"][r], xtx, rtol=1e-12)
        np.testing.assert_allclose(state.arrays["xty"][r], xty, rtol=1e-12, atol=1e-15)
    assert store.latest("m").config["ips_clip"] == 5.0
    store.close()


def test_a_uniform_log_is_learned_as_without_weights(tmp_path):
    rows = [(arm, u, v, 0.25, c) for arm, u, v, _, c in ROWS]
    store = CheckpointStore(f"sqlite:///{tmp_path / 'u.db'}")
    for name, clip in (("w", 10.0), ("plain", None)):
        replay_log(_log(tmp_path / "log.jsonl", rows), ModelConfig(learner="diag-linucb", features=FEATURES,
                                                                   ips_clip=clip), name, store,
                   ReplayOptions(quiet=True))
    weighted, plain = store.latest("w").state, store.latest("plain").state
    for key in plain.arrays:
        np.testing.assert_allclose(weighted.arrays[key], plain.arrays[key], rtol=1e-12)
    assert "ips_clip" not in store.latest("plain").config  # older configurations compare equal
    store.close()


def test_unsupported_learners_and_bad_caps_are_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="weighted updates"):
        ModelConfig(learner="egreedy", ips_clip=10.0)
    with pytest.raises(ValueError, match=">= 1"):
        ModelConfig(learner="linucb", ips_clip=0.5)
    log = _log(tmp_path / "log.jsonl", ROWS)
    db = f"sqlite:///{tmp_path / 'c.db'}"
    assert main(["replay", log, "--learner", "ts", "--ips-weight", "--db", db, "--quiet"]) == 2
    assert "weighted updates" in capsys.readouterr().err
    assert main(["replay", log, "--learner", "linucb", "--ips-weight", "--ips-clip", "3", "--dim", "3",
                 "--numeric", "u,v", "--db", db, "--quiet", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ips_clip"] == 3.0 and out["unweighted"] == 1


def test_join_states_written_before_the_propensity_field_still_load():
    old = msgspec.json.encode(["i1", "e1", T0, "a", {"u": 1.0}, None, True, 0, 0.0, 1.0, ["c1"]])
    imp = msgspec.json.decode(old, type=OpenImpression)
    assert imp.propensity is None and imp.candidates == 0 and imp.clicked
