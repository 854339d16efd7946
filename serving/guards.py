"""What the scorer refuses to let requests or checkpoints do to it: unbounded arm tables, bursts of
unseen arms, and model versions whose numbers the learners cannot compute with.

* :class:`TokenBucket` — the per-second budget of arms first seen in requests (each one grows the
  served learner's tables and costs an allocation per arm);
* :class:`NewArmsRefused` — raised by :meth:`Scorer.choose <banditloop.serving.scorer.Scorer.choose>` for
  a request over the per-request limit (``rate_limited=False``, HTTP 422) or over the per-second
  budget (``rate_limited=True``, HTTP 429);
* :func:`check_usable` — the range check a newly merged model must pass before it is served.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from banditloop.core.state_codec import LearnerState
    from banditloop.operators.base import Learner
    from banditloop.pipeline.model import Vectorizer

#: Largest magnitude a served learner's state array may hold. State arrays are sums of
#: featurized values (each within ±1e9 per feature at every entry point), of their products and of
#: rewards: a real model stays many orders of magnitude below 1e100, while a value near the float
#: limit (1.8e308) overflows to inf as soon as it is multiplied by a context (every request with that
#: arm would fail). 1e100 leaves 200 orders of magnitude for the arithmetic of scoring.
MAX_STATE_MAGNITUDE = 1e100


class NewArmsRefused(ValueError):
    """A request names more never-seen arms than the scorer takes at once or in this second."""

    def __init__(self, message: str, *, rate_limited: bool, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.rate_limited = rate_limited
        self.retry_after = retry_after


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; thread-safe.

    >>> now = [0.0]
    >>> bucket = TokenBucket(rate=10, burst=20, clock=lambda: now[0])
    >>> bucket.take(15), bucket.take(10)       # 20 saved up: 15 fit, 10 more do not
    (True, False)
    >>> now[0] = 1.0                           # one second later: 5 + 10 tokens
    >>> bucket.take(10), round(bucket.available())
    (True, 5)
    """

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be > 0")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def available(self) -> float:
        with self._lock:
            self._refill()
            return self._tokens

    def take(self, n: float) -> bool:
        """Spend ``n`` tokens if there are that many; False (nothing spent) otherwise."""
        with self._lock:
            self._refill()
            if n > self._tokens:
                return False
            self._tokens -= n
            return True

    def wait_for(self, n: float) -> float:
        """Seconds until ``n`` tokens will be available (0 when they are)."""
        with self._lock:
            self._refill()
            return max(0.0, (min(n, self.burst) - self._tokens) / self.rate)


def check_usable(learner: Learner, vectorizer: Vectorizer) -> LearnerState:
    """Raise ``ValueError`` unless ``learner`` (a merged candidate version) is safe to serve; returns
    its exported state (which the check reads anyway).

    Two checks, both independent of the learner kind:

    * every exported state array is finite and within ±:data:`MAX_STATE_MAGNITUDE` (the sums a
      real model holds; ``from_state`` already refused NaN and inf);
    * every arm's score for the empty context (bias only) is finite: this covers what the learner
      derives from its state on load (inverses, coefficients), which the first check cannot see.
    """
    state = learner.export_state()
    for name, arr in state.arrays.items():
        if arr.size:
            peak = float(np.max(np.abs(arr)))
            if not peak <= MAX_STATE_MAGNITUDE:  # also False for NaN
                raise ValueError(f"state array {name!r} holds {peak:.3g}, beyond the usable "
                                 f"±{MAX_STATE_MAGNITUDE:g}")
    for key, value in state.counters.items():
        if not abs(float(value)) <= MAX_STATE_MAGNITUDE:
            raise ValueError(f"counter {key!r} is {value!r}, beyond the usable ±{MAX_STATE_MAGNITUDE:g}")
    arms = list(learner.arms)
    if not arms:
        return state
    x = vectorizer.x({})
    shared = vectorizer.shared_for({}, arms, None)
    with np.errstate(all="ignore"):
        scores = np.asarray(learner.score(x, arms, shared), dtype=float)
    bad = [arm for arm, s in zip(arms, scores.tolist(), strict=True) if not math.isfinite(s)]
    if bad:
        raise ValueError(f"{len(bad)} arm(s) score non-finite for the empty context (e.g. {bad[0]!r})")
    return state
