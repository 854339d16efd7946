"""The contract every learner in :data:`banditloop.operators.registry.LEARNERS` keeps.

Parametrised over all kinds: hyper-parameters are complete; export/import changes no score and the
restored learner continues identically; merging disjoint streams equals learning both (exactly for
additive kinds); ``learn_batch`` equals ``learn_one``; delayed feedback equals ``learn_one``; arms can
appear at any time and retired arms are never chosen; propensities sum to 1 and match the empirical
choice frequencies; the seed fixes every decision; corrupt states are refused. The CTR model, whose
merge is approximate and whose learning is order-dependent, has its own tests at the end.
All randomness is seeded.
"""

from __future__ import annotations

import inspect
import json
import zlib
from dataclasses import dataclass

import numpy as np
import pytest
from river import linear_model, optim
from sklearn.metrics import roc_auc_score

from banditloop.operators.base import Learner, LearnerState
from banditloop.operators.registry import LEARNERS, learner_class, learner_from_state, make_learner

D = 4
K_SHARED = 3
KINDS = list(LEARNERS)
#: non-default hyper-parameters, so that the tests see them survive round trips
PARAMS: dict[str, dict] = {
    "egreedy": {"epsilon": 0.3, "initial_value": 0.25},
    "ucb1": {"c": 0.8},
    "kl-ucb": {"c": 0.5, "pending": "shrink"},
    "discounted-ucb": {"c": 0.8, "discount": 0.97},
    "ts": {"prior_alpha": 1.5, "propensity_draws": 128},
    "discounted-ts": {"prior_alpha": 1.5, "propensity_draws": 128, "discount": 0.97},
    "linucb": {"alpha": 0.8, "ridge": 0.7, "refresh_every": 7},
    "discounted-linucb": {"alpha": 0.8, "ridge": 0.7, "discount": 0.97},
    "hybrid-linucb": {"shared_dim": K_SHARED, "alpha": 0.8, "ridge": 0.7, "refresh_every": 7},
    "diag-linucb": {"alpha": 0.8, "ridge": 0.7},
    "lints": {"v": 0.5, "ridge": 0.7, "refresh_every": 7, "propensity_draws": 128},
    "logistic-ts": {"prior_precision": 0.5, "update_every": 3, "propensity_draws": 128},
    "glm-ucb": {"alpha": 0.3, "prior_precision": 0.5, "intercept_precision": 2.0},
    "ctr-lr": {"epsilon": 0.3, "learning_rate": 0.1},
    "ctr-ftrl": {"delay": "wait", "alpha": 0.2, "beta": 0.5, "l1": 0.01, "l2": 0.1, "prior": 0.2, "epsilon": 0.3},
    "vw-cb": {"exploration": "epsilon", "epsilon": 0.3, "bits": 16},
    "vw-ctr": {"epsilon": 0.3, "bits": 16},
}
ARMS = [f"a{i}" for i in range(6)]


def exact_kinds() -> list[str]:
    return [k for k in KINDS if learner_class(k).exact_merge]


def make(kind: str, seed: int = 0, **overrides) -> Learner:
    return make_learner(kind, D, seed=seed, **{**PARAMS.get(kind, {}), **overrides})


def z_of(arm: str, x: np.ndarray) -> np.ndarray:
    """A deterministic shared (arm × context) vector, as a featurizer would build it."""
    c = (zlib.crc32(arm.encode()) % 5 + 1) / 5.0
    return np.array([1.0, c, c * x[1]])


def shared_for(x: np.ndarray, candidates: list[str]) -> dict[str, np.ndarray]:
    return {a: z_of(a, x) for a in candidates}


@dataclass
class Stream:
    arms: list[str]
    X: np.ndarray
    Z: np.ndarray
    rewards: np.ndarray

    def __len__(self) -> int:
        return len(self.arms)

    def part(self, idx) -> Stream:
        idx = np.asarray(idx)
        return Stream([self.arms[i] for i in idx], self.X[idx], self.Z[idx], self.rewards[idx])


def stream(n: int, seed: int, arms: list[str] = ARMS) -> Stream:
    """Events with a bias feature, arm-dependent reward rates, and rewards in {0, 0.5, 1}."""
    rng = np.random.default_rng(seed)
    chosen = [arms[i] for i in rng.integers(len(arms), size=n)]
    X = rng.normal(size=(n, D))
    X[:, 0] = 1.0
    rate = np.array([0.15 + 0.1 * (int(a[1:]) % 4) for a in chosen]) + 0.1 * np.tanh(X[:, 1])
    rewards = (rng.random(n) < rate).astype(float)
    rewards[rng.random(n) < 0.1] = 0.5
    Z = np.array([z_of(a, x) for a, x in zip(chosen, X, strict=True)])
    return Stream(chosen, X, Z, rewards)


def feed(learner: Learner, s: Stream) -> None:
    for arm, x, z, r in zip(s.arms, s.X, s.Z, s.rewards, strict=True):
        learner.learn_one(arm, x, float(r), z)


def probes(n: int = 5, seed: int = 99) -> np.ndarray:
    X = np.random.default_rng(seed).normal(size=(n, D))
    X[:, 0] = 1.0
    return X


def scores(learner: Learner, x: np.ndarray, candidates: list[str] = ARMS) -> np.ndarray:
    return learner.score(x, candidates, shared_for(x, candidates))


def arrays_by_arm(learner: Learner, arms: list[str]) -> dict[str, np.ndarray]:
    """Exported arrays with per-arm rows in the order of ``arms`` (global arrays unchanged)."""
    state = learner.export_state()
    order = [learner.arms.index(a) for a in arms]
    return {name: arr if name in learner._globals else arr[order] for name, arr in state.arrays.items()}


def assert_same_state(a: Learner, b: Learner, rtol: float = 1e-9) -> None:
    assert set(a.arms) == set(b.arms)
    arms = sorted(a.arms)
    sa, sb = arrays_by_arm(a, arms), arrays_by_arm(b, arms)
    assert sa.keys() == sb.keys()
    for name in sa:
        np.testing.assert_allclose(sa[name], sb[name], rtol=rtol, atol=1e-12, err_msg=name)
    assert a.counters.keys() == b.counters.keys()
    for key in a.counters:
        assert a.counters[key] == pytest.approx(b.counters[key], rel=1e-12), key


def json_round_trip(state: LearnerState) -> LearnerState:
    """The state through JSON (metadata) and plain float arrays, as a checkpoint store would move it."""
    meta = json.loads(json.dumps({"kind": state.kind, "params": state.params, "arms": state.arms,
                                  "retired": state.retired, "counters": state.counters, "rng": state.rng},
                                 allow_nan=False))
    for name, arr in state.arrays.items():
        assert isinstance(arr, np.ndarray) and arr.dtype.kind == "f", name
    arrays = {name: np.array(arr.tolist()) for name, arr in state.arrays.items()}
    return LearnerState(arrays=arrays, **meta)


# -- hyper-parameters -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_params_cover_constructor_args(kind):
    cls = learner_class(kind)
    learner = make(kind, seed=7)
    names = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    params = learner.params()
    assert set(params) == set(names)
    assert params["seed"] == 7 and params["dim"] == D
    for key, value in PARAMS.get(kind, {}).items():
        assert params[key] == value, key
    json.dumps(params, allow_nan=False)
    assert cls(**params).params() == params
    assert learner.kind == kind


# -- state ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_changes_no_score_and_continues_identically(kind):
    learner = make(kind, seed=3)
    feed(learner, stream(150, seed=1))
    learner.retire_arm("a5")
    restored = learner_from_state(json_round_trip(learner.export_state()))
    assert type(restored) is type(learner) and restored.params() == learner.params()
    assert restored.arms == learner.arms and restored.retired == learner.retired
    for x in probes():
        np.testing.assert_allclose(scores(restored, x), scores(learner, x), rtol=1e-9, atol=1e-12)
    # the restored learner (random generator included) makes the same decisions and learns the same
    more = stream(60, seed=2)
    for arm, x, z, r in zip(more.arms, more.X, more.Z, more.rewards, strict=True):
        d1 = learner.choose(x, ARMS, shared_for(x, ARMS))
        d2 = restored.choose(x, ARMS, shared_for(x, ARMS))
        assert d1.arm == d2.arm and d1.arm != "a5"
        assert d1.propensity == pytest.approx(d2.propensity, rel=1e-9)
        for lrn in (learner, restored):
            lrn.learn_one(arm, x, float(r), z)
    assert_same_state(learner, restored)


@pytest.mark.parametrize("kind", exact_kinds())
def test_merge_of_disjoint_streams_equals_one_learner(kind):
    s = stream(240, seed=4)
    first = [i for i in range(120) if s.arms[i] != "a5"]  # a5 appears in the second shard only
    second = [i for i in range(240) if i not in set(first)]
    a, b, whole = make(kind, seed=1), make(kind, seed=2), make(kind, seed=1)
    feed(a, s.part(first))
    b.add_arm("b9")  # known to one shard only, never learned
    feed(b, s.part(second))
    b.retire_arm("a3")
    feed(whole, s.part(first))
    whole.add_arm("b9")
    feed(whole, s.part(second))
    whole.retire_arm("a3")

    before_a, before_b = a.export_state(), b.export_state()
    merged = a.merge(b)
    for old, new in ((before_a, a.export_state()), (before_b, b.export_state())):
        assert old.arms == new.arms and old.counters == new.counters
        for name in old.arrays:
            np.testing.assert_array_equal(old.arrays[name], new.arrays[name])

    assert merged.retired == {"a3"}
    assert_same_state(merged, whole)
    cands = [*ARMS, "b9"]
    if kind == "ts":
        for arm in cands:
            assert merged.posterior(arm) == pytest.approx(whole.posterior(arm), rel=1e-12)
    elif kind == "lints":
        for arm in cands:
            for m, w in zip(merged.posterior(arm), whole.posterior(arm), strict=True):
                np.testing.assert_allclose(m, w, rtol=1e-9, atol=1e-12)
    elif kind != "random":
        for x in probes():
            np.testing.assert_allclose(scores(merged, x, cands), scores(whole, x, cands), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_merge_refuses_other_kind_or_dim(kind):
    learner = make(kind)
    other_kind = "linucb" if kind != "linucb" else "diag-linucb"
    with pytest.raises(ValueError):
        learner.merge(make(other_kind))
    with pytest.raises(ValueError):
        learner.merge(make_learner(kind, D + 1, **PARAMS.get(kind, {})))


@pytest.mark.parametrize("kind", KINDS)
def test_corrupt_state_is_refused(kind):
    learner = make(kind)
    feed(learner, stream(40, seed=5))
    good = learner.export_state()
    learner_from_state(good)  # the untouched state loads

    def with_arrays(arrays) -> LearnerState:
        return LearnerState(kind=good.kind, params=good.params, arms=good.arms, retired=good.retired,
                            arrays=arrays, counters=good.counters, rng=good.rng)

    for name, arr in good.arrays.items():
        for bad_value in (np.nan, np.inf, -np.inf):
            bad = arr.copy()
            bad.flat[bad.size // 2] = bad_value
            with pytest.raises(ValueError, match="NaN or inf"):
                learner_from_state(with_arrays({**good.arrays, name: bad}))
        with pytest.raises(ValueError, match="shape"):
            learner_from_state(with_arrays({**good.arrays, name: arr[..., None]}))
        with pytest.raises(ValueError, match="lacks"):
            learner_from_state(with_arrays({k: v for k, v in good.arrays.items() if k != name}))
    with pytest.raises(ValueError, match="unknown"):
        learner_from_state(with_arrays({**good.arrays, "extra": np.zeros(1)}))
    for bad_value in (np.nan, np.inf):
        bad_counters = {**good.counters, "impressions": bad_value}
        with pytest.raises(ValueError, match="counter"):
            learner_from_state(LearnerState(kind=good.kind, params=good.params, arms=good.arms, retired=good.retired,
                                            arrays=good.arrays, counters=bad_counters, rng=good.rng))
    other = "linucb" if kind != "linucb" else "ts"
    with pytest.raises(ValueError):
        learner_class(other).from_state(good)
    float_params = [k for k, v in good.params.items() if isinstance(v, float)]
    for key in float_params:
        bad_params = {**good.params, key: float("nan")}
        with pytest.raises(ValueError, match="not finite"):
            learner_from_state(LearnerState(kind=good.kind, params=bad_params, arms=good.arms, retired=good.retired,
                                            arrays=good.arrays, counters=good.counters, rng=good.rng))
    with pytest.raises(ValueError, match="hyper-parameters"):
        learner_from_state(LearnerState(kind=good.kind, params={**good.params, "bogus": 1}, arms=good.arms,
                                        retired=good.retired, arrays=good.arrays, counters=good.counters,
                                        rng=good.rng))


# -- learning ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_learn_batch_equals_learn_one(kind):
    arms = [f"a{i}" for i in range(11)]  # more arms than the initial capacity (8): rows grow mid-batch
    s = stream(150, seed=6, arms=arms)
    one, batch = make(kind), make(kind)
    feed(one, s)
    for part in (s.part(range(0, 60)), s.part(range(60, 150))):
        batch.learn_batch(part.arms, part.X, part.rewards, part.Z)
    assert batch.arms == one.arms
    assert_same_state(batch, one)
    for x in probes():  # learning draws nothing from the generator, so even sampled scores agree
        np.testing.assert_allclose(scores(batch, x, arms), scores(one, x, arms), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", exact_kinds())
def test_delayed_feedback_equals_learn_one(kind):
    """All impressions first, rewards much later and out of order: same state as ``learn_one``."""
    s = stream(120, seed=7)
    now, delayed = make(kind), make(kind)
    feed(now, s)
    for arm, x, z in zip(s.arms, s.X, s.Z, strict=True):
        delayed.learn_impression(arm, x, z)
    clicked = np.flatnonzero(s.rewards)
    assert clicked.size > 10
    for i in np.random.default_rng(0).permutation(clicked):
        delayed.learn_reward(s.arms[i], s.X[i], float(s.rewards[i]), s.Z[i])
    for i in np.random.default_rng(1).permutation(len(s.arms)):  # then every window closes
        delayed.learn_close(s.arms[i], s.X[i], float(s.rewards[i]), s.Z[i])
    assert_same_state(delayed, now)
    for x in probes():
        np.testing.assert_allclose(scores(delayed, x), scores(now, x), rtol=1e-9, atol=1e-12)


# -- arms -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_new_arms_can_appear_at_any_time(kind):
    learner = make(kind)
    old = ["a0", "a1", "a2"]
    feed(learner, stream(60, seed=8, arms=old))
    before = arrays_by_arm(learner, old)
    new = [f"n{i}" for i in range(12)]
    cands = old + new  # 15 arms: beyond the initial capacity of 8
    x = probes(1)[0]
    decision = learner.choose(x, cands, shared_for(x, cands))
    assert decision.arm in cands
    assert sorted(learner.arms[:3]) == old and learner.arms[3:] == new
    if kind == "ucb1":
        assert decision.arm in new  # never-played arms come first
    after = arrays_by_arm(learner, old)
    for name in before:
        if name.startswith("vw_model"):  # VW's model file (and its checksum) counts predictions too
            continue
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    learner.learn_one("n7", x, 1.0, z_of("n7", x))
    learner.learn_one("late", x, 0.0, z_of("late", x))  # an arm first seen in feedback
    state = learner.export_state()
    assert state.arms == [*learner.arms[:3], *new, "late"]
    restored = learner_from_state(state)
    for x in probes():
        np.testing.assert_allclose(scores(restored, x, cands), scores(learner, x, cands), rtol=1e-9, atol=1e-12)
    assert learner.choose(x, shared=shared_for(x, learner.arms)).arm in learner.arms  # candidates=None: all arms


@pytest.mark.parametrize("kind", KINDS)
def test_retired_arms_are_never_chosen(kind):
    learner = make(kind)
    # make a0 and a1 the best arms by far, so a learner that ignored retirement would pick them
    rng = np.random.default_rng(9)
    for _ in range(40):
        for arm in ARMS:
            x = rng.normal(size=D)
            x[0] = 1.0
            learner.learn_one(arm, x, 1.0 if arm in ("a0", "a1") else 0.0, z_of(arm, x))
    learner.retire_arm("a0")
    learner.retire_arm("a1")
    restored = learner_from_state(learner.export_state())
    eligible = ARMS[2:]
    for lrn in (learner, restored):
        for t in range(150):
            x = rng.normal(size=D)
            d = lrn.choose(x, ARMS if t % 2 else None, shared_for(x, ARMS))
            assert d.arm in eligible
            assert list(d.candidates) == eligible
            if d.probabilities is not None:
                assert d.probabilities.sum() == pytest.approx(1.0, abs=1e-12)
    learner.learn_reward("a0", x, 1.0, z_of("a0", x))  # late feedback for a retired arm still counts
    assert "a0" in learner.export_state().arms and learner.export_state().retired == ["a0", "a1"]
    with pytest.raises(ValueError):
        learner.choose(x, ["a0", "a1"], shared_for(x, ["a0", "a1"]))


# -- decisions --------------------------------------------------------------------------------------
RANDOMISED = [("random", {}), ("egreedy", {}), ("ts", {}), ("discounted-ts", {}), ("lints", {}),
              ("logistic-ts", {}), ("ctr-lr", {}), ("ctr-lr", {"exploration": "softmax", "temperature": 0.1}),
              ("ctr-ftrl", {}), ("ctr-ftrl", {"delay": "fnw", "exploration": "softmax", "temperature": 0.1}),
              ("vw-cb", {}), ("vw-cb", {"exploration": "squarecb"}), ("vw-ctr", {})]


@pytest.mark.parametrize(("kind", "extra"), RANDOMISED, ids=[f"{k}{'-' + '-'.join(e) if e else ''}"
                                                             for k, e in RANDOMISED])
def test_propensities_sum_to_one_and_match_choice_frequencies(kind, extra):
    learner = make(kind, seed=11, **extra)
    cands = ["a0", "a1", "a2", "a3"]
    feed(learner, stream(40 if kind in ("ts", "lints") else 300, seed=10, arms=cands))
    x = probes(1, seed=12)[0]
    shared = shared_for(x, cands)
    n = 2000
    counts = np.zeros(len(cands))
    expected = np.zeros(len(cands))
    for _ in range(n):
        d = learner.choose(x, cands, shared)
        i = cands.index(d.arm)
        assert d.probabilities is not None
        assert d.probabilities.sum() == pytest.approx(1.0, abs=1e-12)
        assert d.propensity == d.probabilities[i] > 0.0
        counts[i] += 1
        expected += d.probabilities
    freq, p = counts / n, expected / n
    assert p.max() < 0.97 and p.min() > 0.001, p  # a non-trivial distribution, or the test proves little
    assert len(set(np.round(p, 3))) > 1 or kind == "random", p  # ... and not uniform (except for random)
    if kind == "random":
        assert np.all(p == 0.25)
    tolerance = 4.5 * np.sqrt(p * (1 - p) / n) + 1e-3
    assert np.all(np.abs(freq - p) <= tolerance), (freq, p)


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in {k for k, _ in RANDOMISED}])
def test_deterministic_policies_play_the_argmax(kind):
    learner = make(kind, seed=13)
    feed(learner, stream(200, seed=13))
    for x in probes(20, seed=14):
        shared = shared_for(x, ARMS)
        d = learner.choose(x, ARMS, shared)
        s = d.score_array
        assert d.arm == ARMS[int(np.argmax(s))] and d.propensity == 1.0
        probs = learner.propensities(x, ARMS, s, shared)
        assert probs.sum() == pytest.approx(1.0) and probs[ARMS.index(d.arm)] == 1.0
        assert d.ranking[0] == d.arm and sorted(d.ranking) == sorted(ARMS)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_decisions(kind):
    def run(seed: int) -> list[tuple[str, float]]:
        learner = make(kind, seed=seed)
        s = stream(80, seed=15)
        out = []
        for x, r in zip(s.X, s.rewards, strict=True):
            d = learner.choose(x, ARMS, shared_for(x, ARMS))
            out.append((d.arm, d.propensity, tuple(d.score_array.tolist())))
            learner.learn_one(d.arm, x, float(r), z_of(d.arm, x))  # the learner's own choices drive it
        return out

    first = run(21)
    assert run(21) == first
    if kind in {k for k, _ in RANDOMISED}:
        assert run(22) != first


# -- hybrid LinUCB specifics -----------------------------------------------------------------------
def test_hybrid_needs_shared_features_of_the_right_shape():
    learner = make("hybrid-linucb")
    x = probes(1)[0]
    with pytest.raises(ValueError):
        learner.choose(x, ARMS)
    with pytest.raises(ValueError):
        learner.choose(x, ARMS, shared_for(x, ARMS[:-1]))
    with pytest.raises(ValueError):
        learner.learn_one("a0", x, 1.0, np.ones(K_SHARED + 1))
    with pytest.raises(ValueError):
        learner.merge(make("hybrid-linucb", shared_dim=K_SHARED + 1))
    assert make_learner("hybrid-linucb", 5).shared_dim == 5  # defaults to dim, as Featurizer.cross builds it


def test_hybrid_scores_without_reinverting_when_nothing_changed(monkeypatch):
    learner = make("hybrid-linucb")
    feed(learner, stream(50, seed=16))
    x = probes(1)[0]
    first = scores(learner, x)
    calls = []
    real_inv = np.linalg.inv
    monkeypatch.setattr(np.linalg, "inv", lambda a: calls.append(a.shape) or real_inv(a))
    for x2 in probes(10, seed=17):
        scores(learner, x2)
    assert calls == []
    learner.learn_one("a1", x, 1.0, z_of("a1", x))
    scores(learner, x)
    assert calls == [(K_SHARED, K_SHARED)]  # one small inversion after an update, no per-arm ones
    assert not np.allclose(scores(learner, x), first)


# -- CTR logistic regression ------------------------------------------------------------------------
def river_features(arm: str, x: np.ndarray) -> dict[str, float]:
    out = {f"x{i}": float(v) for i, v in enumerate(x) if v != 0}
    out.update({f"{arm}:x{i}": float(v) for i, v in enumerate(x) if v != 0})
    return out


def test_ctr_flags():
    cls = learner_class("ctr-lr")
    assert cls.binary_reward and not cls.exact_merge
    assert "fake negative" in (inspect.getmodule(cls).__doc__ or "").lower()


def test_ctr_fake_negatives_equal_a_hand_fed_river_model():
    """Impression -> a negative at once; a later reward -> the same example again as a positive."""
    learner = make("ctr-lr", l2=0.01, intercept_lr=0.05)
    reference = linear_model.LogisticRegression(optimizer=optim.SGD(learner.learning_rate), l2=0.01,
                                                intercept_lr=0.05)
    s = stream(150, seed=18)
    s.X[::7, 2] = 0.0  # some sparse rows
    pending: list[int] = []
    for i in range(len(s)):
        learner.learn_impression(s.arms[i], s.X[i])
        reference.learn_one(river_features(s.arms[i], s.X[i]), False)
        if s.rewards[i] > 0:
            pending.append(i)
        if len(pending) > 5:  # rewards arrive several impressions later
            j = pending.pop(0)
            learner.learn_reward(s.arms[j], s.X[j], float(s.rewards[j]))
            reference.learn_one(river_features(s.arms[j], s.X[j]), True, w=float(s.rewards[j]))
    for x in probes():
        for arm in ARMS:
            assert learner.predict(arm, x) == reference.predict_proba_one(river_features(arm, x))[True]
    assert learner.model.weights == reference.weights


def logistic_world(n: int, seed: int) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Arms with different logistic click models; returns arms, contexts, true probabilities, clicks."""
    rng = np.random.default_rng(seed)
    w = {"a0": np.array([-1.0, 1.5, 0.0, 0.0]), "a1": np.array([-1.0, -1.5, 1.0, 0.0]),
         "a2": np.array([-2.0, 0.0, 0.0, 1.5])}
    arms = [f"a{i}" for i in rng.integers(3, size=n)]
    X = rng.normal(size=(n, D))
    X[:, 0] = 1.0
    p = np.array([1 / (1 + np.exp(-(w[a] @ x))) for a, x in zip(arms, X, strict=True)])
    return arms, X, p, (rng.random(n) < p).astype(float)


def train_delayed(learner: Learner, arms, X, clicks, lag: int = 30) -> None:
    """Impressions as they come, each click ``lag`` impressions later (the last ones are still pending)."""
    pending: list[int] = []
    for i in range(len(arms)):
        learner.learn_impression(arms[i], X[i])
        if clicks[i]:
            pending.append(i)
        while pending and pending[0] <= i - lag:
            j = pending.pop(0)
            learner.learn_reward(arms[j], X[j], 1.0)


def test_ctr_model_learns_under_delayed_feedback():
    learner = learner_class("ctr-lr")(D)  # default hyper-parameters
    arms, X, _, clicks = logistic_world(10000, seed=19)
    train_delayed(learner, arms, X, clicks)
    arms, X, p, clicks = logistic_world(2000, seed=20)
    predicted = np.array([learner.predict(a, x) for a, x in zip(arms, X, strict=True)])
    assert roc_auc_score(clicks, predicted) > roc_auc_score(clicks, p) - 0.02 > 0.75
    # fake negatives make the raw output estimate p/(1+p), and the calibration q/(1-q) recovers p
    assert abs(predicted.mean() - (p / (1 + p)).mean()) < 0.02
    calibrated = np.array([learner.ctr(a, x) for a, x in zip(arms, X, strict=True)])
    assert abs(calibrated.mean() - p.mean()) < 0.02 < p.mean() - predicted.mean()
    # the greedy arm is the truly best arm in most contexts
    truth = {"a0": [-1.0, 1.5, 0.0, 0.0], "a1": [-1.0, -1.5, 1.0, 0.0], "a2": [-2.0, 0.0, 0.0, 1.5]}
    right = [max(truth, key=lambda a: np.dot(truth[a], x)) == ARMS[int(np.argmax(scores(learner, x, ARMS[:3])))]
             for x in X[:300]]
    assert np.mean(right) > 0.8


def test_ctr_merge_is_a_count_weighted_average():
    arms, X, _, clicks = logistic_world(1200, seed=21)
    a, b = make("ctr-lr"), make("ctr-lr", seed=1)
    train_delayed(a, arms[:800], X[:800], clicks[:800])
    train_delayed(b, arms[800:], X[800:], clicks[800:])
    b.learn_impression("only-b", X[0])
    merged = a.merge(b)
    four = [*ARMS[:3], "only-b"]
    sa, sb, sm = arrays_by_arm(a, ARMS[:3]), arrays_by_arm(b, four), arrays_by_arm(merged, four)
    na, nb = sa["n"], sb["n"][:3]
    expected_w = (na[:, None] * sa["w"] + nb[:, None] * sb["w"][:3]) / (na + nb)[:, None]
    np.testing.assert_allclose(sm["w"][:3], expected_w, rtol=1e-12)
    np.testing.assert_array_equal(sm["w"][3], sb["w"][3])  # an arm of one shard keeps its weights
    share = sb["n"].sum() / (sa["n"].sum() + sb["n"].sum())
    for name in ("w_shared", "intercept"):
        np.testing.assert_allclose(sm[name], (1 - share) * sa[name] + share * sb[name], rtol=1e-12)
    np.testing.assert_array_equal(sm["n"][:3], na + nb)
    np.testing.assert_array_equal(sm["clicks"][:3], sa["clicks"] + sb["clicks"][:3])
    # the rebuilt river model predicts from exactly those weights
    x = probes(1)[0]
    logit = float(sm["intercept"] + (sm["w_shared"] + sm["w"][1]) @ x)
    assert merged.predict("a1", x) == pytest.approx(1 / (1 + np.exp(-logit)), rel=1e-12)
    # merging with a learner that has seen nothing, or with an identical copy, changes no prediction
    for other in (make("ctr-lr"), learner_from_state(a.export_state())):
        m = a.merge(other)
        for x in probes():
            np.testing.assert_allclose(scores(m, x, ARMS[:3]), scores(a, x, ARMS[:3]), rtol=1e-12)
    # and the average of two shards is still a useful model
    arms2, X2, p2, clicks2 = logistic_world(1500, seed=22)
    predicted = [merged.predict(arm, x) for arm, x in zip(arms2, X2, strict=True)]
    assert roc_auc_score(clicks2, predicted) > 0.7
