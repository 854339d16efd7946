"""Diag-LinUCB: LinUCB with a diagonal design matrix ("Online Matching", YouTube 2023).

Per arm and dimension: ``d ← d + x²``, ``b ← b + r·x``; ``θ = b / (λ + d)`` and the score is
``θ·x + α·sqrt(Σ x² / (λ + d))``. Every statistic is a plain sum, so learning is O(d) per event, a
batch is a scatter-add, and shards merge exactly by addition.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from banditloop.operators.base import Learner, Shared


class DiagLinUCB(Learner):
    """LinUCB with a diagonal design matrix per arm: O(d) per event (module docstring).

    >>> import numpy as np
    >>> lin = DiagLinUCB(dim=2, alpha=0.2)
    >>> x = np.array([1.0, 0.5])
    >>> for _ in range(30):
    ...     lin.learn_one("a", x, 1.0)
    ...     lin.learn_one("b", x, 0.0)
    >>> lin.choose(x, ["a", "b"]).arm
    'a'
    """

    kind = "diag-linucb"
    weighted_updates = True
    additive_arrays = ("d", "b", "n")

    def __init__(self, dim: int, alpha: float = 1.0, ridge: float = 1.0, seed: int = 0) -> None:
        if ridge <= 0:
            raise ValueError("ridge must be > 0")
        self.alpha = float(alpha)
        self.ridge = float(ridge)
        super().__init__(dim, seed)

    def _arm_arrays(self):
        return {"d": ((self.dim,), 0.0), "b": ((self.dim,), 0.0), "n": ((), 0.0)}

    def theta(self, arm: str) -> np.ndarray:
        r = self.arm_index[arm]
        return self._arrays["b"][r] / (self.ridge + self._arrays["d"][r])

    def _on_resize(self) -> None:
        # direct references to the per-arm arrays for the per-event paths (re-bound when they grow)
        self._d, self._b, self._n = self._arrays["d"], self._arrays["b"], self._arrays["n"]

    def score(self, x: np.ndarray, candidates: Sequence[str], shared: Shared = None) -> np.ndarray:
        rows = self._row_index(candidates)
        inv = 1.0 / (self.ridge + self._d[rows])
        return (self._b[rows] * inv) @ x + self.alpha * np.sqrt(inv @ (x * x))

    def learn_impression(self, arm: str, x: np.ndarray, shared: np.ndarray | None = None) -> None:
        r = self.arm_index.get(arm)
        if r is None:
            r = self.add_arm(arm)
        d = self._d[r]  # augmenting the view, not self._d[r] += ..., skips a copy back
        d += x * x
        self._n[r] += 1.0
        self.counters["impressions"] += 1.0  # self._count(impressions=1.0), inlined

    def learn_reward(self, arm: str, x: np.ndarray, reward: float, shared: np.ndarray | None = None) -> None:
        r = self.add_arm(arm)
        self._arrays["b"][r] += reward * x
        self._count(reward=reward, rewarded=1.0)

    def learn_sequence(self, kinds: np.ndarray, rows: np.ndarray, X: np.ndarray | None, values: np.ndarray) -> bool:
        """``learn_impression`` (kind 0) and ``learn_reward`` (1, ``values`` = increment) for arm rows
        ``rows`` (from ``rows_of``) and contexts ``X`` in this order, bit for bit: ``np.add.at`` adds each
        statistic's terms in sequence (``learn_close`` learns nothing here)."""
        assert X is not None
        seen = kinds == 0
        rewarded = kinds == 1
        r, Xs = rows[seen], X[seen]
        np.add.at(self._d, r, Xs * Xs)
        np.add.at(self._n, r, 1.0)
        np.add.at(self._b, rows[rewarded], values[rewarded][:, None] * X[rewarded])
        c = self.counters
        c["impressions"] += float(r.size)  # sums of 1.0: exact
        reward_sum = c["reward_sum"]
        for reward in values[rewarded].tolist():
            reward_sum += reward
        c["reward_sum"] = reward_sum
        c["rewards"] += float(np.count_nonzero(rewarded))
        return True

    def learn_batch(self, arms: Sequence[str], X: np.ndarray, rewards: np.ndarray,
                    shared: np.ndarray | None = None) -> None:
        rows = self.rows_of(arms)
        self.learn_batch_rows(rows, np.asarray(X, dtype=float), np.asarray(rewards, dtype=float))

    def learn_batch_rows(self, rows: np.ndarray, X: np.ndarray, rewards: np.ndarray) -> None:
        """``learn_batch`` for arms already mapped to rows (see ``rows_of``): the fast path for logs."""
        n = len(self.arms)
        a = self._arrays
        a["d"][:n] += _group_sum(rows, X * X, n)
        a["b"][:n] += _group_sum(rows, X * rewards[:, None], n)
        a["n"][:n] += np.bincount(rows, minlength=n)
        self._count(impressions=float(len(rows)), reward=float(rewards.sum()),
                    rewarded=float(np.count_nonzero(rewards)))


def _group_sum(rows: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Row sums of ``values`` grouped by ``rows`` (a scatter-add that is faster than ``np.add.at``)."""
    out = np.empty((n, values.shape[1]))
    for j in range(values.shape[1]):
        out[:, j] = np.bincount(rows, weights=values[:, j], minlength=n)
    return out
