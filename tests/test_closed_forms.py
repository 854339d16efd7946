"""Every learner's state against the closed form it claims to compute, solved independently here.

LinUCB and LinTS: per-arm ridge regression (``np.linalg.solve``). Diag-LinUCB: ``b/(λ+d)`` from sums
taken by hand. Hybrid LinUCB: the joint ridge regression over ``[β, θ_1, …, θ_K]`` and a literal
transcription of Li et al. (2010) Algorithm 2. Beta TS: posterior counts. UCB1, ε-greedy and uniform
random: their indexes and propensities by hand. Seeded throughout.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from banditloop.operators.registry import make_learner
from banditloop.operators.ucb1 import UNPLAYED_SCORE

D = 4
K = 3
ARMS = ["a", "b", "c"]


def data(n: int, seed: int, arms: list[str] = ARMS):
    rng = np.random.default_rng(seed)
    chosen = [arms[i] for i in rng.integers(len(arms), size=n)]
    X = rng.normal(size=(n, D))
    Z = rng.normal(size=(n, K))
    true = {a: rng.normal(size=D) for a in arms}
    beta = rng.normal(size=K)
    r = np.array([x @ true[a] + z @ beta for a, x, z in zip(chosen, X, Z, strict=True)])
    r += 0.1 * rng.normal(size=n)
    return chosen, X, Z, r


def ridge(X: np.ndarray, r: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    A = lam * np.eye(X.shape[1]) + X.T @ X
    return np.linalg.solve(A, X.T @ r), np.linalg.inv(A)


def by_arm(arms, X, r, arm):
    mask = np.array([a == arm for a in arms])
    return X[mask], r[mask]


# -- LinUCB / LinTS --------------------------------------------------------------------------------
@pytest.mark.parametrize("refresh_every", [1000, 3])  # Sherman–Morrison path only / frequent exact refreshes
def test_linucb_theta_and_score_are_ridge_regression(refresh_every):
    arms, X, _, r = data(300, seed=1)
    lam, alpha = 0.7, 1.3
    learner = make_learner("linucb", D, alpha=alpha, ridge=lam, refresh_every=refresh_every)
    for a, x, y in zip(arms, X, r, strict=True):
        learner.learn_one(a, x, float(y))
    x = np.random.default_rng(2).normal(size=D)
    expected = []
    for arm in ARMS:
        theta, ainv = ridge(*by_arm(arms, X, r, arm), lam)
        np.testing.assert_allclose(learner.theta(arm), theta, rtol=1e-9, atol=1e-12)
        expected.append(theta @ x + alpha * np.sqrt(x @ ainv @ x))
    np.testing.assert_allclose(learner.score(x, ARMS), expected, rtol=1e-9)


def test_lints_posterior_is_ridge_regression_and_draws_follow_it():
    arms, X, _, r = data(200, seed=3)
    lam, v = 1.5, 0.4
    learner = make_learner("lints", D, v=v, ridge=lam, refresh_every=5, seed=4)
    # rewards arrive late and out of order
    for a, x in zip(arms, X, strict=True):
        learner.learn_impression(a, x)
    for i in np.random.default_rng(5).permutation(len(arms)):
        learner.learn_reward(arms[i], X[i], float(r[i]))
    for arm in ARMS:
        theta, ainv = ridge(*by_arm(arms, X, r, arm), lam)
        mean, cov = learner.posterior(arm)
        np.testing.assert_allclose(mean, theta, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(cov, v**2 * ainv, rtol=1e-9, atol=1e-14)
    # a sampled score of arm a is N(xᵀμ_a, v² xᵀA_a⁻¹x)
    x = np.random.default_rng(6).normal(size=D)
    draws = np.array([learner.score(x, ARMS) for _ in range(4000)])
    for j, arm in enumerate(ARMS):
        theta, ainv = ridge(*by_arm(arms, X, r, arm), lam)
        mu, sd = theta @ x, v * np.sqrt(x @ ainv @ x)
        assert abs(draws[:, j].mean() - mu) < 5 * sd / np.sqrt(4000)
        assert draws[:, j].std() == pytest.approx(sd, rel=0.06)
    assert abs(np.corrcoef(draws.T)[0, 1]) < 0.08  # arms are sampled independently


# -- Diag-LinUCB -----------------------------------------------------------------------------------
def test_diag_linucb_theta_is_b_over_ridge_plus_d():
    arms, X, _, r = data(150, seed=7)
    lam, alpha = 0.5, 0.9
    learner = make_learner("diag-linucb", D, alpha=alpha, ridge=lam)
    for a, x, y in zip(arms, X, r, strict=True):
        learner.learn_one(a, x, float(y))
    x = np.random.default_rng(8).normal(size=D)
    for arm in ARMS:
        d = [0.0] * D
        b = [0.0] * D
        for a, row, y in zip(arms, X, r, strict=True):
            if a == arm:
                for i in range(D):
                    d[i] += row[i] * row[i]
                    b[i] += y * row[i]
        theta = [b[i] / (lam + d[i]) for i in range(D)]
        np.testing.assert_allclose(learner.theta(arm), theta, rtol=1e-12)
        width = sum(x[i] ** 2 / (lam + d[i]) for i in range(D)) ** 0.5
        expected = sum(theta[i] * x[i] for i in range(D)) + alpha * width
        assert learner.score(x, [arm])[0] == pytest.approx(expected, rel=1e-12)


# -- Hybrid LinUCB ---------------------------------------------------------------------------------
def joint_ridge(arms, X, Z, r, lam):
    """Ridge over [β, θ_a, θ_b, θ_c] on rows [z, x in arm a's block], penalty ‖β‖² + λΣ‖θ_a‖²."""
    p = K + D * len(ARMS)
    design = np.zeros((len(arms), p))
    design[:, :K] = Z
    for i, a in enumerate(arms):
        j = K + D * ARMS.index(a)
        design[i, j:j + D] = X[i]
    penalty = np.diag([1.0] * K + [lam] * (D * len(ARMS)))
    M = penalty + design.T @ design
    coef = np.linalg.solve(M, design.T @ r)
    return coef[:K], {a: coef[K + D * i:K + D * (i + 1)] for i, a in enumerate(ARMS)}, np.linalg.inv(M)


def joint_row(arm: str, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    u = np.zeros(K + D * len(ARMS))
    u[:K] = z
    j = K + D * ARMS.index(arm)
    u[j:j + D] = x
    return u


@pytest.mark.parametrize("path", ["learn_one", "refresh", "delayed", "batch", "merge"])
def test_hybrid_linucb_is_joint_ridge_regression(path):
    arms, X, Z, r = data(240, seed=9)
    lam, alpha = 0.6, 1.1  # λ ≠ 1, so a wrong prior on β or θ shows
    learner = make_learner("hybrid-linucb", D, shared_dim=K, alpha=alpha, ridge=lam,
                           refresh_every=4 if path == "refresh" else 1000)
    if path == "batch":
        learner.learn_batch(arms[:100], X[:100], r[:100], Z[:100])
        learner.learn_batch(arms[100:], X[100:], r[100:], Z[100:])
    elif path == "delayed":
        for a, x, z in zip(arms, X, Z, strict=True):
            learner.learn_impression(a, x, z)
        for i in np.random.default_rng(10).permutation(len(arms)):
            learner.learn_reward(arms[i], X[i], float(r[i]), Z[i])
    elif path == "merge":
        other = make_learner("hybrid-linucb", D, shared_dim=K, alpha=alpha, ridge=lam)
        for i, (a, x, z, y) in enumerate(zip(arms, X, Z, r, strict=True)):
            (learner if i % 3 else other).learn_one(a, x, float(y), z)
        learner = learner.merge(other)
    else:
        for a, x, z, y in zip(arms, X, Z, r, strict=True):
            learner.learn_one(a, x, float(y), z)

    beta, thetas, minv = joint_ridge(arms, X, Z, r, lam)
    np.testing.assert_allclose(learner.beta(), beta, rtol=1e-8, atol=1e-10)
    for arm in ARMS:
        np.testing.assert_allclose(learner.theta(arm), thetas[arm], rtol=1e-8, atol=1e-10)
    rng = np.random.default_rng(11)
    for _ in range(5):
        x = rng.normal(size=D)
        shared = {a: rng.normal(size=K) for a in ARMS}
        expected = [shared[a] @ beta + x @ thetas[a]
                    + alpha * np.sqrt(joint_row(a, x, shared[a]) @ minv @ joint_row(a, x, shared[a])) for a in ARMS]
        np.testing.assert_allclose(learner.score(x, ARMS, shared), expected, rtol=1e-8)


def test_hybrid_linucb_matches_algorithm_2_literally():
    """Li et al. (2010) Algorithm 2 transcribed line by line (λ = 1 as in the paper) scores the same."""
    arms, X, Z, r = data(150, seed=12)
    alpha = 0.8
    learner = make_learner("hybrid-linucb", D, shared_dim=K, alpha=alpha, ridge=1.0)
    A0, b0 = np.eye(K), np.zeros(K)
    A = {a: np.eye(D) for a in ARMS}
    B = {a: np.zeros((D, K)) for a in ARMS}
    b = {a: np.zeros(D) for a in ARMS}

    def paper_scores(x, shared):
        A0inv = np.linalg.inv(A0)
        beta = A0inv @ b0
        out = []
        for a in ARMS:
            Ainv = np.linalg.inv(A[a])
            theta = Ainv @ (b[a] - B[a] @ beta)
            z = shared[a]
            s = (z @ A0inv @ z - 2 * z @ A0inv @ B[a].T @ Ainv @ x + x @ Ainv @ x
                 + x @ Ainv @ B[a] @ A0inv @ B[a].T @ Ainv @ x)
            out.append(z @ beta + x @ theta + alpha * np.sqrt(s))
        return np.array(out)

    rng = np.random.default_rng(13)
    for a, x, z, y in zip(arms, X, Z, r, strict=True):
        probe = rng.normal(size=D)
        shared = {arm: rng.normal(size=K) for arm in ARMS}
        np.testing.assert_allclose(learner.score(probe, ARMS, shared), paper_scores(probe, shared), rtol=1e-8)
        learner.learn_one(a, x, float(y), z)
        Ainv = np.linalg.inv(A[a])
        A0 += B[a].T @ Ainv @ B[a]
        b0 += B[a].T @ Ainv @ b[a]
        A[a] += np.outer(x, x)
        B[a] += np.outer(x, z)
        b[a] += y * x
        Ainv = np.linalg.inv(A[a])
        A0 += np.outer(z, z) - B[a].T @ Ainv @ B[a]
        b0 += y * z - B[a].T @ Ainv @ b[a]


# -- Beta TS ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("pending", ["wait", "failure"])
def test_beta_ts_posterior_counts(pending):
    """Beta(α₀ + clicks, β₀ + non-clicks) once every window closed, in both pending modes; while the
    windows are open, "wait" has learned only the clicks and "failure" every impression as a failure."""
    rng = np.random.default_rng(14)
    arms = [ARMS[i] for i in rng.integers(3, size=200)]
    clicks = (rng.random(200) < 0.3).astype(float)
    learner = make_learner("ts", 1, prior_alpha=2.0, prior_beta=3.0, pending=pending)
    for a in arms:
        learner.learn_impression(a)
    for i in np.flatnonzero(clicks)[::-1]:  # clicks later, in reverse order
        learner.learn_reward(arms[i], None, 1.0)
    for arm in ARMS:
        n = sum(a == arm for a in arms)
        s = sum(c for a, c in zip(arms, clicks, strict=True) if a == arm)
        pending_failures = 0.0 if pending == "wait" else n - s
        assert learner.posterior(arm) == (2.0 + s, 3.0 + pending_failures)
    for i in rng.permutation(200):  # the windows close, in any order
        learner.learn_close(arms[i], None, float(clicks[i]))
    for arm in ARMS:
        n = sum(a == arm for a in arms)
        s = sum(c for a, c in zip(arms, clicks, strict=True) if a == arm)
        assert learner.posterior(arm) == (2.0 + s, 3.0 + n - s)


# -- context-free policies -------------------------------------------------------------------------
def test_ucb1_index_by_hand():
    learner = make_learner("ucb1", 1, c=0.5)
    plays = {"a": [1, 0, 1, 1], "b": [0, 0], "c": [1]}
    for arm, rewards in plays.items():
        for y in rewards:
            learner.learn_one(arm, None, float(y))
    N = 7
    expected = [np.mean(v) + 0.5 * np.sqrt(2 * np.log(N) / len(v)) for v in plays.values()]
    np.testing.assert_allclose(learner.score(None, ARMS), expected, rtol=1e-12)
    d = learner.choose(None, [*ARMS, "new1", "new2"])
    assert d.arm in ("new1", "new2") and d.propensity == 0.5  # unplayed first, ties split
    assert d.scores["new1"] == UNPLAYED_SCORE
    json.dumps(d.scores, allow_nan=False)  # finite, so valid JSON
    d = learner.choose(None, ARMS)
    assert d.arm == ARMS[int(np.argmax(expected))] and d.propensity == 1.0


def test_epsilon_greedy_propensities_by_hand():
    learner = make_learner("egreedy", 1, epsilon=0.2)
    for arm, rewards in {"a": [1, 0], "b": [1, 0, 1, 0], "c": [0]}.items():
        for y in rewards:
            learner.learn_one(arm, None, float(y))
    cands = ["a", "b", "c", "d", "e"]  # a, b tie at 0.5; d, e unplayed at initial_value 0
    s = learner.score(None, cands)
    np.testing.assert_array_equal(s, [0.5, 0.5, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(learner.propensities(None, cands, s), [0.44, 0.44, 0.04, 0.04, 0.04], rtol=1e-12)
    # the draw follows those probabilities, ties split evenly (not "the first greedy arm")
    n = 4000
    picks = [learner.choose(None, cands).arm for _ in range(n)]
    freq = np.array([picks.count(c) for c in cands]) / n
    p = np.array([0.44, 0.44, 0.04, 0.04, 0.04])
    assert np.all(np.abs(freq - p) < 4.5 * np.sqrt(p * (1 - p) / n)), freq
    optimistic = make_learner("egreedy", 1, epsilon=0.2, initial_value=1.0)
    optimistic.learn_one("a", None, 0.5)
    d = optimistic.choose(None, ["a", "b", "c"])
    np.testing.assert_allclose(d.probabilities, [0.2 / 3, 0.4 + 0.2 / 3, 0.4 + 0.2 / 3], rtol=1e-12)


def test_uniform_random_propensity_is_exactly_one_over_k():
    learner = make_learner("random", 1, seed=15)
    for k in (1, 2, 3, 7):
        cands = [f"a{i}" for i in range(k)]
        d = learner.choose(None, cands)
        assert d.propensity == 1.0 / k
        assert np.all(d.probabilities == 1.0 / k)
    learner.learn_one("a1", None, 1.0)
    learner.learn_one("a1", None, 0.0)
    assert learner.counts("a1") == (2.0, 1.0)


@pytest.mark.parametrize("exploration", ["egreedy", "softmax"])
def test_ctr_lr_propensities_by_hand(exploration):
    learner = make_learner("ctr-lr", D, exploration=exploration, epsilon=0.15, temperature=0.15,
                           learning_rate=0.1, seed=16)
    arms, X, _, r = data(300, seed=17)
    for a, x, y in zip(arms, X, r, strict=True):
        learner.learn_one(a, x, float(y > 0))
    x = np.random.default_rng(18).normal(size=D)
    q = np.array([learner.predict(a, x) for a in ARMS])
    if exploration == "softmax":
        expected = np.exp(q / 0.15) / np.exp(q / 0.15).sum()
    else:
        expected = np.full(3, 0.05)
        expected[np.argmax(q)] += 0.85
    assert expected.max() < 0.95 and expected.min() > 0.01, expected  # not degenerate
    d = learner.choose(x, ARMS)
    np.testing.assert_allclose(d.score_array, q, rtol=1e-12)
    np.testing.assert_allclose(d.probabilities, expected, rtol=1e-9)
    assert d.propensity == d.probabilities[ARMS.index(d.arm)]
