"""``dfm``'s ``steps="fisher"``: online Newton steps with the outcome-independent information as curvature.

The information of a factor is checked against numerical integrals of its definition (the predictable
variation of the conversion hazard's score) and, for a click's label at its window's close, against the
Fisher information of a Bernoulli variable; the steps against a hand computation; the curvature a factor
adds does not depend on its outcome (a conversion adds what a "not yet" over the same interval adds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad

from banditloop.operators.dfm import DelayedFeedbackModel, conversion_factor_grad, elapsed_factor_grad, window_grad
from banditloop.operators.dfm_curvature import interval_information, window_information
from banditloop.operators.registry import learner_from_state


def _hazard_information(p: float, log_rate: float, e0: float, e1: float) -> tuple[float, float]:
    """``∫ (∂ log h/∂θ)² h dt`` over ``(e0, e1]`` by quadrature, ``h`` the conversion hazard."""
    lam = math.exp(log_rate)

    def surv(t: float) -> float:
        return 1 - p + p * math.exp(-lam * t)

    def hazard(t: float) -> float:
        return p * lam * math.exp(-lam * t) / surv(t)

    info_a = quad(lambda t: ((1 - p) / surv(t)) ** 2 * hazard(t), e0, e1, limit=200)[0]
    info_l = quad(lambda t: (1 - lam * t * (1 - p) / surv(t)) ** 2 * hazard(t), e0, e1, limit=200)[0]
    return info_a, info_l


@pytest.mark.parametrize(("p", "mean", "e0", "e1"), [(0.05, 7200.0, 0.0, 600.0), (0.05, 7200.0, 600.0, 1200.0),
                                                     (0.15, 7200.0, 0.0, 57600.0), (0.5, 1.0, 0.0, 3.0),
                                                     (0.9, 1.0, 1.0, 2.0), (0.9, 1.0, 0.0, 20.0)])
def test_interval_information_is_the_integral_of_its_definition(p, mean, e0, e1):
    got = interval_information(p, -math.log(mean), e0, e1)
    want = _hazard_information(p, -math.log(mean), e0, e1)
    assert got[0] == pytest.approx(want[0], rel=1e-9)  # closed form
    assert got[1] == pytest.approx(want[1], rel=5e-3)  # S held per quarter of a mean delay


def test_interval_information_adds_up_and_has_the_expected_fisher_information():
    p, lr = 0.2, -math.log(100.0)
    cuts = np.linspace(0.0, 400.0, 41)
    parts = np.array([interval_information(p, lr, a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True)])
    whole = interval_information(p, lr, 0.0, 400.0)
    assert parts[:, 0].sum() == pytest.approx(whole[0], rel=1e-12)
    assert parts[:, 1].sum() == pytest.approx(whole[1], rel=2e-3)
    # expected over the conversion time (at risk until it): the Fisher information of (converted?, delay),
    # p(1 − p) in the logit of p and p in log λ (the delay of a conversion is exponential)
    rng = np.random.default_rng(0)
    n = 20_000
    delays = np.where(rng.random(n) < p, rng.exponential(100.0, n), np.inf)
    ends = np.minimum(delays, 1e6)
    draws = np.array([interval_information(p, lr, 0.0, e) for e in ends])
    assert draws[:, 0].mean() == pytest.approx(p * (1 - p), rel=0.03)
    assert draws[:, 1].mean() == pytest.approx(p, rel=0.05)
    assert interval_information(p, lr, 5.0, 5.0) == (0.0, 0.0)


def test_window_information_is_the_bernoulli_fisher_information_of_the_label():
    p, lr, window = 0.3, -math.log(3600.0), 7200.0

    def converted(a: float, log_rate: float) -> float:
        q = 1 / (1 + math.exp(-a))
        return q * -math.expm1(-math.exp(log_rate) * window)

    a, h = math.log(p / (1 - p)), 1e-6
    c = converted(a, lr)
    da = (converted(a + h, lr) - converted(a - h, lr)) / (2 * h)
    dl = (converted(a, lr + h) - converted(a, lr - h)) / (2 * h)
    got = window_information(p, lr, window)
    assert got == pytest.approx((da * da / (c * (1 - c)), dl * dl / (c * (1 - c))), rel=1e-6)


def _fisher(z: float, n: float, w: float, g: float, info: float, alpha: float, beta: float
            ) -> tuple[float, float, float]:
    """One ``steps="fisher"`` step of one coordinate: the Newton step with ``info`` in place of ``g²``."""
    sigma = info / alpha
    z, n = z + g - sigma * w, n + info
    return z, n, -z / ((beta + n) / alpha)


def test_fisher_steps_equal_a_hand_computation():
    alpha, beta, x, day, window = 0.9, 4.0, 0.6, 86400.0, 3 * 86400.0
    model = DelayedFeedbackModel(dim=1, prior=0.3, delay_prior=day, alpha=alpha, beta=beta, window=window,
                                 steps="fisher")
    offsets = (math.log(0.3 / 0.7), -math.log(day))
    raw = {(h, c): (0.0, 0.0, 0.0) for h in range(2) for c in ("bias", "shared", "arm")}
    for kind, t0, t1 in (("elapsed", 0.0, 0.5 * day), ("conversion", 0.5 * day, 0.8 * day),
                         ("elapsed", 0.0, 2.0 * day), ("close", 0.0, 0.0), ("elapsed", 2.0 * day, 3.0 * day)):
        a, lr = (offsets[h] + raw[h, "bias"][2] + (raw[h, "shared"][2] + raw[h, "arm"][2]) * x for h in range(2))
        p = 1 / (1 + math.exp(-a))
        if kind == "elapsed":
            model.learn_elapsed("ad", np.array([x]), t0, t1)
            grads, info = elapsed_factor_grad(p, lr, t0, t1), interval_information(p, lr, t0, t1)
        elif kind == "conversion":
            model.learn_conversion("ad", np.array([x]), delay=t1, elapsed_from=t0)
            grads, info = conversion_factor_grad(p, lr, t1, t0), interval_information(p, lr, t0, t1)
        else:
            model.learn_close("ad", np.array([x]), 1.0)
            grads, info = window_grad(p, lr, window, 1.0), window_information(p, lr, window)
        for h, c in raw:
            xc = 1.0 if c == "bias" else x
            raw[h, c] = _fisher(*raw[h, c], grads[h] * xc, info[h] * xc * xc, alpha, beta)
    a, lr = (offsets[h] + raw[h, "bias"][2] + (raw[h, "shared"][2] + raw[h, "arm"][2]) * x for h in range(2))
    assert model.cvr("ad", np.array([x])) == pytest.approx(1 / (1 + math.exp(-a)), rel=1e-12)
    assert model.mean_delay("ad", np.array([x])) == pytest.approx(math.exp(-lr), rel=1e-12)
    assert model._arrays["n"][0, :, 0].tolist() == pytest.approx([raw[0, "arm"][1], raw[1, "arm"][1]], rel=1e-12)
    restored = learner_from_state(model.export_state())  # weights rebuilt from (z, n) as the Newton step's
    assert restored.cvr("ad", np.array([x])) == model.cvr("ad", np.array([x]))


@pytest.mark.parametrize("delay_features", ["all", "bias"])
def test_the_curvature_a_factor_adds_does_not_depend_on_its_outcome(delay_features):
    rng = np.random.default_rng(3)
    models = [DelayedFeedbackModel(dim=2, prior=0.1, delay_prior=3600.0, alpha=1.0, beta=20.0, steps="fisher",
                                   delay_features=delay_features) for _ in range(2)]
    for _ in range(30):  # the same history for both
        x, e = rng.normal(size=2), float(rng.exponential(3600.0))
        for m in models:
            m.learn_elapsed("a", x, 0.0, e)
    converted, survived = models
    x = np.array([0.4, -1.2])
    converted.learn_conversion("a", x, delay=5000.0, elapsed_from=1200.0)
    survived.learn_elapsed("a", x, 1200.0, 5000.0)
    assert np.array_equal(converted._packed()[1], survived._packed()[1])  # n: the same curvature
    assert not np.array_equal(converted._packed()[0], survived._packed()[0])  # z: different gradients
    # g² would not be: the conversion's squared gradient is far larger than the "not yet"'s
    newton = [DelayedFeedbackModel(dim=2, prior=0.1, delay_prior=3600.0, steps="newton") for _ in range(2)]
    newton[0].learn_conversion("a", x, delay=5000.0, elapsed_from=1200.0)
    newton[1].learn_elapsed("a", x, 1200.0, 5000.0)
    assert newton[0]._globals["n_bias"][0] > 10 * newton[1]._globals["n_bias"][0]
