"""Empirical-likelihood confidence intervals for importance-weighted means (heavy weights).

Normal intervals of IPS-type means under-cover when importance weights are heavy-tailed: the rare
impressions with huge weights are usually absent from the sample, so both the mean and its standard
error come out too small. Karampatziakis, Langford & Mineiro ("Empirical likelihood for contextual
bandits", NeurIPS 2020) use what correctly logged data guarantees, **E[w] = 1**, inside Owen's
empirical likelihood (EL): the data are a multinomial ``q`` over the ``n`` observed rows, plus
(optionally) one unobserved row of weight ``W`` (the bound on the weights) and probability ``q₀``
that holds the weight the sample is missing, with a term per unit of weight ``δ`` anywhere in a
given range. The interval is every value whose profile likelihood ratio passes the test
``2 (ℓ̂ − ℓ) ≤ F⁻¹(0.95; 1, n)`` (the paper's small-sample calibration; χ²₁ for large ``n``):

    bounds = min / max of  Σ q_i d_i + q₀ W δ   over  δ ∈ [δ_min, δ_max]  and  q, q₀ ≥ 0 with
             Σ q_i + q₀ = 1,  Σ q_i w_i + q₀ W = 1,  Σ log(n q_i) ≥ ℓ̂ − crit/2

where ``d_i`` is the estimator's per-impression term (``w r`` for IPS; DR and ``dr_cv`` use the EL with the
reward model as a second constraint, :mod:`banditloop.evaluation.el_moments`, instead)
and ``δ`` what a missing row adds per unit of weight (the reward for IPS; reward minus model for
DR). ``ℓ̂`` is the likelihood's maximum under the weight constraint alone. Without a missing row
(``weight_bound=None``) ``q₀ = 0``: plain EL with the side constraint E[w] = 1 (Owen 2001, §3.10).
``W = ∞`` is the paper's default and the most conservative: the missing weight costs no likelihood.
Each bound is a linear objective over a convex set; its Lagrange dual is a concave maximisation in
two variables (``ν`` for the weight constraint, ``γ`` for the normalisation; ``γ + ν W ≥ 0``):

    max  exp((ℓ̂ − crit/2) / n) · exp(mean_i log(c_i + ν w_i + γ)) − ν − γ,

with ``c_i = d_i − w_i δ_min`` (lower bound ``δ_min +`` the maximum) or ``c_i = w_i δ_max − d_i``
(upper bound ``δ_max −`` the maximum), solved by a damped Newton method (tens of ms on 100k rows).
With all weights 1 this is the classical EL interval of a mean (close to the binomial one).

>>> import numpy as np
>>> r = np.array([1.0, 0.0] * 50)          # on-policy, 50 clicks in 100
>>> low, high = el_interval(r, np.ones(100), delta_range=(0.0, 1.0))
>>> round(low, 3), round(high, 3)
(0.402, 0.598)
"""

from __future__ import annotations

import math

import numpy as np

#: the intervals estimators can report: normal (CLT) or empirical likelihood
INTERVALS = ("normal", "el")


def critical_value(n: int, level: float = 0.95) -> float:
    """``F⁻¹(level; 1, n)`` (→ χ²₁ quantile 3.84 for large ``n``), the EL test's threshold."""
    from scipy.stats import f

    return float(f.isf(1.0 - level, 1, max(n, 1)))


def _max_loglik(w: np.ndarray, weight_bound: float | None, k: np.ndarray) -> float:
    """``ℓ̂ = max Σ log(n q_i)`` over the rows' ``q ≥ 0`` and the missing row's ``q₀ ≥ 0`` (weight
    ``W = weight_bound``; none when None) with ``Σ q + q₀ = 1`` and ``Σ q w + q₀ W = 1``.

    With the missing row in use (``q₀ > 0``) the stationarity conditions give the closed form
    ``q_i = (W − 1) / (n (W − w_i))`` (``q_i = 1/n`` for ``W = ∞``), valid when it sums to ≤ 1;
    otherwise ``q₀ = 0`` and ``q_i = 1 / (n (1 + β (w_i − 1)))`` with ``β`` the root of
    ``Σ (w_i − 1) / (1 + β (w_i − 1)) = 0`` (bisection). ``-inf`` when nothing is feasible."""
    n = float(k.sum())
    mean = float(k @ w) / n
    if weight_bound is not None:
        if math.isinf(weight_bound):
            if mean <= 1.0:
                return 0.0
        else:
            with np.errstate(divide="ignore"):
                q = (weight_bound - 1.0) / (n * (weight_bound - w))
            if np.all(np.isfinite(q)) and float(k @ q) <= 1.0:
                return float(k @ np.log(n * q))
    if mean == 1.0:
        return 0.0
    u = w - 1.0
    if u.min() >= 0.0 or u.max() <= 0.0:  # 1 is outside the weights' hull
        return -math.inf
    # Σ u / (1 + β u) decreases in β on (−1/max u, −1/min u); its root has the sign of Σ u
    low, high = (0.0, -1.0 / u.min()) if mean > 1.0 else (-1.0 / u.max(), 0.0)
    for _ in range(200):
        beta = 0.5 * (low + high)
        if float(k @ (u / (1.0 + beta * u))) > 0.0:
            low = beta
        else:
            high = beta
        if high - low <= 1e-15 * max(abs(high), abs(low)):
            break
    return -float(k @ np.log1p(0.5 * (low + high) * u))


def _dual_max(c: np.ndarray, w: np.ndarray, scale: float, weight_bound: float | None, k: np.ndarray) -> float:
    """``max scale · exp(mean log(c + ν w + γ)) − ν − γ`` over the dual variables ``ν`` (weight
    constraint) and ``γ`` (normalisation), subject to ``γ + ν W ≥ 0`` for a missing row of weight
    ``W = weight_bound`` (``ν ≥ 0`` for ``W = ∞``; unconstrained without one). Damped Newton; on
    the constraint's boundary, Newton along it."""
    if weight_bound is None:
        normal = None
    elif math.isinf(weight_bound):
        normal = np.array([1.0, 0.0])
    else:
        normal = np.array([weight_bound, 1.0]) / math.hypot(weight_bound, 1.0)
    along = None if normal is None else np.array([normal[1], -normal[0]])
    f = k / k.sum()  # row frequencies: means are f @ (...)

    def value(x: np.ndarray) -> float:
        d = c + x[0] * w + x[1]
        if d.min() <= 0.0:
            return -math.inf
        return scale * math.exp(float(f @ np.log(d))) - x[0] - x[1]

    # start at ν = 0, γ above both −min c and 0 (feasible for every variant)
    x = np.array([0.0, max(0.0, -float(c.min())) + 1.0])
    current = value(x)
    for _ in range(200):
        d = c + x[0] * w + x[1]
        inv = 1.0 / d
        g = scale * math.exp(float(f @ np.log(d)))
        fi = f * inv
        a = np.array([float(fi @ w), float(fi.sum())])
        inv2 = inv * inv
        fw = f * w * inv2
        m12 = float(fw.sum())
        hess = g * (np.outer(a, a) - np.array([[float(fw @ w), m12], [m12, float(f @ inv2)]]))
        grad = g * a - 1.0
        try:
            step = -np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            step = grad.copy()
        if not np.all(np.isfinite(step)) or float(grad @ step) <= 0.0:
            step = grad.copy()  # not an ascent direction (numerically flat): gradient step
        on_boundary = normal is not None and float(normal @ x) <= 1e-12 * (1.0 + float(np.abs(x).max()))
        if on_boundary and normal is not None and along is not None and float(normal @ step) < 0.0:
            # would leave the feasible set: Newton along its edge instead
            curvature = float(along @ hess @ along)
            slope = float(along @ grad)
            step = along * (-slope / curvature if curvature < 0.0 else slope)
        decrement = float(grad @ step)
        if decrement <= 1e-14 * max(1.0, abs(current)):
            break
        t = 1.0
        if normal is not None and float(normal @ step) < 0.0 and not on_boundary:  # stop at the boundary
            t = min(t, max(0.0, -float(normal @ x) / float(normal @ step)))
        while t > 1e-14:
            x_new = x + t * step
            if normal is not None and float(normal @ x_new) < 0.0:  # rounding: back onto the edge
                x_new = x_new - float(normal @ x_new) * normal
            candidate = value(x_new)
            if candidate >= current:
                break
            t *= 0.5
        else:
            break
        if candidate == current and t < 1.0:
            break
        x, current = x_new, candidate
    return current


def el_interval(terms: np.ndarray, weights: np.ndarray, *, delta_range: tuple[float, float] = (0.0, 0.0),
                weight_bound: float | None = None, level: float = 0.95) -> tuple[float, float]:
    """The EL interval (see the module docstring) of the mean of ``terms`` ``(n,)`` given the
    importance weights ``weights`` ``(n,)`` (E[w] = 1).

    ``weight_bound``: the weight ``W`` of the row the sample may be missing (None: no missing row,
    the rows alone satisfy ``Σ q w = 1``; ``inf``: unbounded weights, the most conservative);
    ``delta_range``: the range of that row's term per unit of weight (e.g. the reward range for IPS).
    Returns ``(nan, nan)`` when no reweighting of the rows satisfies the weight constraint."""
    d = np.asarray(terms, dtype=float)
    w = np.asarray(weights, dtype=float)
    n = d.size
    if n == 0 or w.shape != d.shape:
        raise ValueError(f"terms and weights must be non-empty and the same shape, got {d.shape} and {w.shape}")
    lo_delta, hi_delta = delta_range
    if not lo_delta <= hi_delta:
        raise ValueError(f"delta_range {delta_range} is not an interval")
    if weight_bound is not None and not weight_bound > 1.0:
        raise ValueError(f"weight_bound must be > 1, got {weight_bound}")
    if weight_bound is not None and w.max() > weight_bound * (1.0 + 1e-12):
        raise ValueError(f"a weight {w.max():g} exceeds weight_bound {weight_bound:g}")
    if weight_bound is not None and math.isfinite(weight_bound):
        # an unseen row exactly as heavy as an observed one is that row (the dual's optimum then
        # sits on its boundary, unattained): keep W strictly above the observed weights
        weight_bound = max(weight_bound, float(w.max()) * (1.0 + 1e-6))
    if np.all(w == 1.0):
        weight_bound = None  # the weight constraint holds already: the classical EL of a mean
        if np.all(d == d[0]):  # every reweighting has the same mean (the dual's optimum is not attained)
            return float(d[0]), float(d[0])
    # identical rows (e.g. every row the target never plays) are solved once, with their count
    rows, counts = np.unique(np.stack([d, w], axis=1), axis=0, return_counts=True)
    d, w, k = rows[:, 0], rows[:, 1], counts.astype(float)
    best = _max_loglik(w, weight_bound, k)
    if not math.isfinite(best):
        return math.nan, math.nan
    scale = math.exp((best - critical_value(n, level) / 2.0) / n)
    low = lo_delta + _dual_max(d - w * lo_delta, w, scale, weight_bound, k)
    high = hi_delta - _dual_max(w * hi_delta - d, w, scale, weight_bound, k)
    return float(low), float(high)
