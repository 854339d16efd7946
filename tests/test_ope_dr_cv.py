"""DR with the variance-optimal control-variate coefficient (``dr_cv``) and the logistic reward model:
closed forms on tiny hand-computed logs, the ends of the family (β = 0 is IPS, β = 1 is DR), and the
``evaluate`` wiring."""

from __future__ import annotations

import math

import numpy as np
import pytest

from banditloop.cli import main
from banditloop.evaluation.control_variate import DRCV, optimal_beta
from banditloop.evaluation.estimators import DR, IPS
from banditloop.evaluation.policy import TargetPolicy
from banditloop.evaluation.reward_model import cross_fit, fit_logistic
from banditloop.evaluation.run import EvaluationOptions, evaluate_log
from banditloop.pipeline.model import ModelConfig

# the four impressions of tests/test_ope_estimators.py
R = np.array([1.0, 0.0, 1.0, 0.0])
P = np.array([0.5, 0.8, 0.2, 0.5])
T = np.array([1.0, 0.5, 0.4, 0.0])
QL = np.array([0.5, 0.1, 0.6, 0.2])
QT = np.array([0.4, 0.3, 0.5, 0.1])


@pytest.mark.parametrize("interval", ["normal", "el"])
def test_beta_zero_is_ips_and_beta_one_is_dr(interval):
    ips = IPS(interval=interval).estimate(R, P, T)
    zero = DRCV(beta=0.0, interval=interval).estimate(R, P, T, QL, QT)
    assert (zero.value, zero.std_error) == (ips.value, ips.std_error)
    dr = DR(interval=interval).estimate(R, P, T, QL, QT)
    one = DRCV(beta=1.0, interval=interval).estimate(R, P, T, QL, QT)
    assert one.value == pytest.approx(dr.value, abs=1e-15) == 0.759375  # (1.4 + 0.2375 + 1.3 + 0.1) / 4
    assert one.std_error == pytest.approx(dr.std_error, abs=1e-15)
    assert (one.ci_low, one.ci_high) == pytest.approx((dr.ci_low, dr.ci_high), abs=1e-9)


def test_fitted_beta_by_hand():
    # w = [2, 0.625, 2, 0]; w r = [2, 0, 2, 0] (mean 1); c = w q̂(a) − q̂_π = [0.6, −0.2375, 0.7, −0.1]
    # (mean 0.240625); Σ (w r − 1)(c − c̄) = 1.6375, Σ (c − c̄)² = 0.68480469
    beta = 1.6375 / 0.6848046875
    assert DRCV().coefficient(R, P, T, QL, QT) == pytest.approx(beta, rel=1e-12)
    assert optimal_beta(np.array([2.0, 0, 2, 0]), np.array([0.6, -0.2375, 0.7, -0.1])) == pytest.approx(beta)
    est = DRCV(interval="normal").estimate(R, P, T, QL, QT)
    assert est.value == pytest.approx(1.0 - beta * 0.240625, rel=1e-12)
    assert DRCV(beta=0.5).coefficient(R, P, T, QL, QT) == 0.5


def test_fitted_beta_has_the_smallest_sample_variance_and_a_constant_control_is_ignored():
    rng = np.random.default_rng(5)
    n = 5000
    p = rng.uniform(0.05, 1.0, n)
    t = rng.uniform(0.0, 1.0, n)
    q = rng.uniform(0.0, 0.3, n)
    r = rng.binomial(1, q).astype(float)
    qt = rng.uniform(0.0, 0.3, n)
    cv = DRCV(interval="normal").estimate(r, p, t, q, qt)
    for beta in (0.0, 0.5, 1.0, 1.5):
        assert cv.std_error <= DRCV(beta=beta, interval="normal").estimate(r, p, t, q, qt).std_error
    # q̂ = 0: the control is 0, nothing to fit: IPS
    zeros = np.zeros(n)
    assert DRCV().coefficient(r, p, t, zeros, zeros) == 0.0
    assert DRCV(interval="normal").estimate(r, p, t, zeros, zeros).value == IPS().estimate(r, p, t).value


def test_invalid_beta_is_refused():
    with pytest.raises(ValueError, match="beta"):
        DRCV(beta=math.nan)
    with pytest.raises(ValueError, match="interval"):
        DRCV(interval="t")


def test_logistic_model_of_a_constant_is_the_click_rate():
    # one constant feature: the (almost unpenalised) logistic fit is the arm's click rate
    X = np.ones((8, 1))
    arms = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    y = np.array([1.0, 0, 0, 0, 1, 1, 1, 0])
    theta = fit_logistic(X, arms, y, 2, ridge=1e-9)
    assert 1 / (1 + np.exp(-theta[:, 0])) == pytest.approx([0.25, 0.75], abs=1e-8)


def test_logistic_model_recovers_a_logistic_world_and_rescales_rewards():
    rng = np.random.default_rng(6)
    n = 40_000
    X = np.c_[np.ones(n), rng.normal(size=(n, 2))]
    arms = rng.integers(2, size=n)
    truth = np.array([[-2.0, 0.8, -0.5], [-1.0, -0.3, 0.6]])
    click = rng.binomial(1, 1 / (1 + np.exp(-(X * truth[arms]).sum(axis=1)))).astype(float)
    assert fit_logistic(X, arms, click, 2, ridge=1.0) == pytest.approx(truth, abs=0.1)
    # rewards in {0, 2}: the same model on [0, 1], predictions scaled back
    cands = np.tile(np.arange(2), (n, 1))
    q1 = cross_fit(X, arms, click, cands, 2, folds=2, seed=1, model="logistic")
    q2 = cross_fit(X, arms, 2 * click, cands, 2, folds=2, seed=1, model="logistic")
    assert q2 == pytest.approx(2 * q1, rel=1e-9)
    assert q1.min() > 0.0 and q1.max() < 1.0
    with pytest.raises(ValueError, match="reward model"):
        cross_fit(X, arms, click, cands, 2, model="forest")


def _log(tmp_path) -> str:
    import json

    rng = np.random.default_rng(8)
    lines = []
    for i in range(300):
        arm = "a" if rng.random() < 0.7 else "b"
        lines.append({"type": "impression", "event_id": f"e{i}", "ts": 1_767_225_600.0 + i, "impression_id": f"i{i}",
                      "arm": arm, "context": {"x": float(rng.normal())}, "candidates": ["a", "b"],
                      "propensity": 0.7 if arm == "a" else 0.3})
        if rng.random() < (0.3 if arm == "a" else 0.1):
            lines.append({"type": "click", "event_id": f"c{i}", "ts": 1_767_225_600.0 + i + 1.0,
                          "impression_id": f"i{i}"})
    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in lines))
    return str(path)


def test_evaluate_reports_dr_cv_and_takes_the_logistic_model(tmp_path, capsys):
    log = _log(tmp_path)
    target = TargetPolicy.fresh(ModelConfig(learner="random"))
    ridge = evaluate_log(log, target)
    logistic = evaluate_log(log, target, EvaluationOptions(reward_model="logistic"))
    assert ridge["reward_model"] == "ridge" and logistic["reward_model"] == "logistic"
    for out in (ridge, logistic):
        assert out["dr_cv"]["ci_low"] <= out["dr_cv"]["value"] <= out["dr_cv"]["ci_high"]
    assert logistic["dr"]["value"] != ridge["dr"]["value"] and logistic["ips"] == ridge["ips"]
    assert main(["evaluate", log, "--learner", "random", "--reward-model", "logistic", "--quiet"]) == 0
    assert "dr_cv" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", log, "--learner", "random", "--reward-model", "forest"])
    assert exc.value.code == 2
