"""Logistic Thompson sampling with a Laplace (diagonal Gaussian) posterior: Chapelle & Li (2011),
"An Empirical Evaluation of Thompson Sampling", Algorithm 3 — the display-ads learner of that paper.

Per arm ``a`` a posterior ``w_a ~ N(m_a, diag(1/q_a))`` over the weights of a logistic click model
``P(click | x) = σ(w_a·x)``, starting from ``m = 0``, ``q = prior_precision``. The examples learned
since the last update are kept in a buffer; every ``update_every`` examples the buffer is learned
(per arm) as in Algorithm 3:

* ``m_a ← argmin_w ½ Σ_i q_ai (w_i − m_ai)² + Σ_j c_j log(1 + exp(−y_j w·x_j))`` (Newton's method),
* ``q_ai ← q_ai + Σ_j c_j x_ji² p_j (1 − p_j)`` with ``p_j = σ(m_a·x_j)`` at the new mode,

so after a first update the mode is exactly the MAP of L2-regularised logistic regression (penalty
``prior_precision/2 · |w|²``) on the buffered batch.

``covariance="full"`` keeps a full precision matrix per arm instead (``Q_a``, starting at
``prior_precision · I``): the same Newton step with ``½ (w − m)ᵀ Q (w − m)`` as the prior term, then
``Q_a ← Q_a + Σ_j c_j p_j (1 − p_j) x_j x_jᵀ``, and draws ``w_a·x ~ N(m_a·x, xᵀ Q_a⁻¹ x)``. The
diagonal form (the paper's, for 2²⁴ hashed features) forgets the correlations between weights, so
with a bias column every example also shrinks the variance of the other weights as if they were
independent of it; with tens of dense features the full form costs little more (d×d per arm) and
explores where the posterior is really uncertain (``benchmarks/regret.py``: lower regret in the
logistic-click world). After a first batch its mode is the same MAP. ``update_every = 1`` (default) is the online
version (one Laplace step per example); a larger value is the paper's batch refresh and costs less.

Decisions: one draw per arm of ``w_a·x``, which is exactly ``N(m_a·x, Σ_i x_i²/q_ai)`` (scaled by
``exploration``, 1 = the posterior itself); play the argmax. The propensity is estimated by Monte
Carlo over ``propensity_draws`` joint draws (:class:`~banditloop.operators.base.SampledPolicy`).

Pending feedback: a pending impression is not learned at all. A click is learned as a positive
example (weight ``r``) when it arrives, and the impression's negative part (weight ``1 − r``) when its
feedback window closes (``learn_close``), so an impression is never a failure while it may still be
clicked. Rewards are clipped to [0, 1] by the pipeline (``binary_reward``).

Merge (shards that learned disjoint streams from the same prior): both buffers are learned first,
then the Gaussian factors multiply: ``q = q_a + q_b − q₀`` and ``m = (q_a m_a + q_b m_b − q₀ m₀)/q``
per coordinate (with ``covariance="full"``: ``Q = Q_a + Q_b − Q₀``, ``m = Q⁻¹(Q_a m_a + Q_b m_b)``).
This is exact for Gaussian likelihood factors and the standard approximation for Laplace posteriors
(``exact_merge = False``).

>>> import numpy as np
>>> ts = LogisticTS(dim=2, prior_precision=1.0, propensity_draws=0)
>>> for _ in range(50):
...     ts.learn_one("a", np.array([1.0, 0.0]), 1.0)
...     ts.learn_one("b", np.array([1.0, 0.0]), 0.0)
>>> bool(ts.posterior("a")[0][0] > 1.0 > -1.0 > ts.posterior("b")[0][0])
True
>>> ts.choose(np.array([1.0, 0.0]), ["a", "b"]).arm
'a'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from banditloop.operators.base import Learner, Shared
from banditloop.operators.policies import SampledPolicy

#: Newton's method stops when the largest step is below this, or after ``_MAX_NEWTON`` steps
_NEWTON_TOL = 1e-12
_MAX_NEWTON = 100


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def laplace_update(m: np.ndarray, q: np.ndarray, X: np.ndarray, y: np.ndarray,
                   c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One Laplace update of a diagonal Gaussian ``N(m, diag(1/q))`` with weighted logistic examples
    (rows ``X``, labels ``y`` in {0, 1}, weights ``c``): the new mode (Newton's method on the exact
    objective) and precision; see the module docstring."""
    w = m.copy()
    for _ in range(_MAX_NEWTON):
        p = _sigmoid(X @ w)
        grad = q * (w - m) + X.T @ (c * (p - y))
        hess = np.diag(q) + (X.T * (c * p * (1.0 - p))) @ X
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < _NEWTON_TOL:
            break
    p = _sigmoid(X @ w)
    return w, q + (X * X).T @ (c * p * (1.0 - p))


def merge_gaussian_full(m: np.ndarray, Q: np.ndarray, rows: np.ndarray, their_m: np.ndarray, their_Q: np.ndarray,
                        prior_Q: np.ndarray) -> None:
    """Multiply the Gaussian factors of two shards' posteriors (same prior ``N(0, prior_Q⁻¹)``), in place
    on ``rows``: ``Q = Q_a + Q_b − Q₀``, ``m = Q⁻¹ (Q_a m_a + Q_b m_b)``."""
    Q_new = Q[rows] + their_Q - prior_Q
    rhs = np.einsum("kij,kj->ki", Q[rows], m[rows]) + np.einsum("kij,kj->ki", their_Q, their_m)
    m[rows] = np.linalg.solve(Q_new, rhs[..., None])[..., 0]
    Q[rows] = Q_new


def laplace_update_full(m: np.ndarray, Q: np.ndarray, X: np.ndarray, y: np.ndarray,
                        c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`laplace_update` with a full prior precision matrix ``Q``: the new mode and precision."""
    w = m.copy()
    for _ in range(_MAX_NEWTON):
        p = _sigmoid(X @ w)
        grad = Q @ (w - m) + X.T @ (c * (p - y))
        step = np.linalg.solve(Q + (X.T * (c * p * (1.0 - p))) @ X, grad)
        w -= step
        if np.max(np.abs(step)) < _NEWTON_TOL:
            break
    p = _sigmoid(X @ w)
    return w, Q + (X.T * (c * p * (1.0 - p))) @ X


#: posterior forms: a diagonal Gaussian (the paper's) or a full one
COVARIANCES = ("diag", "full")


class LogisticTS(SampledPolicy, Learner):
    """Logistic Thompson sampling, Laplace diagonal posterior per arm; see the module docstring.

    >>> import numpy as np
    >>> lts = LogisticTS(dim=2, seed=1)
    >>> x = np.array([1.0, 0.5])
    >>> for _ in range(30):
    ...     lts.learn_one("a", x, 1.0)
    ...     lts.learn_one("b", x, 0.0)
    >>> lts.choose(x, ["a", "b"]).arm
    'a'
    """

    kind = "logistic-ts"
    binary_reward = True
    exact_merge = False
    learns_at_close = True
    #: ``covariance="full"``: the inverse of each precision matrix, rebuilt from ``Q`` (not saved)
    derived_arrays = ("cov",)

    def __init__(self, dim: int, prior_precision: float = 1.0, update_every: int = 1, exploration: float = 1.0,
                 propensity_draws: int = 256, covariance: str = "diag", seed: int = 0) -> None:
        if not prior_precision > 0:
            raise ValueError("prior_precision must be > 0")
        if update_every < 1:
            raise ValueError("update_every must be >= 1")
        if exploration < 0:
            raise ValueError("exploration must be >= 0")
        if covariance not in COVARIANCES:
            raise ValueError(f"covariance must be one of {COVARIANCES}, got {covariance!r}")
        self.covariance = covariance
        self.prior_precision = float(prior_precision)
        self.update_every = int(update_every)
        self.exploration = float(exploration)
        self.propensity_draws = int(propensity_draws)
        super().__init__(dim, seed)

    def _arm_arrays(self):
        d = self.dim
        if self.covariance == "full":
            return {"m": ((d,), 0.0), "Q": ((d, d), self.prior_precision * np.eye(d)),
                    "cov": ((d, d), np.eye(d) / self.prior_precision)}
        return {"m": ((d,), 0.0), "q": ((d,), self.prior_precision)}

    def _on_load(self) -> None:
        if self.covariance == "full":
            n = len(self.arms)
            self._arrays["cov"][:n] = np.linalg.inv(self._arrays["Q"][:n])

    def _global_arrays(self):
        # buffered examples, one row each: arm row, label, weight, x; and how many rows are in use
        return {"buffer": ((self.update_every, self.dim + 3), 0.0), "buffered": ((1,), 0.0)}

    def posterior(self, arm: str) -> tuple[np.ndarray, np.ndarray]:
        """Mode ``m_a`` and precisions ``q_a`` — the precision matrix ``Q_a`` with ``covariance="full"``
        (of the updates so far; buffered examples not yet in)."""
        r = self.arm_index[arm]
        return self._arrays["m"][r].copy(), self._arrays["Q" if self.covariance == "full" else "q"][r].copy()

    # -- decisions --------------------------------------------------------------------------------
    def _moments(self, x: np.ndarray, candidates: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        rows = self._rows(candidates)
        x = np.asarray(x, dtype=float)
        mean = self._arrays["m"][rows] @ x
        if self.covariance == "full":
            var = np.einsum("kij,i,j->k", self._arrays["cov"][rows], x, x)
        else:
            var = (x * x) @ (1.0 / self._arrays["q"][rows]).T
        return mean, self.exploration * np.sqrt(var)

    def score(self, x: np.ndarray, candidates: Sequence[str], shared: Shared = None) -> np.ndarray:
        mean, sd = self._moments(x, candidates)
        return mean + sd * self.rng.standard_normal(len(candidates))

    def _draws(self, x: np.ndarray, candidates: Sequence[str], n: int) -> np.ndarray:
        mean, sd = self._moments(x, candidates)
        return mean + sd * self.rng.standard_normal((n, len(candidates)))

    def predict(self, arm: str, x: np.ndarray) -> float:
        """``σ(m_a·x)``: the click probability at the posterior mode."""
        return float(_sigmoid(np.asarray(self._arrays["m"][self.add_arm(arm)] @ x)))

    # -- learning ---------------------------------------------------------------------------------
    def _add_example(self, row: int, x: np.ndarray, label: float, weight: float) -> None:
        buf, used = self._globals["buffer"], self._globals["buffered"]
        i = int(used[0])
        buf[i, 0], buf[i, 1], buf[i, 2] = row, label, weight
        buf[i, 3:] = x
        used[0] = i + 1
        if i + 1 >= self.update_every:
            self.flush()

    def flush(self) -> None:
        """Learn the buffered examples now (per arm, one Laplace update each)."""
        used = int(self._globals["buffered"][0])
        if not used:
            return
        buf = self._globals["buffer"][:used]
        rows = buf[:, 0].astype(np.intp)
        m = self._arrays["m"]
        for r in np.unique(rows):
            sel = rows == r
            if self.covariance == "full":
                Q = self._arrays["Q"]
                m[r], Q[r] = laplace_update_full(m[r], Q[r], buf[sel, 3:], buf[sel, 1], buf[sel, 2])
                self._arrays["cov"][r] = np.linalg.inv(Q[r])
            else:
                q = self._arrays["q"]
                m[r], q[r] = laplace_update(m[r], q[r], buf[sel, 3:], buf[sel, 1], buf[sel, 2])
        self._globals["buffer"][:] = 0.0
        self._globals["buffered"][0] = 0.0

    def learn_impression(self, arm: str, x: np.ndarray, shared: np.ndarray | None = None) -> None:
        self.add_arm(arm)
        self._count(impressions=1.0)

    def learn_reward(self, arm: str, x: np.ndarray, reward: float, shared: np.ndarray | None = None) -> None:
        r = self.add_arm(arm)
        self._count(reward=reward, rewarded=1.0)
        if reward > 0:
            self._add_example(r, np.asarray(x, dtype=float), 1.0, float(reward))

    def learn_close(self, arm: str, x: np.ndarray | None, reward: float, shared: np.ndarray | None = None) -> None:
        r = self.add_arm(arm)
        if reward < 1.0:
            self._add_example(r, np.asarray(x, dtype=float), 0.0, 1.0 - float(reward))

    # -- merge ------------------------------------------------------------------------------------
    def merge(self, other: Learner) -> Learner:
        if not isinstance(other, LogisticTS) or other.dim != self.dim:
            raise ValueError("can only merge learners of the same kind and dimension")
        mine = LogisticTS.from_state(self.export_state())
        theirs = LogisticTS.from_state(other.export_state())
        assert isinstance(mine, LogisticTS) and isinstance(theirs, LogisticTS)
        mine.flush()
        theirs.flush()
        return Learner.merge(mine, theirs)

    def _merge_arrays(self, rows: np.ndarray, theirs: Mapping[str, np.ndarray], other: Learner) -> None:
        if self.covariance == "full":  # (m₀ = 0) the covariances are rebuilt by _on_load
            merge_gaussian_full(self._arrays["m"], self._arrays["Q"], rows, theirs["m"], theirs["Q"],
                                self.prior_precision * np.eye(self.dim))
            return
        m, q, q0 = self._arrays["m"], self._arrays["q"], self.prior_precision
        q_new = q[rows] + theirs["q"] - q0
        m[rows] = (q[rows] * m[rows] + theirs["q"] * theirs["m"]) / q_new
        q[rows] = q_new
