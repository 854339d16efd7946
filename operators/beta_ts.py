"""Beta-Bernoulli Thompson sampling, one Beta(α₀ + successes, β₀ + failures) per arm.

An impression counts as a failure when it is seen; a click moves it from failures to successes, so a
click that arrives hours later is learned the moment it arrives. Rewards are clipped to [0, 1] by the
pipeline (``binary_reward``). The propensity of a draw is estimated by Monte Carlo over
``propensity_draws`` joint draws, the standard practice for logging Thompson sampling.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from banditloop.operators.base import Learner, Shared
from banditloop.operators.policies import SampledPolicy


class BetaTS(SampledPolicy, Learner):
    kind = "ts"
    binary_reward = True
    additive_arrays = ("successes", "failures")

    def __init__(self, dim: int = 1, prior_alpha: float = 1.0, prior_beta: float = 1.0,
                 propensity_draws: int = 256, seed: int = 0) -> None:
        if prior_alpha <= 0 or prior_beta <= 0:
            raise ValueError("Beta priors must be > 0")
        self.prior_alpha = float(prior_alpha)
        self.prior_beta = float(prior_beta)
        self.propensity_draws = int(propensity_draws)
        super().__init__(dim, seed)

    def _arm_arrays(self):
        return {"successes": ((), 0.0), "failures": ((), 0.0)}

    def posterior(self, arm: str) -> tuple[float, float]:
        r = self.arm_index[arm]
        return (self.prior_alpha + self._arrays["successes"][r], self.prior_beta + self._arrays["failures"][r])

    def _ab(self, candidates: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        rows = self._rows(candidates)
        return (self.prior_alpha + self._arrays["successes"][rows],
                self.prior_beta + self._arrays["failures"][rows])

    def score(self, x: np.ndarray, candidates: Sequence[str], shared: Shared = None) -> np.ndarray:
        a, b = self._ab(candidates)
        return self.rng.beta(a, b)

    def _draws(self, x: np.ndarray, candidates: Sequence[str], n: int) -> np.ndarray:
        a, b = self._ab(candidates)
        return self.rng.beta(a, b, size=(n, len(candidates)))

    def learn_impression(self, arm: str, x: np.ndarray | None = None, shared: np.ndarray | None = None) -> None:
        r = self.add_arm(arm)
        self._arrays["failures"][r] += 1.0
        self._count(impressions=1.0)

    def learn_reward(self, arm: str, x: np.ndarray | None, reward: float, shared: np.ndarray | None = None) -> None:
        r = self.add_arm(arm)
        self._arrays["successes"][r] += reward
        self._arrays["failures"][r] -= reward
        self._count(reward=reward, rewarded=1.0)

    def learn_batch(self, arms: Sequence[str], X: np.ndarray | None, rewards: np.ndarray,
                    shared: np.ndarray | None = None) -> None:
        self.learn_batch_rows(self.rows_of(arms), np.asarray(rewards, dtype=float))

    def learn_batch_rows(self, rows: np.ndarray, rewards: np.ndarray) -> None:
        n = len(self.arms)
        wins = np.bincount(rows, weights=rewards, minlength=n)
        self._arrays["successes"][:n] += wins
        self._arrays["failures"][:n] += np.bincount(rows, minlength=n) - wins
        self._count(impressions=float(len(rows)), reward=float(rewards.sum()),
                    rewarded=float(np.count_nonzero(rewards)))
