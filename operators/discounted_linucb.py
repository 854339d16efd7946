"""Discounted LinUCB, D-LinUCB (Russac, Vernade & Cappé 2019, "Weighted Linear Bandits for
Non-Stationary Environments", Algorithm 1), one model per arm.

Per arm, with the discount γ applied after each learned outcome (as in
:mod:`banditloop.operators.beta_ts`: the outcome learned ``k`` outcomes ago weighs ``γᵏ``):
``V = λI + Σ γᵏ x xᵀ``, ``Ṽ = λI + Σ γ²ᵏ x xᵀ``, ``b = Σ γᵏ r x``, ``θ = V⁻¹ b`` and the score
``θ·x + α·sqrt(xᵀ V⁻¹ Ṽ V⁻¹ x)`` (the paper's confidence ellipsoid; ``α`` plays the role of its
``β``, scaled for click rewards as in :mod:`banditloop.operators.linucb`).

Pending feedback: an impression is learned when its window closes (``learn_close``, with its final
reward), so the weighted regression never takes a pending impression for a 0.

Choosing γ: the memory ``1/(1-γ)`` outcomes (over all arms) must hold enough observations per arm
to fit ``dim`` coefficients (say ``≥ 20·K·dim``) and be shorter than the time over which the click
model moves; Russac et al. take ``γ = 1 - (Υ/(dT))^{2/3}`` for ``Υ`` changes in ``T`` steps.

Merge adds the discounted statistics of the shards as they stand (not exact).

>>> import numpy as np
>>> ucb = DiscountedLinUCB(dim=2, discount=0.5)
>>> ucb.learn_one("a", np.array([1.0, 0.0]), 1.0); ucb.learn_one("b", np.array([1.0, 0.0]), 0.0)
>>> ucb.statistics("a")[2].tolist()  # b of arm a: one click, aged by two outcomes
[0.25, 0.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from banditloop.operators.base import Learner, Shared


class DiscountedLinUCB(Learner):
    """Discounted LinUCB for drifting click models (Russac, Vernade & Cappé 2019); see the module docstring.

    >>> import numpy as np
    >>> lin = DiscountedLinUCB(dim=2, discount=0.99)
    >>> x = np.array([1.0, 0.5])
    >>> for _ in range(30):
    ...     lin.learn_one("a", x, 1.0)
    ...     lin.learn_one("b", x, 0.0)
    >>> lin.choose(x, ["a", "b"]).arm
    'a'
    """

    kind = "discounted-linucb"
    exact_merge = False
    learns_at_close = True
    additive_arrays = ("v", "v2", "b", "n")

    def __init__(self, dim: int, alpha: float = 0.2, ridge: float = 1.0, discount: float = 0.999,
                 seed: int = 0) -> None:
        if ridge <= 0:
            raise ValueError("ridge must be > 0")
        if not 0.0 < discount <= 1.0:
            raise ValueError("discount must be in (0, 1]")
        if alpha < 0:
            raise ValueError("alpha must be >= 0")
        self.alpha = float(alpha)
        self.ridge = float(ridge)
        self.discount = float(discount)
        self._cache: tuple[np.ndarray, np.ndarray] | None = None
        super().__init__(dim, seed)

    def _arm_arrays(self):
        d = self.dim
        return {"v": ((d, d), 0.0), "v2": ((d, d), 0.0), "b": ((d,), 0.0), "n": ((), 0.0)}

    def statistics(self, arm: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Discounted ``Σ γᵏ xxᵀ``, ``Σ γ²ᵏ xxᵀ`` and ``Σ γᵏ r x`` of ``arm`` (without ``λI``)."""
        r = self.arm_index[arm]
        a = self._arrays
        return a["v"][r].copy(), a["v2"][r].copy(), a["b"][r].copy()

    def _changed(self) -> None:
        self._cache = None

    def _on_load(self) -> None:
        self._changed()

    def _on_resize(self) -> None:
        self._changed()

    def _model(self) -> tuple[np.ndarray, np.ndarray]:
        """θ and ``V⁻¹ṼV⁻¹`` of every arm (cached until the next outcome)."""
        if self._cache is None:
            n, a, eye = len(self.arms), self._arrays, self.ridge * np.eye(self.dim)
            vinv = np.linalg.inv(a["v"][:n] + eye)
            theta = (vinv @ a["b"][:n][..., None])[..., 0]
            self._cache = (theta, vinv @ (a["v2"][:n] + eye) @ vinv)
        return self._cache

    def score(self, x: np.ndarray, candidates: Sequence[str], shared: Shared = None) -> np.ndarray:
        rows = self._rows(candidates)
        theta, width = self._model()
        x = np.asarray(x, dtype=float)
        var = (width[rows] @ x) @ x
        return theta[rows] @ x + self.alpha * np.sqrt(np.maximum(var, 0.0))

    def learn_impression(self, arm: str, x: np.ndarray, shared: np.ndarray | None = None) -> None:
        self.add_arm(arm)
        self._count(impressions=1.0)

    def learn_reward(self, arm: str, x: np.ndarray, reward: float, shared: np.ndarray | None = None) -> None:
        self.add_arm(arm)
        self._count(reward=reward, rewarded=1.0)  # learned with the close, with the final reward

    def learn_close(self, arm: str, x: np.ndarray | None, reward: float, shared: np.ndarray | None = None) -> None:
        r = self.add_arm(arm)
        x = np.asarray(x, dtype=float)
        a, n, g = self._arrays, len(self.arms), self.discount
        xx = np.outer(x, x)
        a["v"][r] += xx
        a["v2"][r] += xx
        a["b"][r] += reward * x
        a["n"][r] += 1.0
        if g < 1.0:  # every statistic ages by one outcome
            a["v"][:n] *= g
            a["b"][:n] *= g
            a["n"][:n] *= g
            a["v2"][:n] *= g * g
        self._changed()

    def learn_batch(self, arms: Sequence[str], X: np.ndarray, rewards: np.ndarray,
                    shared: np.ndarray | None = None) -> None:
        rows = self.rows_of(arms)
        X = np.asarray(X, dtype=float)
        rewards = np.asarray(rewards, dtype=float)
        a, n, g, m = self._arrays, len(self.arms), self.discount, len(rows)
        w = g ** np.arange(m, 0, -1, dtype=float)  # row i (of m) ages m - i times
        for name, factor in (("v", g**m), ("b", g**m), ("n", g**m), ("v2", g ** (2 * m))):
            a[name][:n] *= factor
        for r in np.unique(rows):
            sel = rows == r
            Xr, wr = X[sel], w[sel]
            a["v"][r] += (Xr.T * wr) @ Xr
            a["v2"][r] += (Xr.T * (wr * wr)) @ Xr
            a["b"][r] += (wr * rewards[sel]) @ Xr
            a["n"][r] += wr.sum()
        self._count(impressions=float(m), reward=float(rewards.sum()), rewarded=float(np.count_nonzero(rewards)))
        self._changed()
