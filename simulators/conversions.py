"""Conversions in the simulated world: delay distributions with long tails, and the selection-bias world.

Both are plain functions of the world's configuration and of variates the world has already drawn, so
:mod:`banditloop.simulators.world` keeps drawing the same numbers per step (common random numbers) and
only maps them here.

**Delays** (``WorldConfig.conversion_delay``), from the click to its conversion, all with mean
``conversion_delay_mean`` seconds, each a monotone map of one standard exponential variate ``E`` (so a
world with another distribution converts the same impressions, in the same order of delay):

* ``"exponential"``: ``mean · E`` (the delay model of Chapelle 2014);
* ``"lognormal"``: ``exp(μ + σ Φ⁻¹(1 − e^{−E}))`` with ``σ = conversion_delay_shape`` and
  ``μ = ln(mean) − σ²/2``: a long right tail (σ = 1.5: the median is a third of the mean);
* ``"weibull"``: ``scale · E^{1/k}`` with ``k = conversion_delay_shape`` and ``scale = mean / Γ(1 + 1/k)``
  (k < 1: more very short and very long delays than the exponential).

**Selection bias** (``WorldConfig.selection_bias``). By default the conversion probability given a click,
``pCVR = sigmoid(c_a + γ_a·x)``, does not depend on how likely the click was. With ``selection_bias``
the world is specified on the *entire space* instead: the probability that an impression is clicked
*and* converts is logistic, ``pCTCVR = sigmoid(l + log q_a)``, with ``l`` the click logit and ``q_a =
sigmoid(c_a + γ_a·x)`` the arm's conversion rate, and ``pCVR = pCTCVR / pCTR``. Then pCVR grows with
the click probability, from ``q_a`` for impressions unlikely to be clicked (most of them) to about
``2 q_a / (1 + q_a)`` at a click probability of ½: the clicked population converts more than the
unclicked one would have, so a CVR model fitted on clicked impressions only and applied to every
impression is biased (the sample selection bias of Ma et al. 2018, ESMM), while pCTR and pCTCVR are
both logistic in the context and an entire-space model can represent them exactly.

>>> import numpy as np
>>> delays = conversion_delays("lognormal", 86400.0, 1.0, np.array([0.1, 1.0, 3.0]))
>>> bool(np.all(np.diff(delays) > 0))
True
>>> p = conversion_probabilities(np.array([-8.0, 0.0]), np.array([-2.0, -2.0]), selection_bias=True)
>>> [round(float(v), 3) for v in p]
[0.119, 0.213]
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from banditloop.simulators.blocks import Block
    from banditloop.simulators.config import WorldConfig

DELAY_DISTRIBUTIONS = ("exponential", "lognormal", "weibull")


def apply_conversions(block: Block, c: WorldConfig) -> Block:
    """Finish a drawn block of the world: pCVR under selection bias (before the outcomes are decided),
    outcomes, then the delays mapped to the configured distribution (the same exponential variates)."""
    if c.selection_bias:
        block.p_conv[...] = selection_biased(block.p_click, block.p_conv)
    block.finish(c.reward.kind, c.reward.weight, c.click_delay_mean, c.conversion_delay_mean)
    if c.conversion_delay != "exponential":
        block.conv_delay = conversion_delays(c.conversion_delay, c.conversion_delay_mean, c.conversion_delay_shape,
                                             block.e[:, 1])
    return block


def conversion_delays(distribution: str, mean: float, shape: float, exponentials: np.ndarray) -> np.ndarray:
    """Delays (seconds) of mean ``mean`` from standard exponential variates, monotone in them."""
    e = np.asarray(exponentials, dtype=float)
    if distribution == "exponential":
        return mean * e
    if distribution == "lognormal":
        from scipy.special import ndtri  # imported here: SciPy adds ~0.3 s to a start-up that never needs it

        u = -np.expm1(-e)  # the uniform of E, in (0, 1)
        z = ndtri(np.clip(u, 1e-300, 1.0 - 1e-16))
        return np.exp(math.log(mean) - shape * shape / 2.0 + shape * z) if mean > 0 else np.zeros_like(e)
    if distribution == "weibull":
        return (mean / math.gamma(1.0 + 1.0 / shape)) * e ** (1.0 / shape)
    raise ValueError(f"conversion_delay must be one of {DELAY_DISTRIBUTIONS}, not {distribution!r}")


def delay_survival(distribution: str, mean: float, shape: float, t: np.ndarray | float) -> np.ndarray:
    """P(delay > t): the share of conversions not yet arrived ``t`` seconds after their click."""
    t = np.maximum(np.asarray(t, dtype=float), 0.0)
    if mean <= 0:
        return np.zeros_like(t)
    if distribution == "exponential":
        return np.exp(-t / mean)
    if distribution == "lognormal":
        from scipy.special import ndtr

        with np.errstate(divide="ignore"):
            z = (np.log(t) - (math.log(mean) - shape * shape / 2.0)) / shape
        return 1.0 - ndtr(z)
    if distribution == "weibull":
        scale = mean / math.gamma(1.0 + 1.0 / shape)
        return np.exp(-((t / scale) ** shape))
    raise ValueError(f"conversion_delay must be one of {DELAY_DISTRIBUTIONS}, not {distribution!r}")


def selection_biased(p_click: np.ndarray, q: np.ndarray) -> np.ndarray:
    """pCVR of the selection-bias world from the click probability ``p`` and the arm's rate ``q``:
    ``sigmoid(l + log q) / sigmoid(l) = q / (p q + 1 − p)``."""
    p = np.asarray(p_click, dtype=float)
    return np.minimum(q / (p * q + 1.0 - p), 1.0)


def conversion_probabilities(click_logit: np.ndarray, conversion_logit: np.ndarray,
                             selection_bias: bool) -> np.ndarray:
    """P(conversion | click) per candidate: ``sigmoid(conversion_logit)``, or under selection bias
    ``sigmoid(l + log q) / sigmoid(l)`` with ``q = sigmoid(conversion_logit)`` (see the module docstring)."""
    q = 1.0 / (1.0 + np.exp(-np.asarray(conversion_logit, dtype=float)))
    if not selection_bias:
        return q
    lo = np.asarray(click_logit, dtype=float)
    ctr = 1.0 / (1.0 + np.exp(-lo))
    ctcvr = 1.0 / (1.0 + np.exp(-lo) / q)  # sigmoid(l + log q)
    return np.minimum(ctcvr / ctr, 1.0)


def delay_quantile(distribution: str, mean: float, shape: float, q: float) -> float:
    """The ``q`` quantile (seconds) of a delay of mean ``mean``: the delay of the standard exponential
    variate ``−ln(1 − q)`` (delays are monotone in it, see :func:`conversion_delays`)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"a quantile needs 0 < q < 1, not {q}")
    return float(conversion_delays(distribution, mean, shape, np.array([-math.log1p(-q)]))[0])


#: share of the world's clicks that arrive within the click window of :func:`covering_windows` (of its
#: conversions, at least ``1 − 2 (1 − COVERAGE)`` within the conversion window)
COVERAGE = 0.999


def covering_windows(c: WorldConfig, coverage: float = COVERAGE) -> tuple[float, float]:
    """Click and conversion windows (seconds from the impression) for the world's delays, at least one second
    each. The click window, within which ``coverage`` of the clicks arrive, is the click delay's quantile.
    The conversion window adds the conversion delay's quantile: no more than ``2 (1 − coverage)`` of the
    conversions outlast it (a sum beyond it has a term beyond its own).

    >>> from banditloop.simulators.config import WorldConfig
    >>> [round(w) for w in covering_windows(WorldConfig(click_delay_mean=30.0, conversion_delay_mean=3600.0))]
    [207, 25075]
    """
    click = delay_quantile("exponential", c.click_delay_mean, 1.0, coverage)
    conversion = click + delay_quantile(c.conversion_delay, c.conversion_delay_mean, c.conversion_delay_shape, coverage)
    return max(click, 1.0), max(conversion, 1.0)
