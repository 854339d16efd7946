"""The FTRL-Proximal CTR learner (``ctr-ftrl``): hand-computed FTRL steps and fake-negative weights,
calibration on small stationary streams with delayed clicks, restore mid-stream, approximate merge.
The contract shared with every learner is in ``tests/test_learners.py``. All randomness is seeded."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest

from banditloop.operators.ctr_ftrl import CTRFTRL, ftrl_step, ftrl_weights
from banditloop.operators.registry import learner_from_state, make_learner

ONE = np.array([1.0])


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def coords(model: CTRFTRL, arm: str = "a") -> list[tuple[float, float, float]]:
    """(z, n, w) of the bias, the shared and the arm coordinate of a one-slot model."""
    a, g, r = model._arrays, model._globals, model.arm_index[arm]
    return [(float(g["z_bias"][0]), float(g["n_bias"][0]), float(g["w_bias"][0])),
            (float(g["z_shared"][0]), float(g["n_shared"][0]), float(g["w_shared"][0])),
            (float(a["z"][r, 0]), float(a["n"][r, 0]), float(a["w"][r, 0]))]


# -- FTRL-Proximal, by hand --------------------------------------------------------------------------
def test_one_coordinate_steps_by_hand():
    z, n, w = np.zeros(1), np.zeros(1), np.zeros(1)
    ftrl_step(z, n, w, np.array([-0.5]), 0.1, 1.0, 0.0, 0.0)
    # sigma = (sqrt(0.25) - 0)/0.1 = 5, z = -0.5 - 5*0, n = 0.25, w = 0.5 / ((1 + 0.5)/0.1) = 1/30
    assert (z[0], n[0]) == (-0.5, 0.25)
    assert w[0] == pytest.approx(1 / 30, rel=1e-15)
    ftrl_step(z, n, w, np.array([0.3]), 0.1, 1.0, 0.0, 0.0)
    sigma = (math.sqrt(0.25 + 0.09) - 0.5) / 0.1
    z2, n2 = -0.5 + 0.3 - sigma / 30, 0.34
    assert z[0] == pytest.approx(z2, rel=1e-14) and n[0] == pytest.approx(n2, rel=1e-14)
    assert w[0] == pytest.approx(-z2 / ((1.0 + math.sqrt(n2)) / 0.1), rel=1e-14)


def test_l1_keeps_small_coordinates_at_zero_and_l2_shrinks():
    assert ftrl_weights(np.array([0.5, -0.5, 2.0, -2.0]), np.full(4, 0.25), 0.1, 1.0, 1.0, 0.0).tolist() == \
        [0.0, 0.0, pytest.approx(-1.0 / 15), pytest.approx(1.0 / 15)]
    assert ftrl_weights(np.array([-0.5]), np.array([0.25]), 0.1, 1.0, 0.0, 5.0)[0] == pytest.approx(0.5 / 20)


def test_wait_learns_each_impression_once_at_the_close_by_hand():
    model = CTRFTRL(dim=1, delay="wait", alpha=0.1, beta=1.0)
    assert model.learns_at_close
    model.learn_impression("a", ONE)
    model.learn_reward("a", ONE, 1.0)
    assert coords(model) == [(0.0, 0.0, 0.0)] * 3  # nothing learned before the window closes
    assert model.ctr("a", ONE) == 0.5
    model.learn_close("a", ONE, 1.0)
    # three coordinates (bias, shared, arm) see the same gradient p - y = -0.5
    for z, n, w in coords(model):
        assert (z, n) == (-0.5, 0.25) and w == pytest.approx(1 / 30, rel=1e-15)
    assert model.ctr("a", ONE) == pytest.approx(sigmoid(0.1), rel=1e-14)
    model.learn_one("a", ONE, 0.0)  # a negative: gradient p = sigmoid(0.1)
    g = sigmoid(0.1)
    sigma = (math.sqrt(0.25 + g * g) - 0.5) / 0.1
    for z, n, _w in coords(model):
        assert z == pytest.approx(-0.5 + g - sigma / 30, rel=1e-14) and n == pytest.approx(0.25 + g * g, rel=1e-14)
    assert model.counters == {"impressions": 2.0, "rewards": 1.0, "reward_sum": 1.0}


def test_fake_negative_weights_by_hand():
    """Ktena et al. 2019: negative at the impression with weight (1-p)(1+p), positive with weight 1+p."""
    model = CTRFTRL(dim=1, delay="fnw", alpha=0.1, beta=1.0)
    assert not model.learns_at_close
    model.learn_impression("a", ONE)
    g1 = 0.75 * 0.5  # p = 0.5: weight (1 - 0.5)(1 + 0.5), gradient weight * (p - 0)
    w1 = -g1 / ((1.0 + g1) / 0.1)
    for z, n, w in coords(model):
        assert (z, n) == (g1, g1 * g1) and w == pytest.approx(w1, rel=1e-14)
    p = sigmoid(3 * w1)
    model.learn_reward("a", ONE, 1.0)
    g2 = (1.0 + p) * (p - 1.0)
    sigma = (math.sqrt(g1 * g1 + g2 * g2) - g1) / 0.1
    z2, n2 = g1 + g2 - sigma * w1, g1 * g1 + g2 * g2
    for z, n, w in coords(model):
        assert z == pytest.approx(z2, rel=1e-13) and n == pytest.approx(n2, rel=1e-13)
        assert w == pytest.approx(-z2 / ((1.0 + math.sqrt(n2)) / 0.1), rel=1e-13)
    model.learn_close("a", ONE, 1.0)  # nothing more at the close
    assert coords(model)[0][0] == pytest.approx(z2, rel=1e-13)
    half = CTRFTRL(dim=1, delay="fnw", alpha=0.1, beta=1.0)
    half.learn_impression("a", ONE)
    half.learn_reward("a", ONE, 0.5)  # a partial reward: weight r (1 + p)
    assert coords(half)[0][1] == pytest.approx(g1 * g1 + (0.5 * g2) ** 2, rel=1e-13)


# -- calibration on tiny stationary streams ---------------------------------------------------------
def delayed_stream(model: CTRFTRL, n: int, delay: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feed ``n`` impressions (two arms, a numeric feature) whose clicks arrive ``delay`` impressions
    later and whose windows close then; returns the true probabilities, the model's predictions
    (after learning everything) and the arms."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    arms = rng.integers(2, size=n)
    p = 1.0 / (1.0 + np.exp(-(-2.0 + 0.6 * X[:, 1] + 0.8 * arms)))
    y = (rng.random(n) < p).astype(float)
    queue: deque[int] = deque()
    for i in range(n):
        model.learn_impression(f"a{arms[i]}", X[i])
        queue.append(i)
        while queue and (len(queue) > delay or i == n - 1):
            j = queue.popleft()
            if y[j]:
                model.learn_reward(f"a{arms[j]}", X[j], 1.0)
            model.learn_close(f"a{arms[j]}", X[j], float(y[j]))
    predicted = np.array([model.ctr(f"a{a}", x) for a, x in zip(arms, X, strict=True)])
    return p, predicted, arms


@pytest.mark.parametrize("delay", ["fnw", "wait"])
@pytest.mark.parametrize("lag", [0, 50])
def test_mean_prediction_matches_the_click_rate(delay, lag):
    model = CTRFTRL(dim=2, delay=delay)
    p, predicted, arms = delayed_stream(model, 6000, lag, seed=3)
    # the final iterate of a stochastic method is noisy: a few per cent (here 1.4-3.9 %) around the rate
    assert predicted.mean() / p.mean() == pytest.approx(1.0, abs=0.06)
    assert predicted[arms == 1].mean() > 1.5 * predicted[arms == 0].mean()  # the arms told apart
    assert np.corrcoef(predicted, p)[0, 1] > 0.95


def test_unweighted_fake_negatives_would_not_be_calibrated():
    """The weights matter: the same stream learned with unit weights predicts about p/(1+p)."""

    class Unweighted(CTRFTRL):
        def learn_impression(self, arm, x, shared=None):
            self._learn(self.add_arm(arm), np.asarray(x, dtype=float), 0.0, 1.0)

        def learn_reward(self, arm, x, reward, shared=None):
            self._learn(self.add_arm(arm), np.asarray(x, dtype=float), 1.0, float(reward))

    p, weighted, _ = delayed_stream(CTRFTRL(dim=2), 6000, 50, seed=3)
    _, unweighted, _ = delayed_stream(Unweighted(dim=2), 6000, 50, seed=3)
    assert weighted.mean() / p.mean() == pytest.approx(1.0, abs=0.06)
    assert unweighted.mean() / p.mean() < 0.9


# -- state and merge ------------------------------------------------------------------------------
@pytest.mark.parametrize("delay", ["fnw", "wait"])
def test_restored_mid_stream_continues_identically(delay):
    model = CTRFTRL(dim=2, delay=delay, l1=0.01, l2=0.1, seed=4)
    delayed_stream(model, 500, 20, seed=5)
    x = np.array([1.0, 0.3])
    for i in range(5):  # pending impressions: their clicks and closes arrive after the restore
        model.learn_impression(f"a{i % 2}", x)
    restored = learner_from_state(model.export_state())
    assert isinstance(restored, CTRFTRL) and restored.learns_at_close == (delay == "wait")
    for lrn in (model, restored):
        for i in range(5):
            lrn.learn_reward(f"a{i % 2}", x, 1.0)
            lrn.learn_close(f"a{i % 2}", x, 1.0)
    a, b = model.export_state(), restored.export_state()
    assert a.arrays.keys() == b.arrays.keys() and "w" not in a.arrays
    for name in a.arrays:
        np.testing.assert_array_equal(a.arrays[name], b.arrays[name], err_msg=name)
    for _ in range(20):
        d1, d2 = model.choose(x, ["a0", "a1"]), restored.choose(x, ["a0", "a1"])
        assert d1.arm == d2.arm and d1.propensity == d2.propensity


def test_merge_with_an_empty_shard_is_exact_and_halves_stay_calibrated():
    whole, first, second = CTRFTRL(dim=2, l1=0.001), CTRFTRL(dim=2, l1=0.001), CTRFTRL(dim=2, l1=0.001)
    delayed_stream(whole, 4000, 10, seed=6)
    merged = whole.merge(CTRFTRL(dim=2, l1=0.001))
    probes = [np.array([1.0, v]) for v in (-1.0, 0.0, 1.5)]
    for x in probes:
        np.testing.assert_allclose(merged.score(x, ["a0", "a1"]), whole.score(x, ["a0", "a1"]), rtol=1e-12)
    delayed_stream(first, 4000, 10, seed=7)
    delayed_stream(second, 4000, 10, seed=8)
    both = first.merge(second)
    assert isinstance(both, CTRFTRL)
    assert both._arrays["impressions"][:2].sum() == 8000
    summed = first._globals["n_bias"] + second._globals["n_bias"]
    np.testing.assert_allclose(both._globals["n_bias"], summed, rtol=1e-12)
    for x in probes:  # the n-weighted mean of two calibrated models, not their weights times sqrt(2)
        for arm in ("a0", "a1"):
            lo, hi = sorted((first.ctr(arm, x), second.ctr(arm, x)))
            assert lo - 1e-12 <= both.ctr(arm, x) <= hi + 1e-12
            assert both.ctr(arm, x) == pytest.approx(whole.ctr(arm, x), rel=0.15)


def test_prior_is_the_prediction_before_any_data_and_an_offset_after():
    model = CTRFTRL(dim=1, delay="wait", alpha=0.1, beta=1.0, prior=0.2)
    assert model.ctr("a", ONE) == pytest.approx(0.2, rel=1e-14)
    model.learn_one("a", ONE, 1.0)  # gradient p - y = 0.2 - 1 on the three coordinates
    g = -0.8
    w = -g / ((1.0 + 0.8) / 0.1)
    for z, n, w_i in coords(model):
        assert (z, n) == (pytest.approx(g), pytest.approx(0.64)) and w_i == pytest.approx(w, rel=1e-14)
    assert model.ctr("a", ONE) == pytest.approx(sigmoid(math.log(0.25) + 3 * w), rel=1e-14)


def test_bad_hyper_parameters_are_refused():
    for bad in ({"delay": "later"}, {"prior": 0.0}, {"prior": 1.0},
                {"exploration": "ucb"}, {"alpha": 0.0}, {"l1": -1.0}, {"epsilon": 1.5},
                {"temperature": 0.0}):
        with pytest.raises(ValueError):
            make_learner("ctr-ftrl", 2, **bad)


# -- simulate --json: calibration on the served impressions ------------------------------------------
def test_simulate_reports_the_calibration_of_probability_models():
    from banditloop.core.features import FeatureSpec, dense_names
    from banditloop.core.reward import RewardSpec
    from banditloop.pipeline.model import ModelConfig
    from banditloop.pipeline.simulate import SimulationOptions, simulate
    from banditloop.simulators.config import WorldConfig

    world = WorldConfig(arms=4, dim=3, seed=2, base_ctr=0.1, click_delay_mean=5.0)
    features = FeatureSpec(dim=4, numeric=dense_names("x", 3))
    opts = SimulationOptions(steps=6000, checkpoint_interval=None, quiet=True)

    def calibration(learner: str, **params) -> float | None:
        return simulate(world, ModelConfig(learner, params, features=features), "m", None, opts)["calibration"]

    ftrl = calibration("ctr-ftrl")
    assert ftrl is not None and 0.9 < ftrl < 1.15
    raw = calibration("ctr-ftrl", alpha=5.0)  # a far too large step: over-confident, miscalibrated
    assert raw is not None and abs(raw - 1.0) > abs(ftrl - 1.0)
    assert calibration("linucb") is None  # predicts no probability
    value = WorldConfig(arms=4, dim=3, seed=2, reward=RewardSpec("click+value", weight=0.1))
    config = ModelConfig("ctr-ftrl", features=features, reward=RewardSpec("click+value", weight=0.1))
    assert simulate(value, config, "m", None, opts)["calibration"] is None  # not a probability
