"""ε-greedy on the observed mean reward of each arm (Sutton & Barto 2018, §2.2).

With probability ``1-ε`` play an arm of highest mean reward (ties split uniformly), otherwise a
uniformly random candidate, so the propensity is exact: ``(1-ε)/ties + ε/K`` for a greedy arm and
``ε/K`` for the others. Arms never shown have mean ``initial_value`` (0 by default; a large value gives
optimistic initial values). The score is that mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from banditloop.operators.base import Shared
from banditloop.operators.counts import ArmCounts
from banditloop.operators.policies import epsilon_greedy_probabilities, sample_index


class EpsilonGreedy(ArmCounts):
    """ε-greedy on mean rewards (over closed feedback windows), exact propensities.

    >>> eg = EpsilonGreedy(epsilon=0.1, seed=1)
    >>> for _ in range(30):
    ...     eg.learn_one("a", None, 1.0)
    ...     eg.learn_one("b", None, 0.0)
    >>> eg.choose(None, ["a", "b"]).arm
    'a'
    """

    kind = "egreedy"

    def __init__(self, dim: int = 1, epsilon: float = 0.1, initial_value: float = 0.0, seed: int = 0) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError("epsilon must be in [0, 1]")
        self.epsilon = float(epsilon)
        self.initial_value = float(initial_value)
        super().__init__(dim, seed)

    def score(self, x: np.ndarray | None, candidates: Sequence[str], shared: Shared = None) -> np.ndarray:
        return self._means(self._rows(candidates), self.initial_value)

    def propensities(self, x, candidates, scores, shared=None) -> np.ndarray:
        return epsilon_greedy_probabilities(scores, self.epsilon)

    def _pick(self, x, candidates, scores, shared):
        probs = self.propensities(x, candidates, scores, shared)
        pick = sample_index(probs, self.rng)
        return pick, float(probs[pick]), probs
