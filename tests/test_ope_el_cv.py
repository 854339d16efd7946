"""The EL interval with the reward model as a control variate (DR and ``dr_cv``): the dual against a
brute-force primal on a tiny log, the reduction to IPS's EL without a model, nesting in the unseen row's
weight, independence of β, the reward model narrowing it, and a coverage smoke test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from banditloop.evaluation.control_variate import DRCV
from banditloop.evaluation.el_moments import el_cv_interval
from banditloop.evaluation.estimators import DR, IPS
from banditloop.evaluation.intervals import critical_value, el_interval

# eight impressions: weights with mean 1.0625, a reward model, the control w q̂(a) − q̂_π
W8 = np.array([0.0, 2.0, 0.5, 0.0, 3.0, 1.5, 0.0, 1.5])
R8 = np.array([0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
QL8 = np.array([0.2, 0.6, 0.5, 0.1, 0.3, 0.7, 0.4, 0.2])
QT8 = np.array([0.3, 0.5, 0.4, 0.2, 0.5, 0.6, 0.3, 0.3])
C8 = W8 * QL8 - QT8


def _primal(bound: float | None, sign: int, q_range: tuple[float, float]) -> float:
    """The primal of :mod:`banditloop.evaluation.el_moments` by a generic optimiser: the rows' ``q`` and the
    weight masses ``y`` of two unseen rows at the corners of the model's range (reward 1 for the upper
    bound, 0 for the lower)."""
    from scipy.optimize import minimize

    n = W8.size
    crit = critical_value(n)
    k = 0 if bound is None else 2
    inv = 0.0 if bound is None else 1.0 / bound
    corners = np.array([q_range[0] - q_range[1] * inv, q_range[1] - q_range[0] * inv])[:k]

    def loglik(x: np.ndarray) -> float:
        return float(np.sum(np.log(n * x[:n])))

    cons = [{"type": "eq", "fun": lambda x: x[:n].sum() + x[n:].sum() * inv - 1},
            {"type": "eq", "fun": lambda x: x[:n] @ W8 + x[n:].sum() - 1},
            {"type": "eq", "fun": lambda x: x[:n] @ C8 + x[n:] @ corners}]
    bounds = [(1e-9, 1.0)] * n + [(0.0, 1.0)] * k
    x0 = np.r_[np.full(n, 1.0 / n), np.full(k, 0.01)]
    opts = {"ftol": 1e-14, "maxiter": 2000}
    best = -minimize(lambda x: -loglik(x), x0, constraints=cons, bounds=bounds, method="SLSQP", options=opts).fun
    cons.append({"type": "ineq", "fun": lambda x: loglik(x) - (best - crit / 2)})
    rho = 1.0 if sign < 0 else 0.0

    def objective(x: np.ndarray) -> float:
        return sign * float(x[:n] @ (W8 * R8) + x[n:].sum() * rho)

    return sign * minimize(objective, x0, constraints=cons, bounds=bounds, method="SLSQP", options=opts).fun


@pytest.mark.parametrize("bound", [None, 4.0, 20.0])
def test_the_dual_solution_equals_the_primal_optimum(bound):
    q_range = (0.1, 0.7)
    low, high = el_cv_interval(W8 * R8, W8, C8, reward_range=(0.0, 1.0), model_range=q_range,
                               weight_bound=bound)
    assert low == pytest.approx(_primal(bound, +1, q_range), abs=2e-5)
    assert high == pytest.approx(_primal(bound, -1, q_range), abs=2e-5)


def test_without_a_model_it_is_the_ips_el_interval():
    rng = np.random.default_rng(5)
    w = rng.choice([0.0, 1.0, 4.0], size=400, p=[0.5, 0.3, 0.2]) * (1.0 / 1.1)
    r = rng.binomial(1, 0.3, size=400).astype(float)
    for bound in (None, 10.0, math.inf):
        expected = el_interval(w * r, w, delta_range=(0.0, 1.0), weight_bound=bound)
        got = el_cv_interval(w * r, w, np.zeros(400), reward_range=(0.0, 1.0), model_range=(0.0, 0.0),
                             weight_bound=bound)
        assert got == pytest.approx(expected, abs=1e-7)


def _bandit_log(seed: int, n: int, model_noise: float = 0.0):
    """A three-arm log: logger (0.6, 0.3, 0.1), target always arm 2 (weight 10), click rates per context
    (0–0.9 on arm 2, mean 0.3); ``q̂`` the true rates plus noise. Returns r, p, t, q̂(a), q̂_π and the true value."""
    rng = np.random.default_rng(seed)
    x = rng.random(n)
    mu = np.stack([0.2 + 0.0 * x, 0.3 * x, 0.9 * x * x], axis=1)  # arm 2: 0..0.9, mean 0.3
    probs = np.array([0.6, 0.3, 0.1])
    a = rng.choice(3, size=n, p=probs)
    r = (rng.random(n) < mu[np.arange(n), a]).astype(float)
    q = np.clip(mu + model_noise * rng.standard_normal(mu.shape), 0.0, 1.0)
    t = (a == 2).astype(float)
    return r, probs[a], t, q[np.arange(n), a], q[:, 2], 0.3


def test_a_larger_unseen_row_widens_and_a_good_model_narrows():
    r, p, t, ql, qt, _ = _bandit_log(0, 2000)
    w = t / p
    widths = []
    for bound in (None, 12.0, 100.0, math.inf):
        low, high = el_cv_interval(w * r, w, w * ql - qt, reward_range=(0.0, 1.0), model_range=(0.0, 1.0),
                                   weight_bound=bound)
        widths.append(high - low)
    assert all(b >= a - 1e-9 for a, b in zip(widths, widths[1:], strict=False)) and widths[-1] > 1.5 * widths[0]
    # the true model as the control variate: narrower than IPS's EL interval on the same rows
    ips = el_interval(w * r, w, delta_range=(0.0, 1.0))
    cv = el_cv_interval(w * r, w, w * ql - qt, reward_range=(0.0, 1.0), model_range=(0.0, 1.0))
    assert cv[1] - cv[0] < 0.9 * (ips[1] - ips[0])


def test_dr_and_dr_cv_share_the_interval_and_keep_their_point_estimates():
    r, p, t, ql, qt, _ = _bandit_log(1, 1500, model_noise=0.1)
    dr = DR().estimate(r, p, t, ql, qt)
    w = t / p
    assert dr.value == pytest.approx(float(np.mean(qt + w * (r - ql))), abs=1e-15)
    for beta in (None, 0.0, 0.5, 2.0):
        cv = DRCV(beta=beta).estimate(r, p, t, ql, qt)
        assert (cv.ci_low, cv.ci_high) == pytest.approx((dr.ci_low, dr.ci_high), abs=1e-12)
    assert DRCV(beta=0.0).estimate(r, p, t, ql, qt).value == IPS().estimate(r, p, t).value
    assert dr.interval == "el" and dr.ci_low < dr.value < dr.ci_high


def test_infeasible_constraints_give_nan():
    # every weight above 1 and no unseen row: no reweighting has E[w] = 1
    w = np.array([2.0, 3.0, 4.0])
    low, high = el_cv_interval(w * 0.5, w, w * 0.1 - 0.1, reward_range=(0.0, 1.0), model_range=(0.0, 1.0))
    assert math.isnan(low) and math.isnan(high)


def test_coverage_smoke():
    """40 logs of a world with known value 0.3 (weights 10, a noisy model): the interval covers in most
    and is no wider than IPS's EL interval with the same unseen row on average."""
    covered, ratio = 0, []
    for seed in range(40):
        r, p, t, ql, qt, truth = _bandit_log(100 + seed, 1000, model_noise=0.05)
        dr, ips = DR().estimate(r, p, t, ql, qt), IPS().estimate(r, p, t)
        covered += dr.covers(truth)
        ratio.append((dr.ci_high - dr.ci_low) / (ips.ci_high - ips.ci_low))
    assert covered >= 34, covered
    assert float(np.mean(ratio)) < 1.0
