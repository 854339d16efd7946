"""Uniform random policy: the baseline every other learner must beat, and the ideal logging policy
for off-policy evaluation (propensity exactly ``1/K``).

The score of each candidate is an independent uniform draw, so the chosen arm (the argmax) and the
ranking (scores sorted) are both uniformly random; ties have probability zero. The per-arm counts and
reward sums are kept so that the state reports observed mean rewards like any other learner.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from banditloop.operators.base import Shared
from banditloop.operators.counts import ArmCounts


class UniformRandom(ArmCounts):
    """Uniform choice among the candidates, propensity exactly 1/K: the ideal logging policy.

    >>> UniformRandom(seed=0).choose(None, ["a", "b", "c", "d"]).propensity
    0.25
    """

    kind = "random"

    def __init__(self, dim: int = 1, seed: int = 0) -> None:
        super().__init__(dim, seed)

    def score(self, x: np.ndarray | None, candidates: Sequence[str], shared: Shared = None) -> np.ndarray:
        self._rows(candidates)  # register unseen arms, as every learner does
        return self.rng.random(len(candidates))

    def propensities(self, x, candidates, scores, shared=None) -> np.ndarray:
        return np.full(len(candidates), 1.0 / len(candidates))

    def _pick(self, x, candidates, scores, shared):
        probs = self.propensities(x, candidates, scores, shared)
        return int(np.argmax(scores)), float(probs[0]), probs
