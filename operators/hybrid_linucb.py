"""Hybrid LinUCB (Li, Chu, Langford & Schapire 2010, Algorithm 2).

The expected reward of arm ``a`` is ``zᵀβ + xᵀθ_a``: ``z`` (length ``shared_dim``) holds features of
the arm crossed with the context whose coefficients ``β`` are shared by all arms, ``x`` (length
``dim``) the context, with per-arm coefficients ``θ_a``.

**State: raw additive sums only.** Per arm ``xtx = Σxxᵀ``, ``xtz = Σxzᵀ`` (``B_a``), ``xty = Σrx``
(``b_a``), ``n``; shared by all arms ``ztz = Σzzᵀ`` and ``zty = Σrz``. With ``A_a = λI + xtx_a``::

    A0 = I + Σzzᵀ − Σ_a B_aᵀ A_a⁻¹ B_a          b0 = Σrz − Σ_a B_aᵀ A_a⁻¹ b_a
    β  = A0⁻¹ b0                                 θ_a = A_a⁻¹ (b_a − B_a β)

which is exactly what Algorithm 2's incremental updates of ``A0``/``b0`` maintain (they add and remove
each arm's ``B_aᵀA_a⁻¹B_a`` around its update). Storing the sums instead of ``A0`` makes two shards
merge exactly by addition, which ``A0`` itself does not (its correction term is not additive).
``β`` and ``θ_a`` are the joint ridge-regression solution on design rows ``[z, x in arm a's block]``
with penalty ``‖β‖² + λ Σ_a ‖θ_a‖²`` (identity prior on ``β`` as in the paper; ``λ = 1`` there).

The UCB width of Algorithm 2 simplifies, with ``v = B_aᵀ A_a⁻¹ x``, to
``s = (z − v)ᵀ A0⁻¹ (z − v) + xᵀ A_a⁻¹ x`` and the mean to ``xᵀA_a⁻¹b_a + (z − v)ᵀβ``.

**Caches.** Per arm ``A_a⁻¹`` (Sherman–Morrison updates), ``A_a⁻¹B_a``, ``A_a⁻¹b_a`` and the arm's
contributions ``B_aᵀA_a⁻¹B_a``, ``B_aᵀA_a⁻¹b_a``; their sums are kept current by replacing the updated
arm's contribution. ``A0⁻¹`` and ``β`` are rebuilt (one ``shared_dim``-sized inversion) only when
something changed since the last score, so scoring many requests between updates costs
``O(K(d² + dk + k²))`` with no inversion. Everything is recomputed exactly every ``refresh_every``
updates of an arm (and the sums every ``refresh_every`` updates overall), on import and on merge.

``shared``: in ``score``/``choose`` a mapping arm -> ``z``; in ``learn_impression``/``learn_reward``/
``learn_one`` the ``z`` of that arm; in ``learn_batch`` an ``(n, shared_dim)`` matrix aligned with ``X``.
It is required (``ValueError`` when missing).

Default ``alpha = 0.2``: the posterior width for unit noise, rescaled to the noise of click rewards
(Bernoulli with rates of a few percent, standard deviation about 0.2); see :mod:`banditloop.operators.linucb`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from banditloop.operators.base import Learner, Shared


class HybridLinUCB(Learner):
    """Hybrid LinUCB (Li et al. 2010, Alg. 2): per-arm ``θ_a`` plus a shared ``β`` on context × arm features.

    >>> import numpy as np
    >>> lin = HybridLinUCB(dim=2, shared_dim=2, alpha=0.2)
    >>> x, z = np.array([1.0, 0.5]), {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0])}
    >>> for _ in range(30):
    ...     lin.learn_one("a", x, 1.0, z["a"])
    ...     lin.learn_one("b", x, 0.0, z["b"])
    >>> lin.choose(x, ["a", "b"], z).arm
    'a'
    """

    kind = "hybrid-linucb"
    weighted_updates = True
    shared_features = True
    additive_arrays = ("xtx", "xtz", "xty", "n", "ztz", "zty")
    derived_arrays = ("ainv", "ainv_b", "ainv_y", "bab", "bay", "since_refresh")

    def __init__(self, dim: int, shared_dim: int | None = None, alpha: float = 0.2, ridge: float = 1.0,
                 refresh_every: int = 1000, seed: int = 0) -> None:
        if ridge <= 0:
            raise ValueError("ridge must be > 0")
        self.shared_dim = int(dim if shared_dim is None else shared_dim)
        if self.shared_dim < 1:
            raise ValueError("shared_dim must be >= 1")
        self.alpha = float(alpha)
        self.ridge = float(ridge)
        self.refresh_every = int(refresh_every)
        super().__init__(dim, seed)
        k = self.shared_dim
        self._bab_sum = np.zeros((k, k))  # Σ_a B_aᵀ A_a⁻¹ B_a
        self._bay_sum = np.zeros(k)  # Σ_a B_aᵀ A_a⁻¹ b_a
        self._a0inv = np.eye(k)
        self._beta = np.zeros(k)
        self._stale = False  # A0⁻¹ / β out of date
        self._since_sum_refresh = 0

    def _arm_arrays(self):
        d, k = self.dim, self.shared_dim
        return {
            "xtx": ((d, d), 0.0),
            "xtz": ((d, k), 0.0),
            "xty": ((d,), 0.0),
            "n": ((), 0.0),
            "ainv": ((d, d), np.eye(d) / self.ridge),
            "ainv_b": ((d, k), 0.0),
            "ainv_y": ((d,), 0.0),
            "bab": ((k, k), 0.0),
            "bay": ((k,), 0.0),
            "since_refresh": ((), 0.0),
        }

    def _global_arrays(self):
        k = self.shared_dim
        return {"ztz": ((k, k), 0.0), "zty": ((k,), 0.0)}

    # -- model ----------------------------------------------------------------------------------
    def _shared_model(self) -> tuple[np.ndarray, np.ndarray]:
        """``A0⁻¹`` and ``β``, rebuilt only when the state changed since the last call."""
        if self._stale:
            g = self._globals
            a0 = np.eye(self.shared_dim) + g["ztz"] - self._bab_sum
            a0 = 0.5 * (a0 + a0.T)
            self._a0inv = np.linalg.inv(a0)
            self._beta = np.linalg.solve(a0, g["zty"] - self._bay_sum)
            self._stale = False
        return self._a0inv, self._beta

    def beta(self) -> np.ndarray:
        """The shared coefficients ``β``."""
        return self._shared_model()[1].copy()

    def theta(self, arm: str) -> np.ndarray:
        """The coefficients ``θ_a = A_a⁻¹(b_a − B_a β)`` of ``arm``."""
        beta = self._shared_model()[1]
        r = self.arm_index[arm]
        return self._arrays["ainv_y"][r] - self._arrays["ainv_b"][r] @ beta

    def _refresh(self, rows: np.ndarray) -> None:
        """Recompute the per-arm caches of ``rows`` exactly and swap their contributions in the sums."""
        a = self._arrays
        A = a["xtx"][rows] + self.ridge * np.eye(self.dim)
        B = a["xtz"][rows]
        a["ainv"][rows] = np.linalg.inv(A)
        ainv_b = np.linalg.solve(A, B)
        ainv_y = np.linalg.solve(A, a["xty"][rows][..., None])[..., 0]
        Bt = np.swapaxes(B, -1, -2)
        bab = Bt @ ainv_b
        bay = (Bt @ ainv_y[..., None])[..., 0]
        self._bab_sum += (bab - a["bab"][rows]).sum(axis=0)
        self._bay_sum += (bay - a["bay"][rows]).sum(axis=0)
        a["ainv_b"][rows] = ainv_b
        a["ainv_y"][rows] = ainv_y
        a["bab"][rows] = bab
        a["bay"][rows] = bay
        a["since_refresh"][rows] = 0.0
        self._stale = True

    def _refresh_sums(self) -> None:
        n = len(self.arms)
        self._bab_sum = self._arrays["bab"][:n].sum(axis=0)
        self._bay_sum = self._arrays["bay"][:n].sum(axis=0)
        self._since_sum_refresh = 0
        self._stale = True

    def _on_load(self) -> None:
        self._refresh(np.arange(len(self.arms)))
        self._refresh_sums()

    def _products(self, r: int) -> None:
        """Update arm ``r``'s caches that depend on ``A_a⁻¹`` after a Sherman–Morrison step."""
        a = self._arrays
        ainv, B = a["ainv"][r], a["xtz"][r]
        ainv_b = ainv @ B
        ainv_y = ainv @ a["xty"][r]
        bab = B.T @ ainv_b
        bay = B.T @ ainv_y
        self._bab_sum += bab - a["bab"][r]
        self._bay_sum += bay - a["bay"][r]
        a["ainv_b"][r], a["ainv_y"][r], a["bab"][r], a["bay"][r] = ainv_b, ainv_y, bab, bay

    def _after_update(self) -> None:
        self._stale = True
        self._since_sum_refresh += 1
        if self._since_sum_refresh >= self.refresh_every:
            self._refresh_sums()

    # -- decisions ------------------------------------------------------------------------------
    def _z(self, shared: np.ndarray | None) -> np.ndarray:
        if shared is None:
            raise ValueError("hybrid-linucb needs the shared feature vector z of the arm")
        z = np.asarray(shared, dtype=float)
        if z.shape != (self.shared_dim,):
            raise ValueError(f"shared vector has shape {z.shape}, expected ({self.shared_dim},)")
        return z

    def _shared_matrix(self, shared: Shared, candidates: Sequence[str]) -> np.ndarray:
        if not isinstance(shared, Mapping):
            raise ValueError("hybrid-linucb needs shared features: a mapping arm -> z vector")
        try:
            Z = np.array([shared[c] for c in candidates], dtype=float)
        except KeyError as exc:
            raise ValueError(f"no shared feature vector for candidate {exc.args[0]!r}") from None
        if Z.shape != (len(candidates), self.shared_dim):
            raise ValueError(f"shared vectors have shape {Z.shape[1:]}, expected ({self.shared_dim},)")
        return Z

    def score(self, x: np.ndarray, candidates: Sequence[str], shared: Shared = None) -> np.ndarray:
        Z = self._shared_matrix(shared, candidates)
        rows = self._rows(candidates)
        a0inv, beta = self._shared_model()
        a = self._arrays
        v = x @ a["ainv_b"][rows]  # (K, k): B_aᵀ A_a⁻¹ x
        w = Z - v
        mean = a["ainv_y"][rows] @ x + w @ beta
        var = (a["ainv"][rows] @ x) @ x + ((w @ a0inv) * w).sum(axis=1)
        return mean + self.alpha * np.sqrt(np.maximum(var, 0.0))

    # -- learning -------------------------------------------------------------------------------
    def learn_impression(self, arm: str, x: np.ndarray, shared: np.ndarray | None = None) -> None:
        z = self._z(shared)
        r = self.add_arm(arm)
        a = self._arrays
        a["xtx"][r] += np.outer(x, x)
        a["xtz"][r] += np.outer(x, z)
        a["n"][r] += 1.0
        self._globals["ztz"] += np.outer(z, z)
        a["since_refresh"][r] += 1.0
        if a["since_refresh"][r] >= self.refresh_every:
            self._refresh(np.array([r]))
        else:
            ainv = a["ainv"][r]
            u = ainv @ x
            ainv -= np.outer(u, u) / (1.0 + x @ u)
            self._products(r)
        self._after_update()
        self._count(impressions=1.0)

    def learn_reward(self, arm: str, x: np.ndarray, reward: float, shared: np.ndarray | None = None) -> None:
        z = self._z(shared)
        r = self.add_arm(arm)
        a = self._arrays
        a["xty"][r] += reward * x
        self._globals["zty"] += reward * z
        a["ainv_y"][r] += reward * (a["ainv"][r] @ x)
        bay = a["xtz"][r].T @ a["ainv_y"][r]
        self._bay_sum += bay - a["bay"][r]
        a["bay"][r] = bay
        self._after_update()
        self._count(reward=reward, rewarded=1.0)

    def learn_batch(self, arms: Sequence[str], X: np.ndarray, rewards: np.ndarray,
                    shared: np.ndarray | None = None) -> None:
        X = np.asarray(X, dtype=float)
        rewards = np.asarray(rewards, dtype=float)
        if shared is None:
            raise ValueError("hybrid-linucb needs shared features: an (n, shared_dim) matrix aligned with X")
        Z = np.asarray(shared, dtype=float)
        if Z.shape != (X.shape[0], self.shared_dim):
            raise ValueError(f"shared matrix has shape {Z.shape}, expected {(X.shape[0], self.shared_dim)}")
        rows = self.rows_of(arms)
        touched = np.unique(rows)
        a = self._arrays
        for r in touched:
            mask = rows == r
            Xr = X[mask]
            a["xtx"][r] += Xr.T @ Xr
            a["xtz"][r] += Xr.T @ Z[mask]
            a["xty"][r] += rewards[mask] @ Xr
            a["n"][r] += Xr.shape[0]
        self._globals["ztz"] += Z.T @ Z
        self._globals["zty"] += rewards @ Z
        self._refresh(touched)
        self._refresh_sums()
        self._count(impressions=float(len(rows)), reward=float(rewards.sum()),
                    rewarded=float(np.count_nonzero(rewards)))

    def merge(self, other: Learner) -> Learner:
        if getattr(other, "shared_dim", None) != self.shared_dim:
            raise ValueError("can only merge hybrid-linucb learners with the same shared_dim")
        return super().merge(other)
