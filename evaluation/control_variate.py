"""Doubly robust with the variance-optimal control-variate coefficient (``dr_cv``).

IPS and DR differ by one **control variate**, ``c = w q̂(x, a) − q̂_π(x)`` (``w = π(a|x) / μ(a|x)``,
``q̂_π = Σ_b π(b|x) q̂(x, b)``), whose mean is zero whenever the logging propensities are right (for a
reward model fitted without the row: cross-fitting). DR subtracts it with coefficient 1:
``mean(w r − c) = mean(q̂_π + w (r − q̂(a)))``. The family ``V̂_β = mean(w r − β c)`` is unbiased for
every fixed ``β``; its variance ``Var(w r) − 2β Cov(w r, c) + β² Var(c)`` is smallest at

    β* = Cov(w r, c) / Var(c),

where it is ``Var(w r) (1 − ρ²)`` (``ρ``: the correlation of ``w r`` and ``c``): never above IPS's
(``β = 0``) nor DR's (``β = 1``). With the true reward model ``β* = 1`` (then ``Cov(w r, c) = Var(c) =
E[w² μ_a²] − E[μ_π²]``); a model that is too confident or too timid moves it away from 1. ``dr_cv``
plugs in the sample ``β̂`` (the standard regression estimator of the control-variate literature, e.g.
Owen, *Monte Carlo theory, methods and examples*, ch. 8.9): using the same rows for ``β̂`` and the mean
costs a bias of order ``1/n`` and leaves the asymptotic variance that of ``β*``. ``beta`` fixes the
coefficient instead (``0``: IPS, ``1``: DR, as :class:`~banditloop.evaluation.estimators.DR` computes it).

Intervals: ``normal`` over the terms ``w r − β̂ c`` (``β̂`` treated as known, a second-order effect),
or EL (the default): DR's, EL with ``E[c] = 0`` as a side constraint
(:mod:`banditloop.evaluation.el_moments`), which does not depend on ``β`` (under the constraint
``E_q[w r − β c] = E_q[w r]`` for every ``β``) and is to first order the normal interval of the optimal
``β*``.

>>> import numpy as np
>>> r = np.array([1.0, 0.0, 1.0, 0.0]); p = np.array([0.5, 0.8, 0.2, 0.5]); t = np.array([1.0, 0.5, 0.4, 0.0])
>>> ql = np.array([0.5, 0.1, 0.6, 0.2]); qt = np.array([0.4, 0.3, 0.5, 0.1])
>>> DRCV(beta=0.0).estimate(r, p, t, ql, qt).value  # IPS
1.0
>>> round(DRCV(beta=1.0).estimate(r, p, t, ql, qt).value, 12)  # DR: mean(qt + w (r − ql))
0.759375
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from banditloop.evaluation.estimators import (
    LOGGED_BOUND,
    Estimate,
    WeightBound,
    _array,
    _bound,
    _check_interval,
    _inputs,
    _reward_range,
    kish_ess,
    mean_estimate,
    with_cv_interval,
)


def optimal_beta(ips_terms: np.ndarray, control: np.ndarray) -> float:
    """``Cov(ips_terms, control) / Var(control)`` (0 when the control is constant: nothing to remove)."""
    c = control - control.mean()
    var = float(c @ c)
    if not var > 0.0:
        return 0.0
    return float((ips_terms - ips_terms.mean()) @ c) / var


@dataclass(frozen=True)
class DRCV:
    """DR with a control-variate coefficient: ``mean(w r − β (w q̂(a) − q̂_π))``, ``β`` fitted to minimise
    the variance (``beta=None``, the default) or fixed (``0`` is IPS, ``1`` is DR); see the module
    docstring."""

    name: str = "dr_cv"
    beta: float | None = None
    interval: str = "el"
    reward_range: tuple[float, float] | None = None
    weight_bound: WeightBound = LOGGED_BOUND

    def __post_init__(self) -> None:
        _check_interval(self.interval, self.reward_range, self.weight_bound)
        if self.beta is not None and not math.isfinite(self.beta):
            raise ValueError(f"beta must be a finite number or None, got {self.beta}")

    def coefficient(self, reward: Any, pscore: Any, target_pscore: Any, q_logged: Any, q_target: Any) -> float:
        """The ``β`` used: the fixed one, or ``β̂`` fitted on these rows."""
        r, p, t = _inputs(reward, pscore, target_pscore)
        w = t / p
        if self.beta is not None:
            return float(self.beta)
        ql = _array("q_logged", q_logged, r.size)
        qt = _array("q_target", q_target, r.size)
        return optimal_beta(w * r, w * ql - qt)

    def estimate(self, reward: Any, pscore: Any, target_pscore: Any, q_logged: Any, q_target: Any) -> Estimate:
        r, p, t = _inputs(reward, pscore, target_pscore)
        ql = _array("q_logged", q_logged, r.size)
        qt = _array("q_target", q_target, r.size)
        w = t / p
        control = w * ql - qt
        beta = optimal_beta(w * r, control) if self.beta is None else float(self.beta)
        terms = w * r - beta * control
        est = mean_estimate(self.name, terms, kish_ess(w))
        # the EL interval with the control variate's constraint does not depend on β: DR's
        return with_cv_interval(est, self.interval, r, w, ql, qt, _reward_range(r, self.reward_range),
                                _bound(self.weight_bound, p, w))
