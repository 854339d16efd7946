"""LinUCB's fast paths (issue 12) against the plain ones: the same numbers, bit for bit.

* ``learn_sequence`` (replay's batched updates) = ``learn_impression`` / ``learn_reward`` one by one,
  across refreshes of the inverse and arms seen for the first time;
* ``LinUCB.choose`` (``_pick`` inlined) = ``Learner.choose``, ties and their random draws included;
* the result is still ridge regression (closed form).
"""

from __future__ import annotations

import numpy as np
import pytest

from banditloop.core.features import FeatureSpec
from banditloop.operators.base import Learner
from banditloop.operators.lin_ts import LinearTS
from banditloop.operators.linucb import LinUCB
from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.pipeline.model import ModelConfig
from banditloop.pipeline.replay import ReplayOptions, replay_log
from banditloop.pipeline.simulate import SimulationOptions, simulate
from banditloop.simulators.world import WorldConfig
from tests.helpers import assert_states_equal


def _calls(seed: int, n: int = 600, dim: int = 5, arms: int = 6):
    rng = np.random.default_rng(seed)
    kinds = rng.choice([0, 0, 1, 2], size=n).astype(np.int8)
    kinds[0] = 0
    names = [f"arm{rng.integers(arms)}" for _ in range(n)]
    X = rng.normal(size=(n, dim))
    values = np.where(kinds == 1, rng.choice([1.0, 0.25, -0.5, 3.0], size=n), 0.0)
    return kinds, names, X, values


@pytest.mark.parametrize("cls", [LinUCB, LinearTS])
@pytest.mark.parametrize("seed", [0, 1])
def test_learn_sequence_equals_the_calls_one_by_one(cls: type, seed: int) -> None:
    kinds, names, X, values = _calls(seed)
    one, batched = cls(dim=5, refresh_every=17), cls(dim=5, refresh_every=17)
    one.learn_one("arm0", X[0], 1.0)
    batched.learn_one("arm0", X[0], 1.0)
    for kind, arm, x, value in zip(kinds, names, X, values, strict=True):
        if kind == 0:
            one.learn_impression(arm, x)
        elif kind == 1:
            one.learn_reward(arm, x, float(value))
    assert batched.learn_sequence(kinds, batched.rows_of(names), X, values) is True
    assert batched.arms == one.arms
    for name in ("xtx", "xty", "n", "ainv", "theta", "since_refresh"):
        np.testing.assert_array_equal(batched._arrays[name], one._arrays[name], err_msg=name)
    assert batched.counters == one.counters


def test_learn_sequence_declines_contexts_of_another_precision() -> None:
    lin = LinUCB(dim=2)
    assert lin.learn_sequence(np.zeros(1, np.int8), lin.rows_of(["a"]), np.ones((1, 2), np.float32), np.zeros(1)) \
        is False
    assert lin.counters["impressions"] == 0.0


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    path = tmp_path_factory.mktemp("linucb_fast") / "events.jsonl"
    simulate(WorldConfig(arms=5, dim=4, seed=3, click_delay_mean=20.0, conversion_rate=0.3),
             ModelConfig("random", features=FeatureSpec(dim=5)), "sim", None,
             SimulationOptions(steps=1500, out=path, quiet=True))
    return path


@pytest.mark.parametrize("learner, params, extra", [
    ("linucb", {"refresh_every": 50}, {}),
    ("linucb", {}, {"ips_clip": 5.0}),
    ("lints", {"propensity_draws": 0}, {}),
])
def test_batched_replay_is_bit_for_bit_event_at_a_time(log, learner, params, extra) -> None:
    config = ModelConfig(learner, params, features=FeatureSpec(dim=5), **extra)
    states = {}
    for batch in (0, 1024):
        store = CheckpointStore("sqlite://")
        out = replay_log(log, config, "m", store, ReplayOptions(quiet=True, learn_batch=batch))
        states[batch] = (store.latest("m").state, {k: v for k, v in out.items() if "second" not in k})
        store.close()
    assert_states_equal(states[1024][0], states[0][0], rtol=0, atol=0)
    assert states[1024][1] == states[0][1]


def test_choose_equals_the_generic_choose_ties_and_draws_included() -> None:
    rng = np.random.default_rng(7)
    fast, plain = LinUCB(dim=3, alpha=0.3, seed=11), LinUCB(dim=3, alpha=0.3, seed=11)
    arms = [f"a{i}" for i in range(6)]
    ties = 0
    for step in range(400):
        x = rng.normal(size=3)
        candidates = arms if step % 3 else arms[1:4]  # fresh arms tie until they are learned
        got, want = fast.choose(x, candidates), Learner.choose(plain, x, candidates)
        assert (got.arm, got.propensity) == (want.arm, want.propensity)
        np.testing.assert_array_equal(got.score_array, want.score_array)
        assert fast.rng.bit_generator.state == plain.rng.bit_generator.state
        ties += got.propensity < 1.0
        if step % 4 == 0:
            reward = float(rng.random() < 0.3)
            fast.learn_one(got.arm, x, reward)
            plain.learn_one(want.arm, x, reward)
    assert ties > 0
    fast.retire_arm("a2")
    assert fast.choose(rng.normal(size=3), arms).arm != "a2"


def test_still_ridge_regression() -> None:
    rng = np.random.default_rng(2)
    lin = LinUCB(dim=4, ridge=2.0, refresh_every=10_000)  # Sherman–Morrison all the way
    X = rng.normal(size=(300, 4))
    y = X @ np.array([0.5, -1.0, 0.25, 2.0]) + rng.normal(scale=0.1, size=300)
    kinds = np.tile(np.array([0, 1], np.int8), 300)
    values = np.stack([np.zeros(300), y], 1).ravel()  # impression, then its reward
    lin.learn_sequence(kinds, lin.rows_of(["a"] * 600), np.repeat(X, 2, axis=0), values)
    theta = np.linalg.solve(X.T @ X + 2.0 * np.eye(4), X.T @ y)
    np.testing.assert_allclose(lin.theta("a"), theta, rtol=1e-10, atol=1e-12)
    x = rng.normal(size=4)
    bonus = np.sqrt(x @ np.linalg.inv(X.T @ X + 2.0 * np.eye(4)) @ x)
    np.testing.assert_allclose(lin.score(x, ["a"]), [theta @ x + 0.2 * bonus], rtol=1e-10)
