"""Vowpal Wabbit learners beyond the common contract (``tests/test_learners.py`` covers that):
VW options, the state as VW's own model bytes, refused merges, escaped arm ids, equality with a
hand-fed VW workspace, learning, and use through replay, the scorer and evaluate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from vowpalwabbit import Workspace

from banditloop.cli import main
from banditloop.operators.registry import learner_from_state, make_learner
from banditloop.operators.vw_base import MODEL_ARRAY, context_features, escape
from banditloop.operators.vw_cb import CB_TYPES, EXPLORATIONS, VWContextualBandit
from banditloop.operators.vw_ctr import VWLogisticCTR


def _xs(n: int, seed: int, dim: int = 3) -> np.ndarray:
    X = np.random.default_rng(seed).normal(size=(n, dim))
    X[:, 0] = 1.0
    return X


@pytest.mark.parametrize("exploration", EXPLORATIONS)
@pytest.mark.parametrize("cb_type", CB_TYPES)
def test_every_exploration_and_cost_estimator(exploration, cb_type):
    if exploration in ("squarecb", "regcb") and cb_type != "mtr":
        with pytest.raises(ValueError, match="Vowpal Wabbit refused"):
            VWContextualBandit(3, exploration=exploration, cb_type=cb_type)
        return
    lrn = VWContextualBandit(3, exploration=exploration, cb_type=cb_type, bits=16, seed=1)
    rng = np.random.default_rng(0)
    for x in _xs(200, 1):
        d = lrn.choose(x, ["a", "b", "c"])
        assert d.probabilities.sum() == pytest.approx(1.0) and d.propensity == d.probabilities[["a", "b", "c"].index(
            d.arm)] > 0
        lrn.learn_one(d.arm, x, float(rng.random() < (0.6 if d.arm == "a" else 0.1)))
    assert lrn.counters["impressions"] == 200
    assert f"--cb_type {cb_type}" in lrn.vw_args()


def test_bad_hyper_parameters_are_refused():
    for kwargs in ({"exploration": "ucb"}, {"cb_type": "dm"}, {"epsilon": 1.5}, {"bits": 40}, {"cover": 0}):
        with pytest.raises(ValueError):
            VWContextualBandit(3, **kwargs)
    for kwargs in ({"exploration": "ucb"}, {"temperature": 0}, {"l2": -1}):
        with pytest.raises(ValueError):
            VWLogisticCTR(3, **kwargs)


def test_state_is_vw_model_bytes_and_loads_in_vw(tmp_path):
    lrn = VWContextualBandit(3, exploration="epsilon", bits=16, seed=2)
    for x in _xs(50, 2):
        lrn.learn_one("a", x, 1.0)
        lrn.learn_one("b", x, 0.0)
    state = lrn.export_state()
    blob = state.arrays[MODEL_ARRAY]
    assert blob.dtype.kind == "f" and np.all(blob == np.round(blob)) and blob.min() >= 0 and blob.max() <= 255
    data = blob.astype(np.uint8).tobytes()
    assert b"--cb_explore_adf" in data  # VW's own model file, with its options
    # the bytes are a model VW itself loads: same probabilities as the learner's
    path = tmp_path / "vw.model"
    with open(path, "wb") as fh:
        fh.write(data)
    vw = Workspace(f"{lrn.vw_args()} --quiet -i {path}")
    x = _xs(1, 3)[0]
    lines = [f"shared |s {context_features(x)}", "|a arm=a", "|a arm=b"]
    assert vw.predict(lines) == pytest.approx(lrn.score(x, ["a", "b"]).tolist(), abs=0)
    vw.finish()
    bad = blob.copy()
    bad[3] = 300.0
    with pytest.raises(ValueError, match="byte string"):
        learner_from_state(type(state)(**{**state.__dict__, "arrays": {**state.arrays, MODEL_ARRAY: bad}}))
    truncated = blob[: blob.size // 2]  # VW itself would load this without complaint
    with pytest.raises(ValueError, match="CRC-32"):
        learner_from_state(type(state)(**{**state.__dict__, "arrays": {**state.arrays, MODEL_ARRAY: truncated}}))


@pytest.mark.parametrize("kind", ["vw-cb", "vw-ctr"])
def test_merge_is_refused_with_a_reason(kind):
    a, b = make_learner(kind, 3), make_learner(kind, 3)
    with pytest.raises(ValueError, match="cannot be merged"):
        a.merge(b)


def test_arm_ids_are_escaped():
    assert escape("ad 7|x:1%") == "ad%207%7Cx%3A1%25"
    lrn = VWLogisticCTR(2, epsilon=0.0, bits=16)
    x = np.array([1.0, 0.0])
    for _ in range(30):
        lrn.learn_one("ad 7|x:1", x, 1.0)
        lrn.learn_one("ad 7", x, 0.0)
    assert lrn.choose(x, ["ad 7", "ad 7|x:1"]).arm == "ad 7|x:1"


def test_ctr_equals_a_hand_fed_vw_model_with_fake_negatives():
    lrn = VWLogisticCTR(3, bits=16, learning_rate=0.3, seed=4)
    vw = Workspace(f"{lrn.vw_args()} --random_seed 4 --quiet")
    rng = np.random.default_rng(5)
    for x in _xs(100, 6):
        arm = "a" if rng.random() < 0.5 else "b"
        r = float(rng.random() < 0.3)
        lrn.learn_impression(arm, x)
        vw.learn(f"-1 1.0 |x {context_features(x)} |a arm={arm}")
        if r:
            lrn.learn_reward(arm, x, r)
            vw.learn(f"1 1.0 |x {context_features(x)} |a arm={arm}")
    x = _xs(1, 7)[0]
    assert lrn.predict("a", x) == vw.predict(f"|x {context_features(x)} |a arm=a")
    q = lrn.predict("b", x)
    assert lrn.ctr("b", x) == pytest.approx(q / (1 - q))
    vw.finish()


@pytest.mark.parametrize("kind", ["vw-cb", "vw-ctr"])
def test_vw_learners_prefer_the_better_arm(kind):
    lrn = make_learner(kind, 3, seed=8)
    rng = np.random.default_rng(9)
    rates = {"good": 0.5, "bad": 0.05}
    for x in _xs(1500, 10):
        d = lrn.choose(x, list(rates))
        lrn.learn_one(d.arm, x, float(rng.random() < rates[d.arm]))
    probs = lrn.action_probabilities(_xs(1, 11)[0], list(rates))
    assert probs[0] > 0.8, probs


def test_replay_checkpoint_scorer_and_evaluate(tmp_path, capsys):
    from banditloop.serving.scorer import Scorer
    from banditloop.simulators.config import WorldConfig
    from banditloop.simulators.logs import generate_log

    log = tmp_path / "log.jsonl"
    generate_log(WorldConfig(seed=3, arms=4, dim=3), "random", 2000, log)
    db = f"sqlite:///{tmp_path / 'vw.db'}"
    assert main(["replay", str(log), "--learner", "vw-cb", "--model", "vw", "--dim", "4", "--numeric", "x0,x1,x2",
                 "--db", db, "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["impressions"] == 2000
    scorer = Scorer(db, "vw")
    scorer.reload()
    result = scorer.choose({"x0": 0.1, "x1": -0.3, "x2": 1.0}, candidates=["a0", "a1", "a2", "a3"])
    assert result.arm in {"a0", "a1", "a2", "a3"} and 0 < result.propensity <= 1
    assert main(["evaluate", str(log), "--model", "vw", "--db", db, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["learner"] == "vw-cb" and out["used"] == 2000 and out["uniform_logging"] is True
    assert out["replay"]["n"] > 0 and out["dr"]["ci_low"] < out["dr"]["value"] < out["dr"]["ci_high"]


def test_a_scorer_refuses_several_vw_shards(tmp_path):
    from banditloop.pipeline.checkpoints import Checkpoint, CheckpointStore
    from banditloop.pipeline.model import ModelConfig
    from banditloop.serving.served import merge_checkpoints

    config = ModelConfig(learner="vw-cb")
    store = CheckpointStore(f"sqlite:///{tmp_path / 'shards.db'}")
    for shard in ("p0", "p1"):
        lrn = config.new_learner()
        lrn.learn_one("a", np.ones(config.features.dim), 1.0)
        store.save(Checkpoint(model="vw", shard=shard, config=config.to_dict(), state=lrn.export_state(),
                              counters={}, source={}))
    with pytest.raises(ValueError, match="cannot be merged"):
        merge_checkpoints(store.latest_per_shard("vw"))
    _, learner = merge_checkpoints(store.latest_per_shard("vw", ["p0"]))  # one shard serves
    assert learner.kind == "vw-cb" and learner.counters["impressions"] == 1
    store.close()
