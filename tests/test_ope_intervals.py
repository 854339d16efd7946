"""Empirical-likelihood intervals of the off-policy estimators: closed forms on tiny logs, a brute-force
check of the dual, the weight bound's effect, the estimators' interval options, a coverage smoke test
and the ``evaluate`` command's ``--interval`` / ``--weight-bound``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from banditloop.evaluation.estimators import DR, IPS, SNIPS, Z95, ClippedIPS, SwitchDR
from banditloop.evaluation.intervals import critical_value, el_interval

ROOT = Path(__file__).resolve().parents[1]

# seven impressions, weights around 1 (mean 1.24), clicks on four
W7 = np.array([0.5, 2.0, 0.5, 2.0, 0.5, 0.2, 3.0])
R7 = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0])


def test_all_weights_one_is_the_binomial_likelihood_interval():
    # 50 clicks in 100 on-policy impressions: the EL interval is the binomial likelihood-ratio one,
    # {p : −100 log(4 p (1 − p)) ≤ crit}, i.e. 0.5 ± sqrt(1/4 − exp(−crit/100) / 4)
    r = np.array([1.0, 0.0] * 50)
    half = math.sqrt(0.25 - math.exp(-critical_value(100) / 100) / 4)
    for bound in (None, 10.0, math.inf):  # the weight constraint holds already: the bound is moot
        low, high = el_interval(r, np.ones(100), delta_range=(0.0, 1.0), weight_bound=bound)
        assert (low, high) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-9)
    # and close to the normal interval of the mean
    se = r.std(ddof=1) / 10
    assert (low, high) == pytest.approx((0.5 - Z95 * se, 0.5 + Z95 * se), abs=2e-3)


def test_a_constant_reward_on_policy_is_known_exactly():
    low, high = el_interval(np.full(20, 0.3), np.ones(20))
    assert (low, high) == pytest.approx((0.3, 0.3), abs=1e-9)


def _brute_force(d: np.ndarray, w: np.ndarray, bound: float, sign: int) -> float:
    """The primal problem of the module docstring, solved by a generic constrained optimiser."""
    from scipy.optimize import minimize

    n = d.size
    crit = critical_value(n)

    def loglik(x: np.ndarray) -> float:
        return float(np.sum(np.log(n * x[:n])))

    cons = [{"type": "eq", "fun": lambda x: x[:n].sum() + x[n] - 1},
            {"type": "eq", "fun": lambda x: x[:n] @ w + x[n] * bound - 1}]
    bounds = [(1e-9, 1.0)] * n + [(0.0, 1.0)]
    x0 = np.r_[np.full(n, 0.9 / n), 0.01]
    opts = {"ftol": 1e-13, "maxiter": 1000}
    best = -minimize(lambda x: -loglik(x), x0, constraints=cons, bounds=bounds, method="SLSQP", options=opts).fun
    cons.append({"type": "ineq", "fun": lambda x: loglik(x) - (best - crit / 2)})
    rho = 0.0 if sign > 0 else 1.0  # the missing row's reward: 0 for the lower bound, 1 for the upper

    def objective(x: np.ndarray) -> float:
        return sign * float(x[:n] @ d + x[n] * bound * rho)

    return sign * minimize(objective, x0, constraints=cons, bounds=bounds, method="SLSQP", options=opts).fun


@pytest.mark.parametrize("bound", [3.0, 10.0])
def test_the_dual_solution_equals_the_primal_optimum(bound):
    low, high = el_interval(W7 * R7, W7, delta_range=(0.0, 1.0), weight_bound=bound)
    assert low == pytest.approx(_brute_force(W7 * R7, W7, bound, +1), abs=1e-6)
    assert high == pytest.approx(_brute_force(W7 * R7, W7, bound, -1), abs=1e-6)


def test_a_larger_weight_bound_gives_a_wider_interval():
    rng = np.random.default_rng(3)
    p = rng.choice([0.9, 0.01], size=3000, p=[0.99, 0.01])  # heavy weights: 1/p up to 100
    w = 1.0 / p * (rng.random(3000) < p)  # the target plays the logged arm with probability 1
    r = rng.binomial(1, 0.3, size=3000).astype(float)
    widths = []
    for bound in (None, 200.0, 1e4, math.inf):
        low, high = el_interval(w * r, w, delta_range=(0.0, 1.0), weight_bound=bound)
        assert low <= high
        widths.append(high - low)
    assert widths == sorted(widths) and widths[-1] > widths[0]


def test_bad_interval_arguments_are_refused():
    with pytest.raises(ValueError, match="interval must be one of"):
        IPS(interval="bootstrap")
    with pytest.raises(ValueError, match="weight_bound must be > 1"):
        SNIPS(weight_bound=0.5)
    with pytest.raises(ValueError, match="weight_bound must be"):
        DR(weight_bound="largest")
    with pytest.raises(ValueError, match="outside reward_range"):
        IPS(reward_range=(0.0, 0.5)).estimate(R7, np.full(7, 0.5), np.full(7, 0.5))
    with pytest.raises(ValueError, match="exceeds weight_bound"):
        el_interval(W7, W7, weight_bound=2.5)


def test_estimators_report_their_interval_and_ips_snips_share_the_el_one():
    p = 1.0 / (W7 + 1.0)
    t = W7 * p  # target probabilities giving the weights W7
    ips, snips = IPS().estimate(R7, p, t), SNIPS().estimate(R7, p, t)
    assert ips.interval == snips.interval == "el"
    assert (ips.ci_low, ips.ci_high) == (snips.ci_low, snips.ci_high)
    assert ips.to_dict()["interval"] == "el"
    normal = IPS(interval="normal").estimate(R7, p, t)
    assert normal.interval == "normal" and normal.value == ips.value
    assert (normal.ci_low, normal.ci_high) == pytest.approx((ips.value - Z95 * ips.std_error,
                                                             ips.value + Z95 * ips.std_error))
    # DR with a zero reward model is IPS, interval included (a missing row adds the reward alone)
    zeros = np.zeros(7)
    dr = DR().estimate(R7, p, t, zeros, zeros)
    assert (dr.value, dr.ci_low, dr.ci_high) == pytest.approx((ips.value, ips.ci_low, ips.ci_high))
    assert ClippedIPS().estimate(R7, p, t).interval == SwitchDR().estimate(R7, p, t, zeros, zeros).interval == "normal"
    assert ClippedIPS(interval="el").estimate(R7, p, t).interval == "el"


def test_coverage_smoke_under_heavy_weights():
    """A log whose target is known exactly (0.3): the logger plays the target's arm with probability
    0.9 on most contexts and 0.002 on 1% of them (weights up to 500). The default EL interval must
    cover in most of 40 logs and be finite; an interval that ignored the rare rows would not."""
    covered, finite = 0, 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        n = 4000
        rare = rng.random(n) < 0.01
        p_target = np.where(rare, 0.002, 0.9)
        logged_target = rng.random(n) < p_target
        p = np.where(logged_target, p_target, 1.0 - p_target)
        t = logged_target.astype(float)
        # reward of the target's arm: 0.3 on average (0.8 on the rare contexts, ~0.295 elsewhere)
        mu = np.where(rare, 0.8, (0.3 - 0.01 * 0.8) / 0.99)
        r = np.where(logged_target, rng.random(n) < mu, rng.random(n) < 0.1).astype(float)
        est = IPS().estimate(r, p, t)
        finite += math.isfinite(est.ci_low) and math.isfinite(est.ci_high)
        covered += est.covers(0.3)
    assert finite == 40
    assert covered >= 32, covered


def _evaluate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "banditloop.cli", "evaluate", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": ""})


def test_evaluate_reports_its_interval_and_refuses_a_bad_bound(tmp_path):
    from banditloop.simulators.config import WorldConfig
    from banditloop.simulators.logs import generate_log

    log = tmp_path / "sim.jsonl"
    generate_log(WorldConfig(seed=4, arms=3, dim=2), "random", 600, log)
    done = _evaluate(str(log), "--learner", "random", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert [out[k]["interval"] for k in ("ips", "snips", "dr", "clipped_ips", "logging")] == \
        ["el", "el", "el", "normal", "normal"]
    assert out["weight_bound"] == "logged"
    done = _evaluate(str(log), "--learner", "random", "--json", "--interval", "normal", "--weight-bound", "inf",
                     cwd=tmp_path)
    out = json.loads(done.stdout)
    assert out["ips"]["interval"] == "normal" and out["weight_bound"] == "inf"
    bad = _evaluate(str(log), "--learner", "random", "--weight-bound", "0.5", cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()] and "--weight-bound must be" in bad.stderr


def test_a_bound_equal_to_the_largest_weight_is_no_unseen_row():
    # the heaviest row is clicked: an unseen row of the same weight and reward is that row again
    w = np.array([0.5, 2.0, 0.5, 3.0, 0.5, 0.2, 0.3, 1.0])
    r = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    plain = el_interval(w * r, w, delta_range=(0.0, 1.0))
    assert el_interval(w * r, w, delta_range=(0.0, 1.0), weight_bound=3.0) == pytest.approx(plain, abs=1e-5)


def test_the_logged_bound_is_the_targets_largest_probability_over_the_loggers_smallest():
    """W = max(π) / min(μ): for a uniform target over K arms, K times below 1 / min(μ)."""
    rng = np.random.default_rng(3)
    k, n = 10, 400
    p = rng.uniform(0.01, 0.3, n)
    r = (rng.uniform(size=n) < 0.2).astype(float)
    uniform = np.full(n, 1.0 / k)
    logged = IPS().estimate(r, p, uniform)
    assert (logged.ci_low, logged.ci_high) == pytest.approx(
        (IPS(weight_bound=(1.0 / k) / p.min()).estimate(r, p, uniform).ci_low,
         IPS(weight_bound=(1.0 / k) / p.min()).estimate(r, p, uniform).ci_high))
    wider = IPS(weight_bound=1.0 / p.min()).estimate(r, p, uniform)
    assert wider.ci_high - wider.ci_low > logged.ci_high - logged.ci_low
    greedy = np.where(rng.uniform(size=n) < 0.3, 1.0, 0.0)  # a deterministic target: 1 / min(μ)
    assert IPS().estimate(r, p, greedy).ci_high == pytest.approx(
        IPS(weight_bound=1.0 / p.min()).estimate(r, p, greedy).ci_high)
