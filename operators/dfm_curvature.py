"""Outcome-independent curvature of the delayed feedback model's factors (``dfm``'s ``steps="fisher"``).

``steps="newton"`` scales each coordinate's step by ``1/Σg²``, the empirical Fisher information: the
squared gradient of the factor being learned, so a conversion (gradient about ``−1`` in the logit of ``p``)
adds far more curvature than a "not yet" (about ``p·F(e)``). The step then depends on the outcome it
learns from, and the curvature grows by bursts of conversions: the estimate is not a fixed point of the
expected update, and fed in an unlucky order it drifts.

Here the curvature a factor adds depends only on what was known before its outcome: the **predictable
variation** of the score over the factor's time at risk. Conversions are a counting process with hazard
``h(t) = p λ e^{−λt} / S(t)`` (``S(t) = 1 − p + p e^{−λt}``) for a click not converted by ``t``. A factor that
covers the at-risk interval ``(e₀, e₁]`` (a "not yet" from ``e₀`` to ``e₁``, or a conversion at ``e₁ = d``)
adds ``∫ (∂ log h/∂θ)² h dt`` over it, per head output ``θ``; the sum over a click's factors is the
compensator of its squared score, whose expectation is the click's Fisher information (Rebolledo's
martingale central limit theorem; Andersen et al. 1993, *Statistical Models Based on Counting Processes*,
II.4). With ``a`` the logit of ``p`` and ``l = log λ``:

* ``∂ log h/∂a = (1 − p)/S(t)``, and since ``dS = −p λ e^{−λt} dt`` the integral is closed-form:
  ``I_a = (1 − p)²/2 · (1/S(e₁)² − 1/S(e₀)²)`` (from ``0`` to ``∞``: ``p − p²/2``, expectation ``p(1 − p)``);
* ``∂ log h/∂l = 1 − λt(1 − p)/S(t)``; in pieces of at most a quarter of a mean delay, ``S`` held at its
  value ``S̄`` at each piece's middle, and ``s = λt``: ``I_l = Σ p/S̄ · [e^{−s}P(s)]_{s₁}^{s₀}``,
  ``P(s) = k²s² + 2k(k − 1)s + 1 + 2k(k − 1)``, ``k = (1 − p)/S̄`` (``p → 0``, ``0`` to ``∞``: ``p``, the
  information of an exponential delay observed with probability ``p``).

A click learned once at its window's close (``tick = 0``) adds the Fisher information of its label
(converted by ``W`` or not, probability ``c = p F(W)``): ``(∂c/∂θ)² / (c (1 − c))``, outcome-free too.

>>> a, _ = interval_information(0.1, 0.0, 0.0, 50.0)      # a click's whole life (λ = 1/s, 50 s)
>>> round(a, 4)     # p − p²/2
0.095
>>> parts = [interval_information(0.1, 0.0, k / 2, (k + 1) / 2)[0] for k in range(100)]
>>> round(sum(parts), 4)    # factors add up: the information is a sum over the time at risk
0.095
"""

from __future__ import annotations

import math

#: log λ·e is clipped here: e^{-λe} underflows to 0 long before, and exp must not overflow
_MAX_LOG = 700.0
#: S(e) is at least 1 − p; below this (p within rounding of 1) the information is taken at this value
_MIN_SURVIVAL = 1e-12
#: the delay head's integral is taken in pieces of at most this many mean delays (``S`` held per piece) ...
_PIECE = 0.25
#: ... up to this many (``e^{−λt}`` is then below 1e-26: nothing is left to learn about the delay)
_FAR = 60.0

__all__ = ["interval_information", "window_information"]


def _scaled(log_rate: float, elapsed: float) -> float:
    """``λ·e``, clipped so that ``exp`` cannot overflow."""
    return math.exp(min(log_rate + math.log(elapsed), _MAX_LOG)) if elapsed > 0 else 0.0


def interval_information(p: float, log_rate: float, elapsed_from: float, elapsed_to: float) -> tuple[float, float]:
    """Predictable variation of the score over the at-risk interval ``(elapsed_from, elapsed_to]``, in the
    logit of ``p`` and in ``log λ``: the curvature a factor adds (0 for an empty interval)."""
    if not elapsed_to > elapsed_from:
        return 0.0, 0.0
    s0, s1 = _scaled(log_rate, elapsed_from), _scaled(log_rate, elapsed_to)
    surv0 = max(1.0 - p + p * math.exp(-s0), _MIN_SURVIVAL)
    surv1 = max(1.0 - p + p * math.exp(-s1), _MIN_SURVIVAL)
    info_a = 0.5 * (1.0 - p) ** 2 * (1.0 / (surv1 * surv1) - 1.0 / (surv0 * surv0))
    s1 = min(s1, _FAR)
    pieces = max(1, math.ceil((s1 - s0) / _PIECE)) if s1 > s0 else 0
    info_l = 0.0
    for i in range(pieces):  # S held at each piece's middle
        lo, hi = s0 + (s1 - s0) * i / pieces, s0 + (s1 - s0) * (i + 1) / pieces
        mid = max(1.0 - p + p * math.exp(-0.5 * (lo + hi)), _MIN_SURVIVAL)
        k = (1.0 - p) / mid
        b = 2.0 * k * (k - 1.0)
        info_l += p / mid * (math.exp(-lo) * (k * k * lo * lo + b * lo + 1.0 + b)
                             - math.exp(-hi) * (k * k * hi * hi + b * hi + 1.0 + b))
    return max(info_a, 0.0), max(info_l, 0.0)


def window_information(p: float, log_rate: float, window: float) -> tuple[float, float]:
    """Fisher information of a click's label at its window's close (converted by ``window`` or not), in
    the logit of ``p`` and in ``log λ``: ``(∂c/∂θ)² / (c (1 − c))`` with ``c = p (1 − e^{−λW})``."""
    s = _scaled(log_rate, window)
    u = math.exp(-s)
    converted = p * -math.expm1(-s)  # c
    if converted <= 0.0 or converted >= 1.0:
        return 0.0, 0.0
    spread = converted * (1.0 - converted)
    return (p * (1.0 - p) * -math.expm1(-s)) ** 2 / spread, (p * s * u) ** 2 / spread
