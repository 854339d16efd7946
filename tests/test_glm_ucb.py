"""GLM-UCB (:mod:`banditloop.operators.glm_ucb`): the batch mode is the L2-regularised logistic MAP,
one online step is the exact Laplace step, state round trips continue bit for bit, decisions are
seeded, greedy propensities are exact, merge multiplies the Gaussian factors, pending impressions
are not failures. The contract shared by every learner is in ``test_learners.py``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from banditloop.core.state_codec import LearnerState
from banditloop.operators.glm_ucb import GLMUCB, mode_on_line
from banditloop.operators.logistic_ts import laplace_update_full


def _irls(X: np.ndarray, y: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """L2-regularised logistic regression (penalty ½ wᵀ diag(prior) w) by iteratively reweighted least squares."""
    w = np.zeros(X.shape[1])
    for _ in range(100):
        p = 1 / (1 + np.exp(-X @ w))
        s = p * (1 - p)
        z = X @ w + (y - p) / s
        w_new = np.linalg.solve(X.T @ (s[:, None] * X) + np.diag(prior), X.T @ (s * z))
        if np.max(np.abs(w_new - w)) < 1e-14:
            return w_new
        w = w_new
    return w


def _data(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.normal(size=(n, d - 1))])
    w = np.array([-2.0, 1.0, -0.5, 0.3, 0.0][:d])
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ w)))).astype(float)
    return X, y


@pytest.mark.parametrize("intercept", [2.5, 0.1])
def test_batch_mode_is_the_l2_logistic_map(intercept):
    from sklearn.linear_model import LogisticRegression

    n, d, lam = 400, 4, 2.5
    X, y = _data(n, d, seed=21)
    learner = GLMUCB(dim=d, prior_precision=lam, intercept_precision=intercept)
    learner.fit_batch(["a"] * n, X, y)
    m, H = learner.posterior("a")
    prior = np.array([intercept] + [lam] * (d - 1))
    expected = _irls(X, y, prior)
    np.testing.assert_allclose(m, expected, rtol=1e-10, atol=1e-12)
    if intercept == lam:  # the same penalty on every weight: scikit-learn's C = 1/λ
        sk = LogisticRegression(C=1.0 / lam, fit_intercept=False, tol=1e-12, max_iter=10_000).fit(X, y)
        np.testing.assert_allclose(m, sk.coef_[0], rtol=1e-5, atol=1e-6)
    p = 1 / (1 + np.exp(-X @ expected))
    np.testing.assert_allclose(H, np.diag(prior) + X.T @ (X * (p * (1 - p))[:, None]), rtol=1e-10)
    np.testing.assert_allclose(learner._arrays["cov"][0], np.linalg.inv(H), rtol=1e-9)
    assert learner.counters["impressions"] == n and learner.counters["reward_sum"] == y.sum()


def test_online_step_is_the_exact_laplace_step_and_stays_near_the_batch_map():
    n, d = 3000, 4
    X, y = _data(n, d, seed=5)
    online = GLMUCB(dim=d)
    m0, H0 = np.zeros(d), np.eye(d)
    online.learn_one("a", X[0], float(y[0]))
    m1, H1 = laplace_update_full(m0, H0, X[:1], y[:1], np.ones(1))  # d-dimensional Newton on one example
    np.testing.assert_allclose(online.posterior("a")[0], m1, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(online.posterior("a")[1], H1, rtol=1e-12)
    for i in range(1, n):
        online.learn_one("a", X[i], float(y[i]))
    batch = GLMUCB(dim=d)
    batch.fit_batch(["a"] * n, X, y)
    # assumed-density filtering is an approximation of the MAP, a close one with this much data
    np.testing.assert_allclose(online.posterior("a")[0], batch.posterior("a")[0], atol=0.05)


@pytest.mark.parametrize(("z0", "v", "y", "c"), [(0.0, 1.0, 1.0, 1.0), (-3.0, 50.0, 1.0, 1.0), (4.0, 1e4, 0.0, 1.0),
                                                 (-30.0, 1e6, 1.0, 0.5), (2.0, 0.0, 0.0, 1.0)])
def test_mode_on_line_solves_its_equation(z0, v, y, c):
    z = mode_on_line(z0, v, y, c)
    assert z - z0 + c * v * (1 / (1 + np.exp(-z)) - y) == pytest.approx(0.0, abs=1e-9 * max(1.0, v))
    assert (z >= z0) if y == 1.0 else (z <= z0)


def _stream(n: int, seed: int, arms: list[str]) -> list[tuple[np.ndarray, dict[str, float]]]:
    rng = np.random.default_rng(seed)
    w = {a: rng.normal(size=4) - np.array([2.0, 0, 0, 0]) for a in arms}
    out = []
    for _ in range(n):
        x = np.concatenate([[1.0], rng.normal(size=3)])
        out.append((x, {a: float(rng.random() < 1 / (1 + np.exp(-w[a] @ x))) for a in arms}))
    return out


def _play(learner: GLMUCB, events, arms: list[str]) -> list[str]:
    chosen = []
    for x, rewards in events:
        d = learner.choose(x, arms)
        learner.learn_one(d.arm, x, rewards[d.arm])
        chosen.append(d.arm)
    return chosen


def test_round_trip_continues_bit_for_bit_and_seed_fixes_decisions():
    arms = [f"a{i}" for i in range(5)]
    events = _stream(400, seed=8, arms=arms)
    whole = GLMUCB(dim=4, alpha=0.0, seed=3)  # greedy: ties between fresh arms use the generator
    first = _play(whole, events[:200], arms)
    again = GLMUCB(dim=4, alpha=0.0, seed=3)
    assert _play(again, events[:200], arms) == first  # the same seed: the same decisions
    assert _play(GLMUCB(dim=4, alpha=0.0, seed=4), events[:200], arms) != first  # another seed: others
    state = again.export_state()
    assert set(state.arrays) == {"m", "H"}  # the covariance is rebuilt from H, not stored
    meta = json.loads(json.dumps({"kind": state.kind, "params": state.params, "arms": state.arms,
                                  "retired": state.retired, "counters": state.counters, "rng": state.rng}))
    restored = GLMUCB.from_state(LearnerState(arrays={k: np.array(v.tolist()) for k, v in state.arrays.items()},
                                              **meta))
    assert _play(restored, events[200:], arms) == _play(whole, events[200:], arms)
    for name in ("m", "H", "cov"):
        np.testing.assert_array_equal(restored._arrays[name], whole._arrays[name], err_msg=name)
    assert restored.counters == whole.counters


def test_greedy_propensities_are_exact():
    arms = ["a", "b", "c"]
    x = np.array([1.0, 0.3, -0.2, 0.5])
    learner = GLMUCB(dim=4, alpha=0.0, seed=1)
    np.testing.assert_array_equal(learner.action_probabilities(x, arms), np.full(3, 1 / 3))  # fresh: a 3-way tie
    counts = {a: 0 for a in arms}
    for _ in range(3000):
        d = learner.choose(x, arms)
        assert d.propensity == pytest.approx(1 / 3)
        counts[d.arm] += 1
    assert all(abs(c / 3000 - 1 / 3) < 0.04 for c in counts.values()), counts
    learner.learn_one("b", x, 1.0)
    np.testing.assert_array_equal(learner.action_probabilities(x, arms), [0.0, 1.0, 0.0])
    d = learner.choose(x, arms)
    assert (d.arm, d.propensity) == ("b", 1.0)
    learner.learn_one("b", x, 0.0)
    learner.learn_one("b", x, 0.0)  # b is now below the fresh arms: a and c tie again
    np.testing.assert_array_equal(learner.action_probabilities(x, arms), [0.5, 0.0, 0.5])


def test_bonus_is_the_laplace_standard_deviation_of_the_logit():
    arms = ["a", "b"]
    events = _stream(300, seed=2, arms=arms)
    greedy, ucb = GLMUCB(dim=4, alpha=0.0), GLMUCB(dim=4, alpha=0.7)
    for lrn in (greedy, ucb):
        for i, (x, rewards) in enumerate(events):
            lrn.learn_one(arms[i % 2], x, rewards[arms[i % 2]])
    x = events[0][0]
    for r, arm in enumerate(arms):
        m, H = ucb.posterior(arm)
        expected = m @ x + 0.7 * np.sqrt(x @ np.linalg.solve(H, x))
        assert ucb.score(x, arms)[r] == pytest.approx(expected, rel=1e-10)
        assert greedy.score(x, arms)[r] == pytest.approx(m @ x, rel=1e-12)
        assert greedy.predict(arm, x) == pytest.approx(1 / (1 + np.exp(-m @ x)), rel=1e-12)


def test_pending_impression_is_not_a_failure():
    x = np.array([1.0, 0.5])
    learner = GLMUCB(dim=2)
    learner.learn_impression("a", x)
    learner.learn_impression("a", x)
    np.testing.assert_array_equal(learner.posterior("a")[0], 0.0)
    learner.learn_reward("a", x, 1.0)
    after_click = learner.posterior("a")[0]
    assert after_click @ x > 0
    learner.learn_close("a", x, 1.0)  # clicked: nothing more to learn at the close
    np.testing.assert_array_equal(learner.posterior("a")[0], after_click)
    learner.learn_close("a", x, 0.0)  # the other one closes without a click: a negative
    reference = GLMUCB(dim=2)
    reference.learn_one("a", x, 1.0)
    reference.learn_one("a", x, 0.0)
    np.testing.assert_allclose(learner.posterior("a")[0], reference.posterior("a")[0], rtol=1e-12)


def test_merge_multiplies_the_gaussian_factors_and_refuses_others():
    rng = np.random.default_rng(4)
    a, b = (GLMUCB(dim=3, prior_precision=2.0, intercept_precision=0.5, seed=s) for s in (0, 1))
    for learner in (a, b):
        for _ in range(40):
            learner.learn_one(["x", "y"][rng.integers(2)], rng.normal(size=3), float(rng.random() < 0.3))
    merged = a.merge(b)
    H0 = np.diag([0.5, 2.0, 2.0])
    (ma, Ha), (mb, Hb) = a.posterior("x"), b.posterior("x")
    mm, Hm = merged.posterior("x")
    np.testing.assert_allclose(Hm, Ha + Hb - H0)
    np.testing.assert_allclose(mm, np.linalg.solve(Ha + Hb - H0, Ha @ ma + Hb @ mb))
    np.testing.assert_allclose(merged._arrays["cov"][merged.arm_index["x"]], np.linalg.inv(Hm), rtol=1e-10)
    with pytest.raises(ValueError, match="hyper-parameters"):
        a.merge(GLMUCB(dim=3, prior_precision=1.0, intercept_precision=0.5))
    with pytest.raises(ValueError):
        GLMUCB(dim=3, alpha=-0.1)
