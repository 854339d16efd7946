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

Non-stationary worlds (``discount`` = γ < 1; registered as ``discounted-ts``, Raj & Kalyani 2017):
after each outcome is learned (each closed window, each row of ``learn_one``/``learn_batch``) every
arm's successes and failures are multiplied by γ, so the outcome learned ``k`` outcomes ago weighs
``γᵏ`` and the posterior reverts to the prior as it forgets. The memory is about ``1/(1-γ)`` outcomes
over all arms. Choosing γ: the memory must hold enough outcomes to tell the arms apart (with K arms
and a gap Δ between the best two, ``1/(1-γ) ≳ K·8/Δ²``), and be shorter than the time over which the
arms change (between change points, or over which drift moves a rate by about Δ). For click rates
of a few percent and K = 10 that is γ ∈ [0.999, 0.9999]; γ = 1 is the stationary learner.

Per-arm priors and warm start: ``arm_priors = {arm: [α, β]}`` replaces the prior of those arms (others
keep ``prior_alpha``, ``prior_beta``); :func:`priors_from_state` turns the state of another Beta TS
model (a checkpoint) into such priors with a chosen strength, so a new model starts from what an
old one learned but with the weight of a few observations only.

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

from banditloop.core.state_codec import LearnerState
from banditloop.operators.base import Learner, Shared
from banditloop.operators.policies import SampledPolicy

#: what a Bernoulli learner learns from an impression whose feedback is still pending
PENDING_MODES = ("wait", "failure")


class BetaTS(SampledPolicy, Learner):
    """Beta-Bernoulli Thompson sampling; see the module docstring for the pending-feedback modes.

    >>> ts = BetaTS(seed=1)
    >>> for _ in range(30):
    ...     ts.learn_one("a", None, 1.0)
    ...     ts.learn_one("b", None, 0.0)
    >>> ts.choose(None, ["a", "b"]).arm
    'a'
    """

    kind = "ts"
    binary_reward = True
    close_without_context = True
    additive_arrays = ("successes", "failures")
    derived_arrays = ("alpha0", "beta0")

    def __init__(self, dim: int = 1, prior_alpha: float = 1.0, prior_beta: float = 1.0,
                 propensity_draws: int = 256, pending: str = "wait", discount: float = 1.0,
                 arm_priors: dict[str, list[float]] | None = None, seed: int = 0) -> None:
        if prior_alpha <= 0 or prior_beta <= 0:
            raise ValueError("Beta priors must be > 0")
        for arm, ab in (arm_priors or {}).items():
            if len(ab) != 2 or not all(float(v) > 0 and np.isfinite(float(v)) for v in ab):
                raise ValueError(f"arm_priors[{arm!r}] must be [alpha, beta], both finite and > 0")
        self.arm_priors = arm_priors
        if not 0.0 < discount <= 1.0:
            raise ValueError("discount must be in (0, 1]")
        self.discount = float(discount)
        if pending not in PENDING_MODES:
            raise ValueError(f"pending must be one of {PENDING_MODES}, got {pending!r}")
        self.prior_alpha = float(prior_alpha)
        self.prior_beta = float(prior_beta)
        self.propensity_draws = int(propensity_draws)
        self.pending = pending
        self.learns_at_close = pending == "wait" or self.discount < 1.0
        super().__init__(dim, seed)

    def _arm_arrays(self):
        return {"successes": ((), 0.0), "failures": ((), 0.0),
                "alpha0": ((), self.prior_alpha), "beta0": ((), self.prior_beta)}

    @classmethod
    def from_state(cls, state: LearnerState) -> Learner:
        """A state saved before pending modes existed counted every impression as a failure when it
        was seen; it resumes in that mode (``pending="failure"``), so no impression counts twice."""
        if "pending" not in state.params:
            state = LearnerState(kind=state.kind, params={**state.params, "pending": "failure"}, arms=state.arms,
                                 retired=state.retired, arrays=state.arrays, counters=state.counters, rng=state.rng)
        return super().from_state(state)

    def add_arm(self, arm: str) -> int:
        new = str(arm) not in self.arm_index
        r = super().add_arm(arm)
        if new and self.arm_priors and str(arm) in self.arm_priors:
            self._arrays["alpha0"][r], self._arrays["beta0"][r] = (float(v) for v in self.arm_priors[str(arm)])
        return r

    def posterior(self, arm: str) -> tuple[float, float]:
        r = self.arm_index[arm]
        a = self._arrays
        return (float(a["alpha0"][r] + a["successes"][r]), float(a["beta0"][r] + a["failures"][r]))

    def _ab(self, candidates: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        rows = self._rows(candidates)
        a = self._arrays
        return a["alpha0"][rows] + a["successes"][rows], a["beta0"][rows] + a["failures"][rows]

    def score(self, x: np.ndarray, candidates: Sequence[str], shared: Shared = None) -> np.ndarray:
        a, b = self._ab(candidates)
        return self.rng.beta(a, b)

    def _draws(self, x: np.ndarray, candidates: Sequence[str], n: int) -> np.ndarray:
        a, b = self._ab(candidates)
        return self.rng.beta(a, b, size=(n, len(candidates)))

    def learn_impression(self, arm: str, x: np.ndarray | None = None, shared: np.ndarray | None = None) -> None:
        r = self.add_arm(arm)
        if self.pending == "failure":
            self._arrays["failures"][r] += 1.0
        self._count(impressions=1.0)

    def learn_reward(self, arm: str, x: np.ndarray | None, reward: float, shared: np.ndarray | None = None) -> None:
        r = self.add_arm(arm)
        self._arrays["successes"][r] += reward
        if self.pending == "failure":
            self._arrays["failures"][r] -= reward
        self._count(reward=reward, rewarded=1.0)

    def learn_close(self, arm: str, x: np.ndarray | None, reward: float, shared: np.ndarray | None = None) -> None:
        r = self.add_arm(arm)  # first: adding an arm may reallocate the arrays
        if self.pending == "wait":
            self._arrays["failures"][r] += 1.0 - reward
        if self.discount < 1.0:  # every statistic ages by one outcome
            n = len(self.arms)
            self._arrays["successes"][:n] *= self.discount
            self._arrays["failures"][:n] *= self.discount

    def learn_sequence(self, kinds: np.ndarray, rows: np.ndarray, X: np.ndarray | None, values: np.ndarray) -> bool:
        """``learn_impression`` (kind 0), ``learn_reward`` (1, ``values`` = increment) and ``learn_close``
        (2, ``values`` = final reward) for arm rows ``rows`` (from ``rows_of``) in this order, bit for bit:
        ``np.add.at`` adds each statistic's terms in sequence. False (nothing learned) when discounting,
        which needs the calls one by one."""
        if self.discount < 1.0:
            return False
        a = self._arrays
        rewarded = kinds == 1
        np.add.at(a["successes"], rows[rewarded], values[rewarded])
        if self.pending == "failure":  # +1 per impression, -reward per reward, in their order
            touched = kinds != 2
            np.add.at(a["failures"], rows[touched], np.where(kinds == 0, 1.0, -values)[touched])
        else:
            closed = kinds == 2
            np.add.at(a["failures"], rows[closed], 1.0 - values[closed])
        c = self.counters
        c["impressions"] += float(np.count_nonzero(kinds == 0))  # sums of 1.0: exact
        reward_sum = c["reward_sum"]
        for reward in values[rewarded].tolist():
            reward_sum += reward
        c["reward_sum"] = reward_sum
        c["rewards"] += float(np.count_nonzero(rewarded))
        return True

    def learn_batch(self, arms: Sequence[str], X: np.ndarray | None, rewards: np.ndarray,
                    shared: np.ndarray | None = None) -> None:
        self.learn_batch_rows(self.rows_of(arms), np.asarray(rewards, dtype=float))

    def learn_batch_rows(self, rows: np.ndarray, rewards: np.ndarray) -> None:
        """Outcomes known at once (impression, reward and close): the same for both pending modes."""
        n = len(self.arms)
        if self.discount < 1.0:  # row i (of m) ages m - i times: weight γ^(m-i); the state γ^m
            m = len(rows)
            weight = self.discount ** np.arange(m, 0, -1, dtype=float)
            for name in ("successes", "failures"):
                self._arrays[name][:n] *= self.discount**m
            self._arrays["successes"][:n] += np.bincount(rows, weights=weight * rewards, minlength=n)
            self._arrays["failures"][:n] += np.bincount(rows, weights=weight * (1.0 - rewards), minlength=n)
            self._count(impressions=float(m), reward=float(rewards.sum()),
                        rewarded=float(np.count_nonzero(rewards)))
            return
        wins = np.bincount(rows, weights=rewards, minlength=n)
        self._arrays["successes"][:n] += wins
        self._arrays["failures"][:n] += np.bincount(rows, minlength=n) - wins
        self._count(impressions=float(len(rows)), reward=float(rewards.sum()),
                    rewarded=float(np.count_nonzero(rewards)))


class DiscountedBetaTS(BetaTS):
    """Discounted Thompson sampling for arms whose rates change (Raj & Kalyani 2017).

    :class:`BetaTS` with ``discount < 1`` by default; see the module docstring for choosing it.
    Merge adds the discounted counts of the shards
    as they stand (not exact: the shards' outcomes interleave in time).

    >>> ts = DiscountedBetaTS(discount=0.5)
    >>> ts.learn_one("a", None, 1.0); ts.learn_one("b", None, 0.0)
    >>> ts.posterior("a")  # 1 success, aged by two outcomes
    (1.25, 1.0)
    """

    kind = "discounted-ts"
    exact_merge = False

    def __init__(self, dim: int = 1, prior_alpha: float = 1.0, prior_beta: float = 1.0,
                 propensity_draws: int = 256, pending: str = "wait", discount: float = 0.999,
                 arm_priors: dict[str, list[float]] | None = None, seed: int = 0) -> None:
        super().__init__(dim, prior_alpha=prior_alpha, prior_beta=prior_beta, propensity_draws=propensity_draws,
                         pending=pending, discount=discount, arm_priors=arm_priors, seed=seed)


def priors_from_state(state: LearnerState, strength: float = 10.0) -> dict[str, list[float]]:
    """Warm start: per-arm Beta priors with the posterior means of a Beta TS state (a checkpoint of
    another model) and ``strength`` pseudo-observations each, for ``arm_priors``.

    >>> old = BetaTS()
    >>> for r in [1.0] * 29 + [0.0] * 69:
    ...     old.learn_one("a", None, r)
    >>> priors_from_state(old.export_state(), strength=20.0)
    {'a': [6.0, 14.0]}
    """
    if not strength > 0:
        raise ValueError("strength must be > 0")
    if state.kind not in ("ts", "discounted-ts"):
        raise ValueError(f"priors come from a Beta TS state, not {state.kind!r}")
    old = BetaTS.from_state(LearnerState(kind="ts", params={k: v for k, v in state.params.items()
                                                            if k in BetaTS(1).params()},
                                         arms=state.arms, retired=state.retired, arrays=state.arrays,
                                         counters=state.counters, rng=state.rng))
    assert isinstance(old, BetaTS)
    out = {}
    for arm in old.arms:
        a, b = old.posterior(arm)
        mean = a / (a + b)
        out[arm] = [strength * mean, strength * (1.0 - mean)]
    return out
