"""Exponential backoff: the one retry schedule used for databases, brokers and producers.

>>> delays = Backoff(initial=0.5, maximum=2.0)
>>> [delays.next() for _ in range(5)]
[0.5, 1.0, 2.0, 2.0, 2.0]
>>> delays.reset()
>>> delays.next()
0.5
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("banditloop")


@dataclass
class Backoff:
    """Delays that start at ``initial`` seconds and grow by ``factor`` after each failure, capped at
    ``maximum``. :meth:`next` returns the delay to wait now; :meth:`reset` after a success."""

    initial: float
    maximum: float
    factor: float = 2.0
    _current: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not (0 < self.initial <= self.maximum) or self.factor < 1:
            raise ValueError("backoff needs 0 < initial <= maximum and factor >= 1")
        self._current = self.initial

    def next(self) -> float:
        delay = self._current
        self._current = min(self._current * self.factor, self.maximum)
        return delay

    def reset(self) -> None:
        self._current = self.initial

    def retry(self, action: Callable[[], T], *, retry_on: tuple[type[Exception], ...], what: str,
              give_up: Callable[[], bool] = lambda: False, sleep: Callable[[float], None] = time.sleep) -> T:
        """``action()``, retried after each ``retry_on`` error with the next delay (logged with
        ``what``), until it succeeds or ``give_up()`` is true (then the error is raised)."""
        while True:
            try:
                return action()
            except retry_on as exc:
                if give_up():
                    raise
                delay = self.next()
                log.warning("cannot %s (%s); retrying in %.1f s", what, type(exc).__name__, delay)
                sleep(delay)
