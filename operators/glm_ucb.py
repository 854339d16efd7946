"""GLM-UCB for clicks: a logistic model per arm with an upper-confidence bonus (UCB-GLM of Li, Lu &
Zhou 2017, "Provably Optimal Algorithms for Generalized Linear Contextual Bandits"; Filippi et al. 2010).

Per arm ``a`` a Laplace posterior ``N(m_a, H_a⁻¹)`` over the weights of ``P(click | x) = σ(w_a·x)``,
starting from ``m = 0`` and the diagonal prior precision ``H₀ = diag(intercept_precision,
prior_precision, …, prior_precision)`` (slot 0 is the featurizer's bias column). Decisions play the
argmax of ``m_a·x + α·sqrt(xᵀ H_a⁻¹ x)`` (the logit's upper confidence bound; ``α = 0`` is greedy),
ties split uniformly: the propensities are exact (1 for a unique argmax, ``1/k`` for a k-way tie).

Learning one example ``(x, y, c)`` (label ``y`` in {0, 1}, weight ``c``) is one Laplace step of
assumed-density filtering: the new mode is the exact minimiser of
``½ (w − m)ᵀ H (w − m) + c·logloss(y, σ(w·x))``, which lies on ``m − s·H⁻¹x`` for a scalar ``s``, so
it is found by a safeguarded one-dimensional Newton solve (``z = w·x``: ``z = m·x − c·v·(σ(z) − y)``,
``v = xᵀH⁻¹x``) instead of a d-dimensional one; then ``H ← H + c·p(1 − p)·x xᵀ`` at the new mode
(``p = σ(z)``) and ``H⁻¹`` is recomputed from ``H``. O(d²) + one d×d inverse per example.

:meth:`GLMUCB.fit_batch` learns a batch in one Laplace update per arm (Newton's method on the whole
batch, as IRLS): from a fresh learner its mode is exactly the MAP of L2-regularised logistic
regression on the batch. The per-event path is the same update one example at a time, an online
approximation of that MAP (it fixes each example's curvature at the mode of its time).

Why a logistic model: with click rates of a few percent, ``p = σ(θ·x + b)`` is far from linear in
``x``, and the argmax of a linear fit (LinUCB's ridge model) differs from the true one by a margin that
does not shrink with data (``benchmarks/regret.py``); the logit is linear, so this model's argmax
converges to the true one — slowly: at 100k steps in ``benchmarks/regret.py``'s world (K=20, d=16)
it is no better than tuned LinUCB, whose local linear fits are good enough there (issue 9). Default
``α = 0.1``: the best of 0.05/0.1/0.15 over 4 seeds at 100k steps (the prior mean 0, ``σ(0) = ½``,
already makes every new arm optimistic until it has been shown enough).

Pending feedback (as :class:`~banditloop.operators.logistic_ts.LogisticTS`): a pending impression is
not learned; a click is learned as a positive example (weight ``r``) when it arrives, the
impression's negative part (weight ``1 − r``) when its window closes (``learn_close``). Rewards are
clipped to [0, 1] by the pipeline (``binary_reward``).

Merge (shards that learned disjoint streams from the same prior): the Gaussian factors multiply,
``H = H_a + H_b − H₀``, ``m = H⁻¹ (H_a m_a + H_b m_b)``: exact for Gaussian likelihood factors, the
standard approximation for Laplace posteriors (``exact_merge = False``).

>>> import numpy as np
>>> glm = GLMUCB(dim=2, alpha=0.0)
>>> for _ in range(50):
...     glm.learn_one("a", np.array([1.0, 0.0]), 1.0)
...     glm.learn_one("b", np.array([1.0, 0.0]), 0.0)
>>> bool(glm.posterior("a")[0][0] > 1.0 > -1.0 > glm.posterior("b")[0][0])
True
>>> glm.choose(np.array([1.0, 0.0]), ["a", "b"]).arm
'a'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from banditloop.operators.base import Learner, Shared
from banditloop.operators.logistic_ts import laplace_update_full, merge_gaussian_full

_TOL = 1e-13
_MAX_STEPS = 100


def _sigmoid(z: float) -> float:
    return 0.5 * (1.0 + float(np.tanh(0.5 * z)))


def mode_on_line(z0: float, v: float, y: float, c: float) -> float:
    """The root of ``z − z0 + c·v·(σ(z) − y) = 0`` (``v ≥ 0``, ``c ≥ 0``, ``y`` in {0, 1}): the logit of
    the new mode at ``x``. The left side increases (slope ≥ 1), and the root lies between ``z0`` and
    ``z0 + c·v·(y − σ(z0))``: Newton's method, safeguarded as in Numerical Recipes' ``rtsafe`` (a
    bisection step whenever Newton's would leave the bracket or shrinks it by less than half)."""
    step0 = c * v * (y - _sigmoid(z0))
    if step0 == 0.0:
        return z0
    lo, hi = (z0, z0 + step0) if step0 > 0 else (z0 + step0, z0)
    z, dx, dx_old = z0, abs(step0), abs(step0)
    for _ in range(_MAX_STEPS):
        p = _sigmoid(z)
        f = z - z0 + c * v * (p - y)
        if f == 0.0:
            return z
        if f > 0:
            hi = z
        else:
            lo = z
        slope = 1.0 + c * v * p * (1.0 - p)
        new = z - f / slope
        if not lo < new < hi or abs(2.0 * f) > abs(dx_old * slope):
            dx_old, dx = dx, 0.5 * (hi - lo)
            new = lo + dx
        else:
            dx_old, dx = dx, abs(f / slope)
        if abs(new - z) <= _TOL * max(1.0, abs(z)):
            return new
        z = new
    return z


class GLMUCB(Learner):
    """Per-arm logistic model (Laplace posterior) with a UCB bonus on the logit; see the module docstring.

    >>> import numpy as np
    >>> glm = GLMUCB(dim=2, alpha=0.1)
    >>> x = np.array([1.0, 0.5])
    >>> for _ in range(30):
    ...     glm.learn_one("a", x, 1.0)
    ...     glm.learn_one("b", x, 0.0)
    >>> d = glm.choose(x, ["a", "b"])
    >>> d.arm, d.propensity
    ('a', 1.0)
    """

    kind = "glm-ucb"
    binary_reward = True
    exact_merge = False
    learns_at_close = True
    #: the inverse of each precision matrix, rebuilt from ``H`` (not saved)
    derived_arrays = ("cov",)

    def __init__(self, dim: int, alpha: float = 0.1, prior_precision: float = 1.0,
                 intercept_precision: float = 1.0, seed: int = 0) -> None:
        if alpha < 0:
            raise ValueError("alpha must be >= 0")
        if not (prior_precision > 0 and intercept_precision > 0):
            raise ValueError("prior_precision and intercept_precision must be > 0")
        self.alpha = float(alpha)
        self.prior_precision = float(prior_precision)
        self.intercept_precision = float(intercept_precision)
        super().__init__(dim, seed)

    def prior(self) -> np.ndarray:
        """The prior precision matrix ``H₀`` (slot 0: ``intercept_precision``)."""
        diag = np.full(self.dim, self.prior_precision)
        diag[0] = self.intercept_precision
        return np.diag(diag)

    def _arm_arrays(self):
        d = self.dim
        H0 = self.prior()
        return {"m": ((d,), 0.0), "H": ((d, d), H0), "cov": ((d, d), np.linalg.inv(H0))}

    def _on_load(self) -> None:
        n = len(self.arms)
        if n:
            self._arrays["cov"][:n] = np.linalg.inv(self._arrays["H"][:n])

    def posterior(self, arm: str) -> tuple[np.ndarray, np.ndarray]:
        """Mode ``m_a`` and precision matrix ``H_a``."""
        r = self.arm_index[arm]
        return self._arrays["m"][r].copy(), self._arrays["H"][r].copy()

    # -- decisions --------------------------------------------------------------------------------
    def score(self, x: np.ndarray, candidates: Sequence[str], shared: Shared = None) -> np.ndarray:
        rows = self._rows(candidates)
        x = np.asarray(x, dtype=float)
        mean = self._arrays["m"][rows] @ x
        if self.alpha == 0.0:
            return mean
        var = (self._arrays["cov"][rows] @ x) @ x
        return mean + self.alpha * np.sqrt(np.maximum(var, 0.0))

    def predict(self, arm: str, x: np.ndarray) -> float:
        """``σ(m_a·x)``: the click probability at the posterior mode."""
        return _sigmoid(float(self._arrays["m"][self.add_arm(arm)] @ np.asarray(x, dtype=float)))

    # -- learning ---------------------------------------------------------------------------------
    def _learn_example(self, r: int, x: np.ndarray, y: float, c: float) -> None:
        m, H, cov = self._arrays["m"][r], self._arrays["H"][r], self._arrays["cov"][r]
        Sx = cov @ x
        v = float(x @ Sx)
        z0 = float(m @ x)
        z = mode_on_line(z0, v, y, c)
        p = _sigmoid(z)
        m -= (c * (p - y)) * Sx
        H += (c * p * (1.0 - p)) * np.outer(x, x)
        cov[...] = np.linalg.inv(H)

    def learn_impression(self, arm: str, x: np.ndarray, shared: np.ndarray | None = None) -> None:
        self.add_arm(arm)
        self._count(impressions=1.0)

    def learn_reward(self, arm: str, x: np.ndarray, reward: float, shared: np.ndarray | None = None) -> None:
        r = self.add_arm(arm)
        self._count(reward=reward, rewarded=1.0)
        if reward > 0:
            self._learn_example(r, np.asarray(x, dtype=float), 1.0, float(reward))

    def learn_close(self, arm: str, x: np.ndarray | None, reward: float, shared: np.ndarray | None = None) -> None:
        r = self.add_arm(arm)
        if reward < 1.0:
            self._learn_example(r, np.asarray(x, dtype=float), 0.0, 1.0 - float(reward))

    def fit_batch(self, arms: Sequence[str], X: np.ndarray, rewards: np.ndarray) -> None:
        """Learn outcomes known at once (impressions whose windows closed) in one Laplace update per arm:
        Newton's method to the exact mode of prior × the batch's likelihood. From a fresh learner the
        mode is the MAP of L2-regularised logistic regression (penalty ``½ wᵀH₀w``) on the batch, as
        IRLS computes it. Not the same as ``learn_one`` row by row (which is an online approximation)."""
        X = np.asarray(X, dtype=float)
        rewards = np.clip(np.asarray(rewards, dtype=float), 0.0, 1.0)
        rows = self.rows_of(list(arms))
        m, H = self._arrays["m"], self._arrays["H"]
        for r in np.unique(rows):
            sel = rows == r
            Xr, rr = X[sel], rewards[sel]
            pos, neg = rr > 0, rr < 1
            Xb = np.concatenate([Xr[pos], Xr[neg]])
            y = np.concatenate([np.ones(int(pos.sum())), np.zeros(int(neg.sum()))])
            c = np.concatenate([rr[pos], 1.0 - rr[neg]])
            m[r], H[r] = laplace_update_full(m[r], H[r], Xb, y, c)
            self._arrays["cov"][r] = np.linalg.inv(H[r])
        self._count(impressions=float(len(rows)), reward=float(rewards.sum()),
                    rewarded=float(np.count_nonzero(rewards)))

    # -- merge ------------------------------------------------------------------------------------
    def merge(self, other: Learner) -> Learner:
        if not isinstance(other, GLMUCB) or other.dim != self.dim:
            raise ValueError("can only merge learners of the same kind and dimension")
        return Learner.merge(self, other)

    def _merge_arrays(self, rows: np.ndarray, theirs: Mapping[str, np.ndarray], other: Learner) -> None:
        # (prior mean 0) the covariances are rebuilt by _on_load
        merge_gaussian_full(self._arrays["m"], self._arrays["H"], rows, theirs["m"], theirs["H"], self.prior())
