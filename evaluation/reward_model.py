"""The reward models of the doubly robust estimators: per-arm ridge or logistic regression, cross-fitted.

* ``ridge`` (the default): ``q̂(x, a) = θ_a·x`` with ``θ_a = (λI + Σ x xᵀ)⁻¹ Σ r x`` over the impressions
  that showed ``a``;
* ``logistic``: ``q̂(x, a) = lo + (hi − lo)·σ(θ_a·x)``, ``θ_a`` maximising the (quasi-)binomial
  log-likelihood of the rewards rescaled to [0, 1] (``lo``, ``hi``: the observed reward range) minus
  ``λ|θ_a|²/2``, by Newton's method (IRLS). The right link for clicks (and for any reward in a bounded
  range: the fractional logit of Papke & Wooldridge 1996); the simulator's click model is exactly of
  this form when ``x`` carries a constant.

An arm never shown in the training folds predicts 0 (ridge) or ``lo`` (logistic). **Cross-fitting**:
impressions are split into ``folds`` random folds (seeded); the predictions for a fold come from a model
fitted on the other folds only, so no impression's own reward enters its own ``q̂`` and DR keeps its
unbiasedness whatever the model's quality (Chernozhukov et al. 2018). Predictions are clipped to the
observed reward range, which can only bring them closer to the truth.
"""

from __future__ import annotations

import numpy as np

#: the reward models :func:`cross_fit` can fit
REWARD_MODELS = ("ridge", "logistic")


def _arm_rows(arms: np.ndarray, n_arms: int) -> list[np.ndarray]:
    order = np.argsort(arms, kind="stable")
    bounds = np.searchsorted(arms[order], np.arange(n_arms + 1))
    return [order[bounds[a]:bounds[a + 1]] for a in range(n_arms)]


def fit_ridge(X: np.ndarray, arms: np.ndarray, reward: np.ndarray, n_arms: int, ridge: float = 1.0) -> np.ndarray:
    """θ of every arm, shape ``(n_arms, d)``; ``arms`` holds each row's arm index."""
    d = X.shape[1]
    theta = np.zeros((n_arms, d))
    eye = ridge * np.eye(d)
    for a, rows in enumerate(_arm_rows(arms, n_arms)):
        if rows.size == 0:
            continue
        Xa = X[rows]
        theta[a] = np.linalg.solve(eye + Xa.T @ Xa, Xa.T @ reward[rows])
    return theta


def fit_logistic(X: np.ndarray, arms: np.ndarray, y: np.ndarray, n_arms: int, ridge: float = 1.0,
                 iterations: int = 50, tol: float = 1e-10) -> np.ndarray:
    """θ of every arm, shape ``(n_arms, d)``, of the L2-penalised logistic regression of ``y`` ∈ [0, 1]
    (clicks, or rewards rescaled to [0, 1]) on ``X``: Newton steps on
    ``Σ (y log σ(θ·x) + (1 − y) log(1 − σ(θ·x))) − ridge |θ|²/2`` (concave for ``ridge > 0``: the
    penalty keeps θ finite when an arm's clicks are separable), until the step is below ``tol``."""
    d = X.shape[1]
    theta = np.zeros((n_arms, d))
    eye = ridge * np.eye(d)
    for a, rows in enumerate(_arm_rows(arms, n_arms)):
        if rows.size == 0:
            continue
        Xa, ya = X[rows], y[rows]
        th = np.zeros(d)
        for _ in range(iterations):
            p = 1.0 / (1.0 + np.exp(-(Xa @ th)))
            grad = Xa.T @ (ya - p) - ridge * th
            hess = (Xa * (p * (1.0 - p))[:, None]).T @ Xa + eye
            step = np.linalg.solve(hess, grad)
            th = th + step
            if float(np.abs(step).max()) <= tol * (1.0 + float(np.abs(th).max())):
                break
        theta[a] = th
    return theta


def cross_fit(X: np.ndarray, arms: np.ndarray, reward: np.ndarray, cand_arm: np.ndarray, n_arms: int, *,
              folds: int = 2, ridge: float = 1.0, seed: int = 0, model: str = "ridge") -> np.ndarray:
    """Cross-fitted ``q̂(x_i, a)`` for every candidate of every impression.

    ``X``: ``(n, d)`` contexts; ``arms``: ``(n,)`` logged arm index; ``reward``: ``(n,)``;
    ``cand_arm``: ``(n, k)`` candidate arm indexes, ``-1`` for padding; ``model``: ``"ridge"`` or
    ``"logistic"`` (see the module docstring). Returns ``(n, k)`` (0 in padding).
    """
    if folds < 2:
        raise ValueError("cross-fitting needs at least 2 folds")
    if model not in REWARD_MODELS:
        raise ValueError(f"reward model must be one of {', '.join(REWARD_MODELS)}, got {model!r}")
    n = X.shape[0]
    fold = np.random.default_rng([seed, 0xCF]).integers(folds, size=n)
    lo, hi = (float(reward.min()), float(reward.max())) if n else (0.0, 0.0)
    span = hi - lo
    q = np.zeros(cand_arm.shape)
    for f in range(folds):
        test = np.flatnonzero(fold == f)
        if test.size == 0:
            continue
        train = fold != f
        if model == "logistic":
            y = (reward[train] - lo) / span if span > 0 else np.zeros(int(train.sum()))
            theta = fit_logistic(X[train], arms[train], y, n_arms, ridge)
            seen = np.bincount(arms[train], minlength=n_arms) > 0
        else:
            theta = fit_ridge(X[train], arms[train], reward[train], n_arms, ridge)
        for start in range(0, test.size, 8192):
            rows = test[start:start + 8192]
            scores = X[rows] @ theta.T  # (rows, n_arms)
            if model == "logistic":
                scores = np.where(seen, lo + span / (1.0 + np.exp(-scores)), lo)
            ca = cand_arm[rows]
            got = np.take_along_axis(scores, np.maximum(ca, 0), axis=1)
            q[rows] = np.where(ca >= 0, np.clip(got, lo, hi), 0.0)
    return q
