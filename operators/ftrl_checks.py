"""Checks of the options of the FTRL heads (``dfm``, ``esmm``): each returns the value as stored or raises
``ValueError`` with the option's name (a bad ``--param`` is one line and exit 2 at the command line)."""

from __future__ import annotations

import math

#: when the averaged weights are updated: every step of a coordinate, or at the ticks
AVERAGE_AT = ("step", "tick")
#: the step rule: FTRL-Proximal (1/√Σg² per coordinate), the online Newton step (1/Σg²) or the same with
#: the outcome-independent information in place of g² (:mod:`banditloop.operators.dfm_curvature`)
STEPS = ("ftrl", "newton", "fisher")


def check_average(average: float | None) -> float | None:
    """``average`` as stored: None (off) or a finite ω >= 0."""
    if average is None:
        return None
    if isinstance(average, bool) or not isinstance(average, (int, float)) or not (
            math.isfinite(average) and average >= 0):
        raise ValueError("average must be None (off) or a finite ω >= 0")
    return float(average)


def check_average_at(average_at: str) -> str:
    if average_at not in AVERAGE_AT:
        raise ValueError(f"average_at must be one of {AVERAGE_AT}, not {average_at!r}")
    return average_at


def check_steps(steps: str) -> str:
    if steps not in STEPS:
        raise ValueError(f"steps must be one of {STEPS}, not {steps!r}")
    return steps


def check_head_alpha(name: str, rate: float | None) -> float | None:
    """A per-head FTRL rate: None (the model's ``alpha``) or a finite number > 0, as a float."""
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                             or not (math.isfinite(rate) and rate > 0)):
        raise ValueError(f"{name} must be None (alpha) or finite and > 0")
    return None if rate is None else float(rate)


def check_ftrl(alpha: float, beta: float, l1: float, l2: float, prior: float, delay_prior: float,
               window: float, tick: float = 0.0) -> None:
    if not (tick >= 0 and math.isfinite(tick)):
        raise ValueError("tick must be finite and >= 0 seconds (0: learn once at the close)")
    if not alpha > 0 or not beta >= 0 or not l1 >= 0 or not l2 >= 0:
        raise ValueError("alpha must be > 0, beta, l1 and l2 >= 0")
    if not 0.0 < prior < 1.0:
        raise ValueError("prior must be in (0, 1)")
    if not (delay_prior > 0 and math.isfinite(delay_prior)) or not (window > 0 and math.isfinite(window)):
        raise ValueError("delay_prior and window must be finite and > 0 (seconds)")
