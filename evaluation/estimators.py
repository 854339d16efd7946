"""Off-policy value estimators on arrays, in the style of Open Bandit Pipeline (``obp.ope``).

Every estimator is a small frozen dataclass whose :meth:`estimate` takes per-impression arrays and
returns an :class:`Estimate`: the value (mean reward per impression under the target policy), a 95%
confidence interval, the standard error, the number of impressions used and the effective sample size.

Array shapes (``n`` impressions, one logged action each):

* ``reward``: ``(n,)`` the logged action's observed reward;
* ``pscore``: ``(n,)`` the logging policy's probability of the logged action, in (0, 1];
* ``target_pscore``: ``(n,)`` the target policy's probability of the logged action, in [0, 1];
* ``q_logged``: ``(n,)`` a reward model's prediction for the logged action (DR, switch-DR);
* ``q_target``: ``(n,)`` the reward model's expectation under the target, ``Σ_a π(a|x) q̂(x, a)``;
* ``matched``: ``(n,)`` bool, the target's (sampled) choice equals the logged action (replay).

Candidate sets may differ per impression, so the per-action quantities obp keeps as
``(n, n_actions, len_list)`` tensors are reduced to the two columns above: obp's DR estimate is
``mean(q_target + w (r − q_logged))`` with ``q_target = average(q̂, weights=π)`` over the actions, the
same numbers.

**Confidence intervals (95%)** are of two kinds, chosen per estimator by its ``interval`` field:

* ``"normal"`` (CLT), ``value ± 1.96·se``: for the estimators that are means of per-impression terms
  (IPS, clipped IPS, DR, switch-DR, replay, the logging policy's own value) ``se`` is the sample
  standard deviation of the terms over ``√n``; for SNIPS, a ratio, the delta method (terms
  ``w (r − V̂) / mean(w)``). Under-covers with heavy-tailed weights (87–89% instead of 95% in
  ``benchmarks/ope_accuracy.py`` with logging propensities down to 3e-5).
* ``"el"``, empirical likelihood with the constraint E[w] = 1 (Karampatziakis, Langford & Mineiro
  2020; :mod:`banditloop.evaluation.intervals`). ``weight_bound`` (default ``"logged"``) lets
  the sample miss rows of weight up to that bound (a number, ``"logged"`` = max(target_pscore) / min(pscore), or
  ``inf``), whose reward lies in ``reward_range`` (default: the logged rewards' min and max): wider,
  more conservative intervals. IPS and SNIPS estimate the same value, so they share one EL
  interval. DR and ``dr_cv`` share another (:mod:`banditloop.evaluation.el_moments`): EL of the
  value ``E[w r]`` with the reward model as a **control variate**, the second side constraint
  ``E[w q̂(x, a) − q̂_π(x)] = 0``; an unseen row adds its reward (as for IPS) while its model values
  only take up the control variate's slack (the interval before it, EL of the DR terms with E[w] = 1
  alone, let an unseen row add reward − model, within 1 + range(q̂): too wide). Clipped IPS and
  switch-DR bound their weights, so a missing row adds nothing. The EL interval need not be centred
  on the point estimate (it may even exclude it when ``mean(w)`` is far from 1).

Each estimator's default is the interval that covered in ``benchmarks/ope_accuracy.py``: EL with
``weight_bound="logged"`` for IPS, SNIPS, DR and ``dr_cv`` (the normal interval covers 87-89% for a
softmax logger → greedy target; coverage of the defaults per cell in ``benchmarks/README.md``);
``std_error`` is always the normal one.

**Effective sample size** is Kish's ``(Σw)²/Σw²`` of the
importance weights ``w = target_pscore / pscore`` (``n`` for an on-policy log, smaller the more the
target departs from the logger); for replay it is the number of matched impressions.

Invalid input is refused, never divided by or dropped: a propensity ≤ 0, > 1 or NaN raises
``ValueError`` naming how many rows are bad. Rows the log could not supply (no propensity, slate
positions > 0) are counted by :mod:`banditloop.evaluation.run` before arrays are built.

>>> import numpy as np
>>> r = np.array([1.0, 0.0, 1.0, 0.0]); p = np.full(4, 0.5)
>>> IPS().estimate(r, p, target_pscore=np.array([1.0, 0.0, 0.0, 1.0])).value
0.5
>>> SNIPS().estimate(r, p, target_pscore=np.array([1.0, 1.0, 1.0, 0.0])).value  # doctest: +ELLIPSIS
0.666...
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from banditloop.evaluation.el_moments import el_cv_interval
from banditloop.evaluation.intervals import INTERVALS, el_interval

#: two-sided 95% normal quantile
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    """One estimator's answer. ``ci_low``/``ci_high``: the 95% interval of kind ``interval``
    (``normal`` or ``el``, see the module docstring)."""

    name: str
    value: float
    ci_low: float
    ci_high: float
    std_error: float
    n: int
    ess: float
    interval: str = "normal"

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high, "interval": self.interval,
                "std_error": self.std_error, "n": self.n, "ess": self.ess}

    def covers(self, truth: float) -> bool:
        return self.ci_low <= truth <= self.ci_high


def _array(name: str, values: Any, n: int | None = None) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if n is not None and arr.size != n:
        raise ValueError(f"{name} has {arr.size} rows, expected {n}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: {int(np.count_nonzero(~np.isfinite(arr)))} rows are NaN or infinite")
    return arr


def _probabilities(name: str, values: Any, n: int, *, positive: bool) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.shape != (n,):
        raise ValueError(f"{name} has shape {arr.shape}, expected ({n},)")
    low = arr <= 0.0 if positive else arr < 0.0
    bad = np.count_nonzero(low | (arr > 1.0) | np.isnan(arr))
    if bad:
        bound = "(0, 1]" if positive else "[0, 1]"
        raise ValueError(f"{name}: {bad} of {n} rows are outside {bound}")
    return arr


def _inputs(reward: Any, pscore: Any, target_pscore: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = _array("reward", reward)
    if r.size == 0:
        raise ValueError("no impressions to estimate from")
    p = _probabilities("pscore", pscore, r.size, positive=True)
    t = _probabilities("target_pscore", target_pscore, r.size, positive=False)
    return r, p, t


def kish_ess(weights: np.ndarray) -> float:
    """Kish's effective sample size ``(Σw)²/Σw²`` (0 when every weight is 0)."""
    s2 = float(np.dot(weights, weights))
    return float(weights.sum()) ** 2 / s2 if s2 > 0 else 0.0


def mean_estimate(name: str, terms: np.ndarray, ess: float) -> Estimate:
    """The mean of per-impression terms with its normal 95% interval."""
    n = terms.size
    value = float(terms.mean())
    se = float(terms.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf
    return Estimate(name, value, value - Z95 * se, value + Z95 * se, se, n, ess)


#: ``weight_bound`` spelled this way: the largest weight the log suggests, ``max(target_pscore) / min(pscore)``
#: (the target's largest probability over the logger's smallest: ``1 / min(pscore)`` for a deterministic
#: target, ``K`` times less for a uniform one over ``K`` arms)
LOGGED_BOUND = "logged"
WeightBound = float | str | None


def _check_interval(interval: str, reward_range: tuple[float, float] | None = None,
                    weight_bound: WeightBound = None) -> None:
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {', '.join(INTERVALS)}, got {interval!r}")
    if reward_range is not None and not reward_range[0] <= reward_range[1]:
        raise ValueError(f"reward_range {reward_range} is not an interval")
    if isinstance(weight_bound, str) and weight_bound != LOGGED_BOUND:
        raise ValueError(f"weight_bound must be a number > 1, None or {LOGGED_BOUND!r}, got {weight_bound!r}")
    if isinstance(weight_bound, int | float) and not weight_bound > 1:
        raise ValueError(f"weight_bound must be > 1, got {weight_bound}")


def _bound(weight_bound: WeightBound, p: np.ndarray, w: np.ndarray) -> float | None:
    """The EL's ``W``: the given bound, ``max(target_pscore) / min(pscore)`` for ``"logged"`` (at least
    the largest weight)."""
    if weight_bound == LOGGED_BOUND:
        return max(float((w * p).max()) / float(p.min()), float(w.max()), 1.0 + 1e-9)
    if weight_bound is None:
        return None
    return max(float(weight_bound), float(w.max()))


def _reward_range(r: np.ndarray, declared: tuple[float, float] | None) -> tuple[float, float]:
    if declared is None:
        return float(r.min()), float(r.max())
    if r.min() < declared[0] or r.max() > declared[1]:
        raise ValueError(f"rewards span [{r.min():g}, {r.max():g}], outside reward_range {declared}")
    return float(declared[0]), float(declared[1])


def with_interval(est: Estimate, interval: str, terms: np.ndarray, w: np.ndarray,
                  delta_range: tuple[float, float], weight_bound: float | None = None) -> Estimate:
    """``est`` with its interval replaced by the EL one when ``interval == "el"`` (else unchanged)."""
    if interval == "normal" or not math.isfinite(est.value):
        return est
    low, high = el_interval(terms, w, delta_range=delta_range, weight_bound=weight_bound)
    return Estimate(est.name, est.value, float(low), float(high), est.std_error, est.n, est.ess, interval)


def with_cv_interval(est: Estimate, interval: str, r: np.ndarray, w: np.ndarray, ql: np.ndarray, qt: np.ndarray,
                     reward_range: tuple[float, float], weight_bound: float | None = None) -> Estimate:
    """``est`` with the EL interval that uses the reward model as a control variate (DR and ``dr_cv``:
    :mod:`banditloop.evaluation.el_moments`) when ``interval == "el"`` (else unchanged)."""
    if interval == "normal" or not math.isfinite(est.value):
        return est
    model = (min(float(ql.min()), float(qt.min())), max(float(ql.max()), float(qt.max())))
    low, high = el_cv_interval(w * r, w, w * ql - qt, reward_range=reward_range, model_range=model,
                               weight_bound=weight_bound)
    return Estimate(est.name, est.value, float(low), float(high), est.std_error, est.n, est.ess, interval)


@dataclass(frozen=True)
class OnPolicy:
    """The logging policy's own value: the mean logged reward."""

    name: str = "logging"

    def estimate(self, reward: Any) -> Estimate:
        r = _array("reward", reward)
        if r.size == 0:
            raise ValueError("no impressions to estimate from")
        return mean_estimate(self.name, r, float(r.size))


@dataclass(frozen=True)
class Replay:
    """Replay (Li et al. 2011, "Unbiased offline evaluation of contextual-bandit-based news article
    recommendation algorithms", WSDM): the mean reward of the impressions where the target's choice
    equals the logged action. Unbiased only for **uniformly random** logs; the interval is that of a
    mean over the matched impressions. Equals obp's ``ReplayMethod`` for a deterministic target."""

    name: str = "replay"

    def estimate(self, reward: Any, matched: Any) -> Estimate:
        r = _array("reward", reward)
        m = np.asarray(matched, dtype=bool)
        if m.shape != r.shape:
            raise ValueError(f"matched has shape {m.shape}, expected {r.shape}")
        k = int(m.sum())
        if k == 0:
            return Estimate(self.name, math.nan, math.nan, math.nan, math.nan, 0, 0.0)
        return mean_estimate(self.name, r[m], float(k))


@dataclass(frozen=True)
class IPS:
    """Inverse propensity scoring: ``mean(w r)`` with ``w = target_pscore / pscore``. Default
    interval: EL (the normal one under-covers with heavy weights)."""

    name: str = "ips"
    interval: str = "el"
    reward_range: tuple[float, float] | None = None
    weight_bound: WeightBound = LOGGED_BOUND

    def __post_init__(self) -> None:
        _check_interval(self.interval, self.reward_range, self.weight_bound)

    def estimate(self, reward: Any, pscore: Any, target_pscore: Any) -> Estimate:
        r, p, t = _inputs(reward, pscore, target_pscore)
        w = t / p
        est = mean_estimate(self.name, w * r, kish_ess(w))
        return with_interval(est, self.interval, w * r, w, _reward_range(r, self.reward_range),
                             _bound(self.weight_bound, p, w))


@dataclass(frozen=True)
class ClippedIPS:
    """IPS with weights clipped at ``max_weight`` (``min(w, M) r``): biased toward 0 for a positive
    reward, lower variance. ``max_weight = inf`` is IPS."""

    max_weight: float = 20.0
    name: str = "clipped_ips"
    interval: str = "normal"

    def __post_init__(self) -> None:
        if not self.max_weight > 0:
            raise ValueError("max_weight must be > 0")
        _check_interval(self.interval, None)

    def estimate(self, reward: Any, pscore: Any, target_pscore: Any) -> Estimate:
        r, p, t = _inputs(reward, pscore, target_pscore)
        w = t / p
        clipped = np.minimum(w, self.max_weight)
        est = mean_estimate(self.name, clipped * r, kish_ess(clipped))
        return with_interval(est, self.interval, clipped * r, w, (0.0, 0.0))


@dataclass(frozen=True)
class SNIPS:
    """Self-normalised IPS: ``Σ w r / Σ w`` (its weights ``w / Σw`` sum to one). Normal interval by the
    delta method; default EL (the same interval as IPS's: both estimate the one value)."""

    name: str = "snips"
    interval: str = "el"
    reward_range: tuple[float, float] | None = None
    weight_bound: WeightBound = LOGGED_BOUND

    def __post_init__(self) -> None:
        _check_interval(self.interval, self.reward_range, self.weight_bound)

    def estimate(self, reward: Any, pscore: Any, target_pscore: Any) -> Estimate:
        r, p, t = _inputs(reward, pscore, target_pscore)
        w = t / p
        total = float(w.sum())
        n = r.size
        if total <= 0:
            return Estimate(self.name, math.nan, math.nan, math.nan, math.nan, n, 0.0)
        value = float(np.dot(w, r) / total)
        influence = w * (r - value) / (total / n)
        se = float(influence.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf
        est = Estimate(self.name, value, value - Z95 * se, value + Z95 * se, se, n, kish_ess(w))
        return with_interval(est, self.interval, w * r, w, _reward_range(r, self.reward_range),
                             _bound(self.weight_bound, p, w))

    @staticmethod
    def weights(pscore: Any, target_pscore: Any) -> np.ndarray:
        """The normalised weights ``w / Σw`` (sum to one)."""
        p = np.asarray(pscore, dtype=float)
        w = np.asarray(target_pscore, dtype=float) / p
        return w / w.sum()


@dataclass(frozen=True)
class DR:
    """Doubly robust (Dudík, Langford & Li 2011): ``mean(q_target + w (r − q_logged))``. Unbiased when
    either the propensities or the reward model are right; with ``q̂ = 0`` it is IPS. The reward model
    must not be fitted on the rows it predicts (see :mod:`banditloop.evaluation.reward_model`: cross-fitting).
    Default interval: EL with the reward model as a control variate
    (:mod:`banditloop.evaluation.el_moments`; shared with ``dr_cv``).

    How much variance DR can remove: per impression, with the true model ``μ`` and binary rewards,
    ``Var(IPS) − Var(DR) = E[w² μ_a²] − E[μ_π(x)²]`` out of ``Var(IPS) = E[w² μ_a] − V²``, so for rare
    clicks DR removes about a click-rate's fraction of IPS's variance at best (the reward noise
    ``w² μ_a (1 − μ_a)`` is left to both); :mod:`banditloop.evaluation.control_variate` has the
    coefficient that removes the most a given model allows."""

    name: str = "dr"
    interval: str = "el"
    reward_range: tuple[float, float] | None = None
    weight_bound: WeightBound = LOGGED_BOUND

    def __post_init__(self) -> None:
        _check_interval(self.interval, self.reward_range, self.weight_bound)

    def estimate(self, reward: Any, pscore: Any, target_pscore: Any, q_logged: Any, q_target: Any) -> Estimate:
        r, p, t = _inputs(reward, pscore, target_pscore)
        ql = _array("q_logged", q_logged, r.size)
        qt = _array("q_target", q_target, r.size)
        w = t / p
        terms = qt + w * (r - ql)
        est = mean_estimate(self.name, terms, kish_ess(w))
        return with_cv_interval(est, self.interval, r, w, ql, qt, _reward_range(r, self.reward_range),
                                _bound(self.weight_bound, p, w))


@dataclass(frozen=True)
class SwitchDR:
    """Switch doubly robust as obp implements it (Wang, Agarwal & Dudík 2017): the DR correction is
    kept only for impressions whose weight is at most ``tau`` (``q_target`` alone for the others),
    trading a bias for bounded weights. ``tau = inf`` is DR."""

    tau: float = 20.0
    name: str = "switch_dr"
    interval: str = "normal"

    def __post_init__(self) -> None:
        if not self.tau >= 0:
            raise ValueError("tau must be >= 0")
        _check_interval(self.interval, None)

    def estimate(self, reward: Any, pscore: Any, target_pscore: Any, q_logged: Any, q_target: Any) -> Estimate:
        r, p, t = _inputs(reward, pscore, target_pscore)
        ql = _array("q_logged", q_logged, r.size)
        qt = _array("q_target", q_target, r.size)
        w = t / p
        keep = w <= self.tau
        terms = qt + keep * w * (r - ql)
        est = mean_estimate(self.name, terms, kish_ess(w * keep))
        return with_interval(est, self.interval, terms, w, (0.0, 0.0))
