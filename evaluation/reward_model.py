"""The reward model of the doubly robust estimators: per-arm ridge regression, cross-fitted.

``q̂(x, a) = θ_a·x`` with ``θ_a = (λI + Σ x xᵀ)⁻¹ Σ r x`` over the impressions that showed ``a``
(an arm never shown in the training folds predicts 0). **Cross-fitting**: impressions are split into
``folds`` random folds (seeded); the predictions for a fold come from a model fitted on the other
folds only, so no impression's own reward enters its own ``q̂`` and DR keeps its unbiasedness
whatever the model's quality (Chernozhukov et al. 2018). Predictions are clipped to the observed
reward range, which can only bring them closer to the truth.
"""

from __future__ import annotations

import numpy as np


def fit_ridge(X: np.ndarray, arms: np.ndarray, reward: np.ndarray, n_arms: int, ridge: float = 1.0) -> np.ndarray:
    """θ of every arm, shape ``(n_arms, d)``; ``arms`` holds each row's arm index."""
    n, d = X.shape
    theta = np.zeros((n_arms, d))
    order = np.argsort(arms, kind="stable")
    bounds = np.searchsorted(arms[order], np.arange(n_arms + 1))
    eye = ridge * np.eye(d)
    for a in range(n_arms):
        rows = order[bounds[a]:bounds[a + 1]]
        if rows.size == 0:
            continue
        Xa = X[rows]
        theta[a] = np.linalg.solve(eye + Xa.T @ Xa, Xa.T @ reward[rows])
    return theta


def cross_fit(X: np.ndarray, arms: np.ndarray, reward: np.ndarray, cand_arm: np.ndarray, n_arms: int, *,
              folds: int = 2, ridge: float = 1.0, seed: int = 0) -> np.ndarray:
    """Cross-fitted ``q̂(x_i, a)`` for every candidate of every impression.

    ``X``: ``(n, d)`` contexts; ``arms``: ``(n,)`` logged arm index; ``reward``: ``(n,)``;
    ``cand_arm``: ``(n, k)`` candidate arm indexes, ``-1`` for padding. Returns ``(n, k)`` (0 in padding).
    """
    if folds < 2:
        raise ValueError("cross-fitting needs at least 2 folds")
    n = X.shape[0]
    fold = np.random.default_rng([seed, 0xCF]).integers(folds, size=n)
    lo, hi = (float(reward.min()), float(reward.max())) if n else (0.0, 0.0)
    q = np.zeros(cand_arm.shape)
    for f in range(folds):
        test = np.flatnonzero(fold == f)
        if test.size == 0:
            continue
        train = fold != f
        theta = fit_ridge(X[train], arms[train], reward[train], n_arms, ridge)
        for start in range(0, test.size, 8192):
            rows = test[start:start + 8192]
            scores = X[rows] @ theta.T  # (rows, n_arms)
            ca = cand_arm[rows]
            got = np.take_along_axis(scores, np.maximum(ca, 0), axis=1)
            q[rows] = np.where(ca >= 0, np.clip(got, lo, hi), 0.0)
    return q
