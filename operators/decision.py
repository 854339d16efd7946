"""What a policy did for one request."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class Decision:
    """What a policy did for one request: the chosen arm, its propensity, and per-candidate scores.

    ``scores`` (a dict) and ``ranking`` (candidates best first, the chosen arm leading) are built on
    first access, because a request path that needs only the arm should not pay for them.

    >>> import numpy as np
    >>> d = Decision("b", 0.9, ["a", "b", "c"], np.array([0.1, 0.7, 0.3]))
    >>> d.ranking, d.scores["c"]
    (('b', 'c', 'a'), 0.3)
    """

    __slots__ = ("arm", "propensity", "candidates", "score_array", "probabilities", "_scores", "_ranking")

    def __init__(self, arm: str, propensity: float, candidates: Sequence[str], score_array: np.ndarray,
                 probabilities: np.ndarray | None = None) -> None:
        self.arm = arm
        self.propensity = propensity
        self.candidates = candidates
        self.score_array = score_array
        self.probabilities = probabilities
        self._scores: dict[str, float] | None = None
        self._ranking: tuple[str, ...] | None = None

    @property
    def scores(self) -> dict[str, float]:
        if self._scores is None:
            self._scores = dict(zip(self.candidates, self.score_array.tolist(), strict=True))
        return self._scores

    @property
    def ranking(self) -> tuple[str, ...]:
        if self._ranking is None:
            order = np.argsort(-self.score_array, kind="stable")
            ranked = [self.candidates[i] for i in order if self.candidates[i] != self.arm]
            self._ranking = (self.arm, *ranked)
        return self._ranking

    def __repr__(self) -> str:
        return f"Decision(arm={self.arm!r}, propensity={self.propensity:.4g}, scores={self.scores!r})"
