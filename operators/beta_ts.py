"""Beta-Bernoulli Thompson sampling, one Beta(α₀ + successes, β₀ + failures) per arm.

Pending feedback (``pending``):

* ``"wait"`` (default, the literature's setting): an impression whose outcome is pending is not
  learned at all; a click adds a success when it arrives, and the impression's failure part
  (``1 - reward``) is added when its feedback window closes (``learn_close``). Chapelle & Li (2011,
  Table 1) learn outcomes revealed in batches exactly so, and ``benchmarks/chapelle_li.py``
  reproduces their figures with it.
* ``"failure"``: the impression counts as a failure when it is seen and a click moves it to the
  successes. Every pending impression is then a failure: the arms being shown look worse than they
  are, and under long delays the sampler keeps switching away from the best arm (regret ×2.2 at
  δ = 1000 in the benchmark). Kept for comparison and for pipelines that never close windows.

Rewards are clipped to [0, 1] by the pipeline (``binary_reward``). The propensity of a draw is
estimated by Monte Carlo over ``propensity_draws`` joint draws, the standard practice for logging
Thompson sampling.

>>> ts = BetaTS()
>>> ts.learn_one("a", None, 1.0); ts.learn_one("b", None, 0.0)
>>> ts.posterior("a"), ts.posterior("b")
((2.0, 1.0), (1.0, 2.0))
>>> ts.learn_impression("b")  # pending: not a failure
>>> ts.posterior("b")
(1.0, 2.0)
>>> ts.learn_close("b", None, 0.0)  # the window closed without a click
>>> ts.posterior("b")
(1.0, 3.0)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from banditloop.operators.base import Learner, SampledPolicy, Shared

#: what a Bernoulli learner learns from an impression whose feedback is still pending
PENDING_MODES = ("wait", "failure")


class BetaTS(SampledPolicy, Learner):
    """Beta-Bernoulli Thompson sampling; see the module docstring for the pending-feedback modes."""

    kind = "ts"
    binary_reward = True
    additive_arrays = ("successes", "failures")

    def __init__(self, dim: int = 1, prior_alpha: float = 1.0, prior_beta: float = 1.0,
                 propensity_draws: int = 256, pending: str = "wait", seed: int = 0) -> None:
        if prior_alpha <= 0 or prior_beta <= 0:
            raise ValueError("Beta priors must be > 0")
        if pending not in PENDING_MODES:
            raise ValueError(f"pending must be one of {PENDING_MODES}, got {pending!r}")
        self.prior_alpha = float(prior_alpha)
        self.prior_beta = float(prior_beta)
        self.propensity_draws = int(propensity_draws)
        self.pending = pending
        self.learns_at_close = pending == "wait"
        super().__init__(dim, seed)

    def params(self) -> dict:
        return {**super().params(), "prior_alpha": self.prior_alpha, "prior_beta": self.prior_beta,
                "propensity_draws": self.propensity_draws, "pending": self.pending}

    def _arm_arrays(self):
        return {"successes": ((), 0.0), "failures": ((), 0.0)}

    def posterior(self, arm: str) -> tuple[float, float]:
        r = self.arm_index[arm]
        return (self.prior_alpha + float(self._arrays["successes"][r]),
                self.prior_beta + float(self._arrays["failures"][r]))

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
        if not self.learns_at_close:
            self._arrays["failures"][r] += 1.0
        self._count(impressions=1.0)

    def learn_reward(self, arm: str, x: np.ndarray | None, reward: float, shared: np.ndarray | None = None) -> None:
        r = self.add_arm(arm)
        self._arrays["successes"][r] += reward
        if not self.learns_at_close:
            self._arrays["failures"][r] -= reward
        self._count(reward=reward, rewarded=1.0)

    def learn_close(self, arm: str, x: np.ndarray | None, reward: float, shared: np.ndarray | None = None) -> None:
        r = self.add_arm(arm)  # first: adding an arm may reallocate the arrays
        if self.learns_at_close:
            self._arrays["failures"][r] += 1.0 - reward

    def learn_batch(self, arms: Sequence[str], X: np.ndarray | None, rewards: np.ndarray,
                    shared: np.ndarray | None = None) -> None:
        self.learn_batch_rows(self.rows_of(arms), np.asarray(rewards, dtype=float))

    def learn_batch_rows(self, rows: np.ndarray, rewards: np.ndarray) -> None:
        """Outcomes known at once (impression, reward and close): the same for both pending modes."""
        n = len(self.arms)
        wins = np.bincount(rows, weights=rewards, minlength=n)
        self._arrays["successes"][:n] += wins
        self._arrays["failures"][:n] += np.bincount(rows, minlength=n) - wins
        self._count(impressions=float(len(rows)), reward=float(rewards.sum()),
                    rewarded=float(np.count_nonzero(rewards)))
