"""The event times of the delayed-feedback models (``dfm``, ``esmm``: elapsed times and conversion delays
in seconds): their checks, shared by :mod:`banditloop.operators.ftrl_heads` and
:mod:`banditloop.operators.deferred_conversions` so a bad time is refused the same way everywhere, and
the times a model takes from its join's window when it is not given them (:func:`window_defaults`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def checked_times(*times: float) -> None:
    """Raise ``ValueError`` unless every time is finite and >= 0 seconds.

    >>> checked_times(0.0, 3600.0)
    >>> checked_times(-1.0)
    Traceback (most recent call last):
    ValueError: times must be finite and >= 0 seconds, got -1.0
    """
    for t in times:
        if not (math.isfinite(t) and t >= 0):
            raise ValueError(f"times must be finite and >= 0 seconds, got {t!r}")


def checked_tick(arms: Sequence[str], X: np.ndarray, elapsed_from: np.ndarray, elapsed_to: np.ndarray,
                 dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One tick's contexts and elapsed times as float arrays, every time and (for a non-empty tick)
    every shape checked, so a tick is refused before anything of it is learned.

    >>> X, e0, e1 = checked_tick(["a"], [[0.5]], [0.0], [60.0], dim=1)
    >>> X.shape, e1.tolist()
    ((1, 1), [60.0])
    """
    e0, e1 = np.asarray(elapsed_from, dtype=float), np.asarray(elapsed_to, dtype=float)
    if not (np.all(np.isfinite(e0)) and np.all(np.isfinite(e1)) and np.all(e0 >= 0) and np.all(e1 >= 0)):
        raise ValueError("times must be finite and >= 0 seconds")
    n, X = len(arms), np.asarray(X, dtype=float)
    if n and (X.shape != (n, dim) or e0.shape != (n,) or e1.shape != (n,)):
        raise ValueError(f"{n} arms need X of shape ({n}, {dim}) and {n} times each")
    return X, e0, e1


#: the window-relative defaults of :func:`window_defaults` (a 7-day window: a tick every 6 h, a 1-day delay prior)
TICKS_PER_WINDOW = 28
DELAY_PRIORS_PER_WINDOW = 7


def window_defaults(window: float) -> dict[str, float]:
    """``tick``, ``delay_prior`` and ``window`` of a model fed through a join whose feedback window is
    ``window`` seconds (:meth:`banditloop.pipeline.model.ModelConfig.new_learner` fills in those not given):
    28 ticks and 7 delay priors per window, the constructors' defaults for the default 7-day conversion window.

    >>> window_defaults(3600.0)
    {'tick': 128.57142857142858, 'delay_prior': 514.2857142857143, 'window': 3600.0}
    """
    return {"tick": window / TICKS_PER_WINDOW, "delay_prior": window / DELAY_PRIORS_PER_WINDOW, "window": window}
