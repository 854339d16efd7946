"""Disjoint LinUCB (Li, Chu, Langford & Schapire 2010, Algorithm 1).

Per arm ``a``: ``A_a = λI + Σ x xᵀ``, ``b_a = Σ r x``, ``θ_a = A_a⁻¹ b_a`` (ridge regression), and the
score ``θ_aᵀx + α·sqrt(xᵀ A_a⁻¹ x)``. The state is the raw sums ``Σ x xᵀ`` and ``Σ r x`` (no prior), so
two shards merge exactly by addition. ``A_a⁻¹`` and ``θ_a`` are caches kept current with
Sherman–Morrison rank-one updates (O(d²) per event instead of O(d³)) and recomputed exactly every
``refresh_every`` updates of an arm, on import and on merge, so rounding cannot accumulate.

That machinery lives in :class:`RidgeArms`, which linear Thompson sampling (:mod:`banditloop.operators.lin_ts`)
shares; :class:`LinUCB` adds only the upper-confidence score.

Default ``alpha = 0.2``. The bonus ``sqrt(xᵀA⁻¹x)`` is the posterior standard deviation of ``θᵀx``
for *unit* observation noise; ``α`` rescales it to the noise of the rewards. Clicks are Bernoulli
with rates of a few percent, noise standard deviation ``sqrt(p(1-p)) ≈ 0.2``, so ``α ≈ 0.2`` is the
matching width (α = 1 over-explores by about 5×; see benchmarks/regret.py). Raise it for rewards
with a larger spread, e.g. ``click+value``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import numpy as np

from banditloop.operators.base import TIE_TOLERANCE, Learner, Shared
from banditloop.operators.candidate_cache import cache_put
from banditloop.operators.decision import Decision


def _load_dger() -> Callable[..., np.ndarray]:
    """BLAS ``dger`` (``A += s·x yᵀ`` in place), from SciPy's compiled BLAS wrappers.

    ``scipy.linalg.blas`` is where SciPy offers it, but importing ``scipy.linalg`` runs SciPy's
    array-API layer, which imports most of numpy (``numpy.ma``, ``numpy.f2py``, ``numpy.testing``):
    ~0.3 s of start-up for one function. The wrappers are one extension module, ``scipy.linalg._fblas``,
    that needs nothing of that; it is loaded from its file under its own name (so a later ``import
    scipy.linalg`` finds and reuses it). Anything unexpected: the ordinary import."""
    name = "scipy.linalg._fblas"
    module = sys.modules.get(name)
    if module is None:
        try:
            import importlib.machinery
            import importlib.util
            from pathlib import Path

            spec = importlib.util.find_spec("scipy")
            folder = Path(spec.origin).parent / "linalg"  # type: ignore[union-attr, arg-type]
            path = next(folder / f"_fblas{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES
                        if (folder / f"_fblas{suffix}").is_file())
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            spec.loader.exec_module(module)  # type: ignore[union-attr]
            sys.modules[name] = module
        except Exception:  # noqa: BLE001 - any other layout: the documented import
            from scipy.linalg.blas import dger

            return dger
    return module.dger


_dger = _load_dger()
_ZERO = np.zeros(())
_ZERO.flags.writeable = False


class RidgeArms(Learner):
    """One ridge regression per arm (``A_a = λI + Σxxᵀ``, ``b_a = Σrx``) with cached ``A_a⁻¹`` and
    ``θ_a``; subclasses define the score. The exported state is the raw sums, so merging is exact."""
    weighted_updates = True

    additive_arrays = ("xtx", "xty", "n")
    derived_arrays = ("ainv", "theta", "since_refresh")

    def __init__(self, dim: int, ridge: float = 1.0, refresh_every: int = 1000, seed: int = 0) -> None:
        if ridge <= 0:
            raise ValueError("ridge must be > 0")
        self.ridge = float(ridge)
        self.refresh_every = int(refresh_every)
        super().__init__(dim, seed)

    def _arm_arrays(self):
        d = self.dim
        return {
            "xtx": ((d, d), 0.0),
            "xty": ((d,), 0.0),
            "n": ((), 0.0),
            "ainv": ((d, d), np.eye(d) / self.ridge),
            "theta": ((d,), 0.0),
            "since_refresh": ((), 0.0),
        }

    # -- model ----------------------------------------------------------------------------------
    def theta(self, arm: str) -> np.ndarray:
        """The ridge-regression coefficients of ``arm``."""
        return self._arrays["theta"][self.arm_index[arm]].copy()

    def _refresh(self, rows: np.ndarray) -> None:
        a = self._arrays
        A = a["xtx"][rows] + self.ridge * np.eye(self.dim)
        a["ainv"][rows] = np.linalg.inv(A)
        a["theta"][rows] = np.linalg.solve(A, a["xty"][rows][..., None])[..., 0]
        a["since_refresh"][rows] = 0.0

    def _on_load(self) -> None:
        self._refresh(np.arange(len(self.arms)))

    def _on_resize(self) -> None:
        # direct references to the per-arm arrays for the per-event paths (re-bound when they grow);
        # a subclass that overrides this hook must call super()._on_resize()
        a = self._arrays
        d = self.dim
        # A⁻¹ and θ of an arm live in one (d+1)×d block (``_ainv_theta``): rows 0..d-1 are A⁻¹, row d
        # is θ, so one matrix-vector product over the candidates' blocks gives A⁻¹x and θ·x together
        # (see LinUCB.score). ``ainv``/``theta`` in ``_arrays`` are views of it.
        both = np.empty((self._capacity, d + 1, d))
        both[:, :d], both[:, d] = a["ainv"], a["theta"]
        a["ainv"], a["theta"] = both[:, :d], both[:, d]
        self._ainv_theta = both
        self._xtx, self._xty, self._n = a["xtx"], a["xty"], a["n"]
        self._ainv, self._theta, self._since = a["ainv"], a["theta"], a["since_refresh"]
        # the same matrices transposed: Fortran-ordered views, which BLAS ``dger`` updates in place (both
        # matrices are symmetric, so updating the transpose updates the matrix)
        self._xtx_f, self._ainv_f = a["xtx"].transpose(0, 2, 1), a["ainv"].transpose(0, 2, 1)
        #: per arm row, once it learned: views of its Σxxᵀ (Fortran), A⁻¹, A⁻¹ (Fortran), Σrx and θ, so
        #: that an event indexes a list rather than making five array views (see ``_views_of``)
        self._row_views: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None] = (
            [None] * self._capacity)

    def _views_of(self, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        views = self._row_views[r] = (self._xtx_f[r], self._ainv[r], self._ainv_f[r], self._xty[r], self._theta[r])
        return views

    # -- learning -------------------------------------------------------------------------------
    def learn_impression(self, arm: str, x: np.ndarray, shared: np.ndarray | None = None) -> None:
        r = self.arm_index.get(arm)
        if r is None:
            r = self.add_arm(arm)
        if x.__class__ is not np.ndarray or x.dtype != np.float64:  # (a float64 array is used as it is)
            x = np.asarray(x, dtype=float)
        self._impress(r, x)
        self.counters["impressions"] += 1.0  # self._count(impressions=1.0), inlined

    def _impress(self, r: int, x: np.ndarray) -> None:
        """Σxxᵀ += xxᵀ for row ``r`` and the matching A⁻¹ (Sherman–Morrison, or a refresh) and θ."""
        xtx_f, ainv, ainv_f, xty, theta = self._row_views[r] or self._views_of(r)
        # BLAS ``dger`` on the Fortran-ordered view (the transpose; same memory, symmetric) updates in
        # place, without the two temporaries of ``np.outer`` (~0.6 µs instead of 1.6-2.8 at d=16)
        if _dger(1.0, x, x, a=xtx_f, overwrite_a=1) is not xtx_f:
            raise AssertionError("dger copied the statistics")  # cannot happen: the view is Fortran-ordered
        n, since_all = self._n, self._since
        n[r] = n.item(r) + 1.0  # Python floats: cheaper than numpy scalars, the same values
        since = since_all.item(r) + 1.0
        since_all[r] = since
        if since >= self.refresh_every:
            self._refresh(np.array([r]))
        else:
            u = ainv.dot(x)  # Sherman–Morrison: A⁻¹ -= uuᵀ / (1 + xᵀu)
            if _dger(-1.0 / (1.0 + float(x.dot(u))), u, u, a=ainv_f, overwrite_a=1) is not ainv_f:
                raise AssertionError("dger copied A⁻¹")
            ainv.dot(xty, out=theta)

    def learn_reward(self, arm: str, x: np.ndarray, reward: float, shared: np.ndarray | None = None) -> None:
        r = self.arm_index.get(arm)
        if r is None:
            r = self.add_arm(arm)
        _, ainv, _, xty, theta = self._row_views[r] or self._views_of(r)
        xty += reward * x
        theta += reward * ainv.dot(x)
        self._count(reward=reward, rewarded=1.0)

    def learn_sequence(self, kinds: np.ndarray, rows: np.ndarray, X: np.ndarray | None, values: np.ndarray) -> bool:
        """``learn_impression`` (kind 0) and ``learn_reward`` (1, ``values`` = increment) for arm rows
        ``rows`` (from ``rows_of``) and contexts ``X`` in this order, bit for bit (``learn_close``, kind 2,
        learns nothing here). Sherman–Morrison updates do not batch; this is the same operations as
        the calls (:meth:`_impress`), in one loop without their per-call arm lookup and conversion."""
        if X is None or X.dtype != np.float64:  # (learn_reward computes in the context's own precision)
            return False
        impress, xty, theta, ainv_all = self._impress, self._xty, self._theta, self._ainv
        impressions, rewards = 0, 0
        c = self.counters
        reward_sum = c["reward_sum"]
        for kind, r, x, value in zip(kinds.tolist(), rows.tolist(), X, values.tolist(), strict=True):
            if kind == 0:  # learn_impression
                impress(r, x)
                impressions += 1
            elif kind == 1:  # learn_reward
                xty[r] += value * x
                theta[r] += value * ainv_all[r].dot(x)
                reward_sum += value
                rewards += 1
        c["impressions"] += float(impressions)  # sums of 1.0: exact
        c["reward_sum"] = reward_sum
        c["rewards"] += float(rewards)
        return True

    def learn_batch(self, arms: Sequence[str], X: np.ndarray, rewards: np.ndarray,
                    shared: np.ndarray | None = None) -> None:
        X = np.asarray(X, dtype=float)
        rewards = np.asarray(rewards, dtype=float)
        rows = np.fromiter((self.add_arm(a) for a in arms), dtype=np.intp, count=len(arms))
        touched = np.unique(rows)
        a = self._arrays
        for r in touched:
            mask = rows == r
            Xr = X[mask]
            a["xtx"][r] += Xr.T @ Xr
            a["xty"][r] += rewards[mask] @ Xr
            a["n"][r] += Xr.shape[0]
        self._refresh(touched)
        self._count(impressions=float(len(rows)), reward=float(rewards.sum()),
                    rewarded=float(np.count_nonzero(rewards)))


class LinUCB(RidgeArms):
    """Disjoint LinUCB (Li et al. 2010, Alg. 1): ``θ_a·x + α·sqrt(xᵀA_a⁻¹x)``.

    >>> import numpy as np
    >>> lin = LinUCB(dim=2, alpha=0.2)
    >>> x = np.array([1.0, 0.5])
    >>> for _ in range(30):
    ...     lin.learn_one("a", x, 1.0)
    ...     lin.learn_one("b", x, 0.0)
    >>> lin.choose(x, ["a", "b"]).arm
    'a'
    """

    kind = "linucb"

    def __init__(self, dim: int, alpha: float = 0.2, ridge: float = 1.0, refresh_every: int = 1000,
                 seed: int = 0) -> None:
        self.alpha = float(alpha)
        self._alpha = (self.alpha, np.array(self.alpha))
        super().__init__(dim, ridge=ridge, refresh_every=refresh_every, seed=seed)

    def _on_resize(self) -> None:
        super()._on_resize()
        #: candidate tuple -> the candidates' [A⁻¹; θ] blocks as one (K·(d+1)) × d matrix, a view into
        #: ``_ainv_theta`` (consecutive rows only); emptied when the arrays are reallocated
        self._blocks: dict[tuple[str, ...], np.ndarray] = {}

    def score(self, x: np.ndarray, candidates: Sequence[str], shared: Shared = None) -> np.ndarray:
        key = candidates if type(candidates) is tuple else tuple(candidates)
        d = self.dim
        flat = self._blocks.get(key)
        if flat is not None:  # the per-request path: ndarray.dot rather than np.dot or @ (fewer dispatch layers)
            u = flat.dot(x).reshape(-1, d + 1)
        else:
            rows = self._row_index(key)  # may add arms, and so reallocate: read the arrays after it
            both = self._ainv_theta
            if isinstance(rows, slice):  # consecutive rows (the usual case): a view, no copy
                flat = both[rows].reshape(-1, d)
                cache_put(self._blocks, key, flat)
                u = flat.dot(x).reshape(-1, d + 1)
            else:
                n = len(self.arms)
                if 2 * len(rows) >= n:  # most arms: one product over all of them beats copying the candidates'
                    u = both[:n].reshape(-1, d).dot(x).reshape(n, d + 1)[rows]
                else:
                    u = both[rows].reshape(-1, d).dot(x).reshape(-1, d + 1)
        # u[:, :d] = A⁻¹x, u[:, d] = θ·x; then θ·x + α·sqrt(max(xᵀA⁻¹x, 0)) in place, with positional
        # ``out`` and array constants (fewer conversions per call)
        var = u[:, :d].dot(x)
        np.maximum(var, _ZERO, out=var)  # (a positional out is deprecated for maximum, and slow)
        np.sqrt(var, var)
        alpha = self._alpha
        if alpha[0] is not self.alpha:  # ``alpha`` was set since (a float is immutable: identity suffices)
            alpha = self._alpha = (self.alpha, np.array(float(self.alpha)))
        np.multiply(var, alpha[1], var)
        np.add(var, u[:, d], var)
        return var

    def choose(self, x: np.ndarray, candidates: Sequence[str] | None = None, shared: Shared = None) -> Decision:
        """:meth:`Learner.choose` with its argmax and tie test (``_pick``) inlined: the same decision,
        the same draws of ``rng`` (only on a tie), a few fewer calls per request."""
        if candidates is None or self.retired or not candidates:
            return super().choose(x, candidates, shared)
        scores = self.score(x, candidates, shared)
        best = int(scores.argmax())
        top = scores.item(best)  # a float: Python arithmetic below, not numpy scalars (same values)
        ties = scores >= top - TIE_TOLERANCE * max(1.0, abs(top))
        if np.count_nonzero(ties) == 1:
            return Decision(candidates[best], 1.0, candidates, scores, None)
        ties = ties.nonzero()[0]
        return Decision(candidates[int(ties[self.rng.integers(ties.size)])], 1.0 / ties.size, candidates, scores,
                        None)

    def choose_many(self, X: np.ndarray, candidates: Sequence[str]) -> list[Decision]:
        """:meth:`choose` for each row of ``X`` (concurrent requests with the same candidates), scored
        together with the parameters as they are: one product for the whole micro-batch instead of
        one per request. Ties are broken as :meth:`choose` breaks them, row by row."""
        eligible = self.eligible(candidates) if self.retired else candidates
        if not eligible:
            raise ValueError("no candidates given")
        X = np.asarray(X, dtype=float)
        rows = self._row_index(eligible)
        d = self.dim
        both = self._ainv_theta[rows]  # (K, d+1, d): a view for consecutive rows
        U = (both.reshape(-1, d) @ X.T).reshape(len(eligible), d + 1, -1)  # [A⁻¹x ; θ·x] per arm and row
        var = np.einsum("kdn,nd->nk", U[:, :d], X)
        np.maximum(var, 0.0, out=var)
        np.sqrt(var, out=var)
        var *= self.alpha
        var += U[:, d].T
        out = []
        for x, scores in zip(X, var, strict=True):
            pick, propensity, probs = self._pick(x, eligible, scores, None)
            out.append(Decision(eligible[pick], propensity, eligible, scores, probs))
        return out
