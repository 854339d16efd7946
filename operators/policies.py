"""Choice rules shared by learners: Thompson-sampling propensities by Monte Carlo, softmax and
ε-greedy probabilities, and drawing an index from probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np


class SampledPolicy:
    """Mixin for Thompson-sampling policies: play the argmax of one posterior draw (``score``), and
    estimate the propensity by Monte Carlo over ``propensity_draws`` further joint draws from
    ``_draws`` (the draw actually played counts as one more sample of the same distribution).
    ``propensity_draws = 0`` skips the estimate and reports NaN."""

    propensity_draws: int

    def _draws(self, x: np.ndarray, candidates: Sequence[str], n: int) -> np.ndarray:
        """``n`` joint posterior draws of every candidate's score, shape ``(n, len(candidates))``."""
        raise NotImplementedError

    def _pick(self, x, candidates, scores, shared):
        pick = int(np.argmax(scores))
        if self.propensity_draws <= 0:
            return pick, float("nan"), None
        probs = self.propensities(x, candidates, scores, shared)
        return pick, float(probs[pick]), probs

    def propensities(self, x, candidates, scores, shared=None) -> np.ndarray:
        return self.sampled_probabilities(x, candidates, scores, max(self.propensity_draws, 0))

    def sampled_probabilities(self, x: np.ndarray, candidates: Sequence[str], scores: np.ndarray,
                              n: int) -> np.ndarray:
        """Each candidate's share of wins over ``n`` joint draws plus the draw that gave ``scores``."""
        if n < 0:
            raise ValueError("draws must be >= 0")
        draws = self._draws(x, candidates, n)
        wins = np.bincount(np.argmax(draws, axis=1), minlength=len(candidates)).astype(float)
        wins[int(np.argmax(scores))] += 1.0
        return wins / (draws.shape[0] + 1)


def softmax(values: np.ndarray, temperature: float) -> np.ndarray:
    z = (values - values.max()) / temperature
    e = np.exp(z)
    return e / e.sum()


def epsilon_greedy_probabilities(values: np.ndarray, epsilon: float) -> np.ndarray:
    """Exact ε-greedy choice probabilities: ``(1-ε)/ties + ε/K`` for the best value(s), ``ε/K`` otherwise
    (the greedy share is split uniformly over ties)."""
    best = values == values.max()
    return (1.0 - epsilon) * best / best.sum() + epsilon / values.size


#: the exploration rules of :class:`ExploredScores`
EXPLORATIONS = ("egreedy", "softmax")


def check_exploration(exploration: str, epsilon: float, temperature: float) -> None:
    """Refuse an exploration rule :class:`ExploredScores` does not know, ε outside [0, 1] or a temperature <= 0.

    >>> check_exploration("softmax", 0.1, 0.0)
    Traceback (most recent call last):
    ...
    ValueError: temperature must be > 0
    """
    if exploration not in EXPLORATIONS:
        raise ValueError(f"exploration must be one of {EXPLORATIONS}, not {exploration!r}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError("epsilon must be in [0, 1]")
    if not temperature > 0:
        raise ValueError("temperature must be > 0")


def sample_index(probabilities: np.ndarray, rng: np.random.Generator) -> int:
    """An index drawn from ``probabilities`` with one uniform variate (inverse CDF). An entry of
    probability 0 is never drawn."""
    cdf = np.cumsum(probabilities)
    i = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    return min(i, cdf.size - 1)


class ExploredScores:
    """Mixin: choose on the learner's scores ε-greedy (``exploration="egreedy"``) or by softmax over
    ``score / temperature``, with exact propensities. Needs ``exploration``, ``epsilon``,
    ``temperature`` and ``rng``."""

    exploration: str
    epsilon: float
    temperature: float
    rng: np.random.Generator

    def propensities(self, x, candidates, scores, shared=None) -> np.ndarray:
        if self.exploration == "softmax":
            return softmax(scores, self.temperature)
        return epsilon_greedy_probabilities(scores, self.epsilon)

    def _pick(self, x, candidates, scores, shared):
        probs = self.propensities(x, candidates, scores, shared)
        pick = sample_index(probs, self.rng)
        return pick, float(probs[pick]), probs


class OptionalExploration(ExploredScores):
    """:class:`ExploredScores` for learners that are greedy by default (``epsilon = 0``): while
    ``exploration="egreedy"`` and ``epsilon == 0`` they choose with the learner's own greedy rule (the
    argmax, its tie tolerance, a draw from ``rng`` only on ties), so a model built without exploration
    chooses, and draws, exactly as one built before the option existed. Mix it in before the learner's
    base class: the greedy rule is the next class's in the MRO after :class:`ExploredScores`.

    >>> import numpy as np
    >>> from banditloop.operators.dfm import DelayedFeedbackModel
    >>> scores = np.array([0.1, 0.3])
    >>> DelayedFeedbackModel(dim=1).propensities(np.ones(1), ["a", "b"], scores).tolist()
    [0.0, 1.0]
    >>> DelayedFeedbackModel(dim=1, epsilon=0.2).propensities(np.ones(1), ["a", "b"], scores).tolist()
    [0.1, 0.9]
    """

    def explores(self) -> bool:
        """Whether the choice is randomised (softmax, or ε-greedy with ε > 0)."""
        return self.exploration == "softmax" or self.epsilon > 0.0

    def propensities(self, x, candidates, scores, shared=None) -> np.ndarray:
        if self.explores():
            return super().propensities(x, candidates, scores, shared)
        return super(ExploredScores, self).propensities(x, candidates, scores, shared)  # type: ignore[misc]

    def _pick(self, x, candidates, scores, shared):
        if self.explores():
            return super()._pick(x, candidates, scores, shared)
        return super(ExploredScores, self)._pick(x, candidates, scores, shared)


class FakeNegativeCTR(ExploredScores):
    """Mixin for online CTR models trained with fake negatives (Ktena et al. 2019): the model's
    ``predict(arm, x)`` estimates ``q = p/(1+p)``; :meth:`ctr` calibrates it to ``p = q/(1−q)``.
    Scores are the raw ``q`` (ranking and ε-greedy are unchanged by the monotone calibration; the
    softmax temperature is on the ``q`` scale). Needs the learner's ``_rows`` besides
    :class:`ExploredScores`' attributes."""

    exploration: str
    epsilon: float
    temperature: float
    rng: np.random.Generator

    if TYPE_CHECKING:  # provided by the learner this is mixed into
        def predict(self, arm: str, x: np.ndarray) -> float: ...

        def _rows(self, candidates: Sequence[str]) -> np.ndarray: ...

    def ctr(self, arm: str, x: np.ndarray) -> float:
        """Calibrated click probability ``q/(1−q)``, capped at 1."""
        q = self.predict(arm, x)
        return min(q / (1.0 - q), 1.0) if q < 1.0 else 1.0

    def score(self, x: np.ndarray, candidates: Sequence[str], shared: object = None) -> np.ndarray:
        self._rows(candidates)
        return np.array([self.predict(arm, x) for arm in candidates])

