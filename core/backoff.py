"""Exponential backoff: the one retry schedule used for databases, brokers and producers.

>>> delays = Backoff(initial=0.5, maximum=2.0)
>>> [delays.next() for _ in range(5)]
[0.5, 1.0, 2.0, 2.0, 2.0]
>>> delays.reset()
>>> delays.next()
0.5
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
