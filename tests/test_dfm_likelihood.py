"""``dfm`` against Chapelle 2014's likelihood by brute force, and its ``delay_features`` option.

The factor gradients (``elapsed_factor_grad``, ``conversion_factor_grad``) equal the central differences
of the log of the factors; the factors of one click telescope to Chapelle's term of that click; the first
FTRL step of the model moves every coordinate by the numerical gradient of the log-likelihood in the
weights (chain rule through ``[1, x, x]``). ``delay_features="bias"`` learns one delay rate for every arm
and context; states written before the option load with every coordinate learning, as before.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from banditloop.operators.dfm import DelayedFeedbackModel, conversion_factor_grad, elapsed_factor_grad
from banditloop.operators.registry import learner_from_state

HOUR = 3600.0


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def log_s(a: float, lr: float, e: float) -> float:
    """log S(e) = log(1 − p + p e^{−λe})."""
    p = sigmoid(a)
    return math.log(1.0 - p + p * math.exp(-math.exp(lr) * e))


def log_conv(a: float, lr: float, d: float) -> float:
    """log p λ e^{−λd}: converted ``d`` seconds after the click."""
    return math.log(sigmoid(a)) + lr - math.exp(lr) * d


def num_grad(f, a: float, lr: float, h: float = 1e-6) -> tuple[float, float]:
    return (f(a + h, lr) - f(a - h, lr)) / (2 * h), (f(a, lr + h) - f(a, lr - h)) / (2 * h)


POINTS = [(-3.2, -math.log(2 * HOUR), 0.1 * HOUR, 0.7 * HOUR, 1.3 * HOUR),
          (0.0, -math.log(HOUR), 0.0, 2 * HOUR, 5 * HOUR),
          (1.5, -math.log(7200.0), 3 * HOUR, 9 * HOUR, 10 * HOUR)]


@pytest.mark.parametrize(("a", "lr", "e0", "e1", "d"), POINTS)
def test_factor_gradients_are_the_numerical_gradients_of_the_log_factors(a, lr, e0, e1, d):
    p = sigmoid(a)
    # still unconverted from e0 to e1: the factor S(e1)/S(e0), loss its −log
    want = num_grad(lambda u, v: -(log_s(u, v, e1) - log_s(u, v, e0)), a, lr)
    assert elapsed_factor_grad(p, lr, e0, e1) == pytest.approx(want, rel=1e-6, abs=1e-10)
    # converted d after the click, last seen unconverted at e0 <= d: p λ e^{−λd} / S(e0)
    want = num_grad(lambda u, v: -(log_conv(u, v, d) - log_s(u, v, e0)), a, lr)
    assert conversion_factor_grad(p, lr, d, e0) == pytest.approx(want, rel=1e-6, abs=1e-10)


@pytest.mark.parametrize(("a", "lr", "e0", "e1", "d"), POINTS)
def test_factors_of_one_click_sum_to_chapelles_gradient(a, lr, e0, e1, d):
    """At fixed weights the factors' gradients add up to the gradient of the click's whole term."""
    p = sigmoid(a)
    grid = [0.0, e0, e1]
    steps = [elapsed_factor_grad(p, lr, x, y) for x, y in zip(grid, grid[1:], strict=False)]
    unconverted = np.sum(steps, axis=0)  # seen unconverted at e1: log S(e1)
    assert tuple(unconverted) == pytest.approx(num_grad(lambda u, v: -log_s(u, v, e1), a, lr), rel=1e-6, abs=1e-10)
    later = max(d, e1)  # then converted at `later`: log p λ e^{−λd}
    converted = unconverted + np.array(conversion_factor_grad(p, lr, later, e1))
    assert tuple(converted) == pytest.approx(num_grad(lambda u, v: -log_conv(u, v, later), a, lr),
                                             rel=1e-6, abs=1e-10)


def test_first_step_follows_the_numerical_gradient_in_the_weights():
    """One step from zero weights: FTRL sets z = g on each coordinate, g the gradient of the loss in that
    weight; check it against central differences of the log-likelihood in the weights themselves."""
    x = np.array([0.7, -1.3])
    model = DelayedFeedbackModel(dim=2, prior=0.1, delay_prior=HOUR)
    a0, lr0 = math.log(0.1 / 0.9), -math.log(HOUR)
    e0, d = 600.0, 2400.0

    def loss(w: np.ndarray) -> float:  # w: (heads, 1 + 2 dim) on [1, x, x]
        xv = np.concatenate(([1.0], x, x))
        a, lr = a0 + w[0] @ xv, lr0 + w[1] @ xv
        return -(log_conv(a, lr, d) - log_s(a, lr, e0))

    want = np.zeros((2, 5))
    for i in range(2):
        for j in range(5):
            h = np.zeros((2, 5))
            h[i, j] = 1e-6
            want[i, j] = (loss(h) - loss(-h)) / 2e-6
    model.learn_conversion("a", x, delay=d, elapsed_from=e0)
    g, arr, r = model._globals, model._arrays, model.arm_index["a"]
    got = np.concatenate([g["z_bias"][:, None], g["z_shared"], arr["z"][r]], axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-10)


def test_delay_features_bias_learns_one_rate():
    x = np.array([0.5, 2.0])
    model = DelayedFeedbackModel(dim=2, delay_features="bias", delay_prior=HOUR)
    full = DelayedFeedbackModel(dim=2, delay_prior=HOUR)
    for m in (model, full):
        m.learn_conversion("a", x, delay=1800.0)
        m.learn_elapsed("b", x, 0.0, 900.0)
        m.learn_elapsed_batch(["a", "b"], np.stack([x, -x]), np.array([0.0, 900.0]), np.array([600.0, 1500.0]))
    g, a = model._globals, model._arrays
    assert np.all(g["w_shared"][1] == 0.0) and np.all(a["w"][:, 1] == 0.0) and np.all(a["n"][:, 1] == 0.0)
    assert g["w_bias"][1] != 0.0
    assert model.mean_delay("a", x) == model.mean_delay("b", -x)  # the same rate everywhere
    assert full.mean_delay("a", x) != full.mean_delay("b", -x)
    # the conversion head learns exactly as without the option (same gradients at the same logits)
    fresh = [DelayedFeedbackModel(dim=2, delay_features=f) for f in ("all", "bias")]
    for m in fresh:
        m.learn_conversion("a", x, delay=1800.0)
    assert fresh[0]._globals["z_shared"][0].tolist() == fresh[1]._globals["z_shared"][0].tolist()
    # restored, it continues identically
    restored = learner_from_state(model.export_state())
    assert restored.delay_features == "bias"
    for m in (model, restored):
        m.learn_elapsed("a", x, 600.0, 2000.0)
    assert restored.export_state().arrays.keys() == model.export_state().arrays.keys()
    for k, v in model.export_state().arrays.items():
        np.testing.assert_array_equal(restored.export_state().arrays[k], v)
    with pytest.raises(ValueError, match="delay_features"):
        DelayedFeedbackModel(dim=2, delay_features="arm")


def test_state_without_delay_features_loads_as_before():
    x = np.array([0.5, 2.0])
    model = DelayedFeedbackModel(dim=2)
    model.learn_conversion("a", x, delay=1800.0)
    state = model.export_state()
    old = dataclasses.replace(state, params={k: v for k, v in state.params.items() if k != "delay_features"})
    restored = learner_from_state(old)
    assert restored.delay_features == "all" and restored._grad_mask is None
    assert restored.cvr("a", x) == model.cvr("a", x) and restored.mean_delay("a", x) == model.mean_delay("a", x)


def test_delay_alpha_slows_the_delay_head_only():
    x = np.array([0.5, 2.0])
    models = {rate: DelayedFeedbackModel(dim=2, delay_features="bias", delay_prior=HOUR, delay_alpha=rate)
              for rate in (None, 0.05, 0.01)}
    for m in models.values():
        m.learn_conversion("a", x, delay=600.0)
        m.learn_elapsed_batch(["a", "b"], np.stack([x, -x]), np.array([0.0, 0.0]), np.array([900.0, 1800.0]))
    same, slow = models[0.05], models[0.01]
    # delay_alpha = alpha is the model without the option, bit for bit
    for k, v in models[None].export_state().arrays.items():
        np.testing.assert_array_equal(same.export_state().arrays[k], v)
    # the first step of each head moves it by its own rate: the conversion head's by alpha, the delay
    # head's by delay_alpha (FTRL's first weight is −alpha·g/(beta+|g|), linear in alpha)
    fresh = [DelayedFeedbackModel(dim=2, delay_features="bias", delay_prior=HOUR, delay_alpha=r) for r in (0.05, 0.01)]
    for m in fresh:
        m.learn_conversion("a", x, delay=600.0)
    assert fresh[0]._globals["w_bias"][0] == fresh[1]._globals["w_bias"][0] != 0.0
    assert fresh[1]._globals["w_bias"][1] == pytest.approx(fresh[0]._globals["w_bias"][1] / 5.0, rel=1e-12)
    # over the stream the slow head stays nearer its prior
    prior_log_rate = -math.log(HOUR)
    moved = {r: abs(math.log(1.0 / models[r].mean_delay("a", x)) - prior_log_rate) for r in (0.05, 0.01)}
    assert 0.0 < moved[0.01] < moved[0.05]
    # restored, it continues identically; a state written before the option loads with alpha for both heads
    restored = learner_from_state(slow.export_state())
    assert restored.delay_alpha == 0.01
    for m in (slow, restored):
        m.learn_elapsed("a", x, 900.0, 2000.0)
    for k, v in slow.export_state().arrays.items():
        np.testing.assert_array_equal(restored.export_state().arrays[k], v)
    state = models[None].export_state()
    old = dataclasses.replace(state, params={k: v for k, v in state.params.items() if k != "delay_alpha"})
    assert learner_from_state(old).delay_alpha is None and learner_from_state(old)._head_alpha is None
    for bad in (0.0, -0.1, math.nan, math.inf, True, "0.1"):
        with pytest.raises(ValueError, match="delay_alpha"):
            DelayedFeedbackModel(dim=2, delay_alpha=bad)
