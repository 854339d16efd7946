"""Off-policy estimators: closed forms on tiny hand-computed logs, invalid input, cross-fitting,
and agreement with Open Bandit Pipeline (obp) where it installs."""

from __future__ import annotations

import importlib
import math
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from banditloop.evaluation.estimators import (
    DR,
    IPS,
    SNIPS,
    Z95,
    ClippedIPS,
    OnPolicy,
    Replay,
    SwitchDR,
    kish_ess,
)
from banditloop.evaluation.reward_model import cross_fit, fit_ridge

# four impressions, two candidates each, logged with propensities 0.5, 0.8, 0.2, 0.5
R = np.array([1.0, 0.0, 1.0, 0.0])
P = np.array([0.5, 0.8, 0.2, 0.5])
T = np.array([1.0, 0.5, 0.4, 0.0])  # target's probability of the logged arm


def test_ips_by_hand():
    est = IPS(interval="normal").estimate(R, P, T)
    # w = [2, 0.625, 2, 0]; w r = [2, 0, 2, 0]
    assert est.value == pytest.approx(1.0, abs=1e-15)
    terms = np.array([2.0, 0.0, 2.0, 0.0])
    se = terms.std(ddof=1) / 2.0
    assert est.std_error == pytest.approx(se)
    assert (est.ci_low, est.ci_high) == pytest.approx((1.0 - Z95 * se, 1.0 + Z95 * se))
    assert est.ess == pytest.approx(4.625 ** 2 / (4 + 0.390625 + 4))
    assert est.n == 4


def test_ips_with_target_equal_to_logger_is_the_empirical_mean():
    rng = np.random.default_rng(1)
    p = rng.uniform(0.05, 1.0, size=200)
    r = rng.binomial(1, 0.3, size=200).astype(float)
    est = IPS().estimate(r, p, p)
    assert est.value == pytest.approx(r.mean(), abs=1e-15)
    assert est.ess == pytest.approx(200.0)
    assert est.value == pytest.approx(OnPolicy().estimate(r).value, abs=1e-15)


def test_snips_by_hand_and_weights_sum_to_one():
    w = T / P
    assert SNIPS().estimate(R, P, T).value == pytest.approx((2 + 2) / w.sum(), abs=1e-15)
    rng = np.random.default_rng(2)
    p, t = rng.uniform(0.1, 1, 50), rng.uniform(0, 1, 50)
    assert SNIPS.weights(p, t).sum() == pytest.approx(1.0, abs=1e-12)
    # a constant reward is estimated exactly by SNIPS (not by IPS)
    assert SNIPS().estimate(np.full(50, 0.7), p, t).value == pytest.approx(0.7, abs=1e-12)


def test_dr_with_zero_reward_model_equals_ips():
    zeros = np.zeros(4)
    dr, ips = DR().estimate(R, P, T, zeros, zeros), IPS().estimate(R, P, T)
    assert dr.value == ips.value and dr.std_error == ips.std_error


def test_dr_by_hand_and_with_a_perfect_model():
    ql = np.array([0.5, 0.1, 0.6, 0.2])
    qt = np.array([0.4, 0.3, 0.5, 0.1])
    w = T / P
    assert DR().estimate(R, P, T, ql, qt).value == pytest.approx(np.mean(qt + w * (R - ql)), abs=1e-15)
    # rewards equal to the model's predictions: DR is the direct method exactly
    assert DR().estimate(ql, P, T, ql, qt).value == pytest.approx(qt.mean(), abs=1e-15)


def test_clipped_and_switch_variants():
    ql, qt = np.array([0.5, 0.1, 0.6, 0.2]), np.array([0.4, 0.3, 0.5, 0.1])
    assert ClippedIPS(math.inf).estimate(R, P, T).value == IPS().estimate(R, P, T).value
    assert ClippedIPS(1.5).estimate(R, P, T).value == pytest.approx((1.5 + 1.5) / 4, abs=1e-15)
    assert SwitchDR(math.inf).estimate(R, P, T, ql, qt).value == DR().estimate(R, P, T, ql, qt).value
    # tau = 0 keeps the correction only where it is 0 (weight 0): the direct method
    assert SwitchDR(0.0).estimate(R, P, T, ql, qt).value == pytest.approx(qt.mean(), abs=1e-15)
    w = T / P
    keep = w <= 1.0
    assert SwitchDR(1.0).estimate(R, P, T, ql, qt).value == pytest.approx(
        np.mean(qt + keep * w * (R - ql)), abs=1e-15)
    with pytest.raises(ValueError):
        ClippedIPS(0.0)


def test_replay_is_the_mean_over_matches():
    est = Replay().estimate(R, np.array([True, True, False, False]))
    assert est.value == 0.5 and est.n == 2 and est.ess == 2
    empty = Replay().estimate(R, np.zeros(4, dtype=bool))
    assert empty.n == 0 and math.isnan(empty.value)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, math.nan])
def test_invalid_logging_propensities_are_refused_with_a_count(bad):
    p = P.copy()
    p[1] = bad
    with pytest.raises(ValueError, match=r"pscore: 1 of 4 rows"):
        IPS().estimate(R, p, T)
    with pytest.raises(ValueError, match=r"pscore: 1 of 4 rows"):
        SNIPS().estimate(R, p, T)


def test_shapes_and_empty_input_are_checked():
    with pytest.raises(ValueError, match="no impressions"):
        IPS().estimate([], [], [])
    with pytest.raises(ValueError, match="shape"):
        IPS().estimate(R, P[:3], T)
    with pytest.raises(ValueError, match="target_pscore"):
        IPS().estimate(R, P, T + 1.0)


def test_kish_ess():
    assert kish_ess(np.ones(10)) == 10.0
    assert kish_ess(np.array([1.0, 0, 0, 0])) == 1.0
    assert kish_ess(np.zeros(3)) == 0.0


def test_ridge_reward_model_recovers_a_linear_model():
    rng = np.random.default_rng(3)
    X = np.c_[np.ones(3000), rng.normal(size=(3000, 2))]
    arms = rng.integers(2, size=3000)
    truth = np.array([[0.2, 0.1, -0.1], [0.5, -0.2, 0.0]])
    r = (X * truth[arms]).sum(axis=1)
    assert fit_ridge(X, arms, r, 2, ridge=1e-9) == pytest.approx(truth, abs=1e-8)


@pytest.mark.parametrize("model", ["ridge", "logistic"])
def test_cross_fitting_keeps_a_row_out_of_its_own_prediction(model):
    rng = np.random.default_rng(4)
    n = 400
    X = np.c_[np.ones(n), rng.normal(size=(n, 3))]
    arms = rng.integers(3, size=n)
    r = rng.binomial(1, 0.4, size=n).astype(float)
    cands = np.tile(np.arange(3), (n, 1))
    q = cross_fit(X, arms, r, cands, 3, folds=2, seed=7, model=model)
    r2 = r.copy()
    r2[10] = 1.0 - r2[10]
    q2 = cross_fit(X, arms, r2, cands, 3, folds=2, seed=7, model=model)
    assert np.array_equal(q[10], q2[10])  # its own reward is not in its fold's model
    assert not np.array_equal(q, q2)  # ... but it is in the other fold's
    padded = np.c_[cands, np.full(n, -1)]
    assert np.all(cross_fit(X, arms, r, padded, 3, folds=2, seed=7, model=model)[:, 3] == 0.0)


# -- agreement with Open Bandit Pipeline ---------------------------------------------------------
def _obp():
    """obp's estimators. obp 0.5.x needs Python < 3.10, and obp 0.4.1 (pure Python, installed by
    ``make install-test`` with ``--no-deps``) imports torch at the top of its modules although its
    numpy estimators never call it: without torch, its ``obp/ope/estimators.py`` is loaded on its own
    with a stand-in ``torch`` module whose ``Tensor`` no array is an instance of, so every estimate
    below runs obp's own numpy code."""
    try:
        from obp import ope
        return ope
    except ImportError:
        pass
    try:
        import obp
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            raise  # make install-test installs it: its absence is a broken install
        pytest.skip(f"obp is not installed ({exc}); `make install-test` installs obp 0.4.1")
    saved = {name: sys.modules.get(name) for name in ("torch", "obp.ope", "obp.utils", "obp.ope.estimators")}
    stand_in = types.ModuleType("torch")
    stand_in.Tensor = type("Tensor", (), {})  # type: ignore[attr-defined]
    package = types.ModuleType("obp.ope")
    package.__path__ = [str(Path(obp.__file__).parent / "ope")]
    sys.modules.update({"torch": stand_in, "obp.ope": package})
    try:
        return importlib.import_module("obp.ope.estimators")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def test_agreement_with_obp():
    ope = _obp()
    rng = np.random.default_rng(5)
    n, k = 2000, 5
    logging = rng.dirichlet(np.ones(k), size=n)
    action = np.array([rng.choice(k, p=row) for row in logging])
    pscore = logging[np.arange(n), action]
    target = rng.dirichlet(np.ones(k), size=n)
    reward = rng.binomial(1, 0.3, size=n).astype(float)
    q = rng.uniform(0, 1, size=(n, k))
    action_dist, q3 = target[:, :, None], q[:, :, None]
    position = np.zeros(n, dtype=int)
    t = target[np.arange(n), action]
    q_logged, q_target = q[np.arange(n), action], (q * target).sum(axis=1)
    common = {"reward": reward, "action": action, "position": position, "pscore": pscore,
              "action_dist": action_dist}
    assert abs(IPS().estimate(reward, pscore, t).value
               - ope.InverseProbabilityWeighting().estimate_policy_value(**common)) < 1e-9
    assert abs(SNIPS().estimate(reward, pscore, t).value
               - ope.SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(**common)) < 1e-9
    assert abs(DR().estimate(reward, pscore, t, q_logged, q_target).value
               - ope.DoublyRobust().estimate_policy_value(**common, estimated_rewards_by_reg_model=q3)) < 1e-9
    assert abs(SwitchDR(3.0).estimate(reward, pscore, t, q_logged, q_target).value
               - ope.SwitchDoublyRobust(tau=3.0).estimate_policy_value(
                   **common, estimated_rewards_by_reg_model=q3)) < 1e-9
