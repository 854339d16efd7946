"""Per-arm impression counts and reward sums: the whole state of the context-free bandits
(uniform random, ε-greedy, UCB1).

Pending feedback: an impression is counted when it is seen (``n``: UCB1's confidence width shrinks
at once), but the *mean* reward of an arm is taken over impressions whose feedback window closed
(``resolved``, ``resolved_reward``, learned in ``learn_close``), so a pending impression is never
taken for a 0. Rewards are also summed as they arrive (``reward_sum``, for reporting). All arrays are
plain sums, so ``learn_batch`` is a scatter-add and shards merge exactly by addition.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from banditloop.operators.base import Learner


class ArmCounts(Learner):
    """Base for learners whose state is impression counts and reward sums per arm."""

    additive_arrays = ("n", "reward_sum", "resolved", "resolved_reward")
    learns_at_close = True
    close_without_context = True
    #: γ: after each outcome learned, every count and sum is multiplied by γ (1: no forgetting)
    discount: float = 1.0

    def _arm_arrays(self):
        return {"n": ((), 0.0), "reward_sum": ((), 0.0), "resolved": ((), 0.0), "resolved_reward": ((), 0.0)}

    def counts(self, arm: str) -> tuple[float, float]:
        """``(impressions, reward sum)`` of ``arm``."""
        r = self.arm_index[arm]
        return float(self._arrays["n"][r]), float(self._arrays["reward_sum"][r])

    def _means(self, rows: np.ndarray, default: float) -> np.ndarray:
        """Mean reward of each row over its closed impressions; ``default`` for arms with none."""
        n = self._arrays["resolved"][rows]
        s = self._arrays["resolved_reward"][rows]
        return np.divide(s, n, out=np.full(n.shape, float(default)), where=n > 0)

    def learn_impression(self, arm: str, x: np.ndarray | None = None, shared: np.ndarray | None = None) -> None:
        r = self.add_arm(arm)
        self._arrays["n"][r] += 1.0
        self._count(impressions=1.0)

    def learn_reward(self, arm: str, x: np.ndarray | None, reward: float, shared: np.ndarray | None = None) -> None:
        r = self.add_arm(arm)
        self._arrays["reward_sum"][r] += reward
        self._count(reward=reward, rewarded=1.0)

    def learn_close(self, arm: str, x: np.ndarray | None, reward: float, shared: np.ndarray | None = None) -> None:
        r = self.add_arm(arm)
        self._arrays["resolved"][r] += 1.0
        self._arrays["resolved_reward"][r] += reward
        if self.discount < 1.0:
            n = len(self.arms)
            for arr in self._arrays.values():
                arr[:n] *= self.discount

    def learn_batch(self, arms: Sequence[str], X: np.ndarray | None, rewards: np.ndarray,
                    shared: np.ndarray | None = None) -> None:
        self.learn_batch_rows(self.rows_of(arms), np.asarray(rewards, dtype=float))

    def learn_batch_rows(self, rows: np.ndarray, rewards: np.ndarray) -> None:
        """``learn_batch`` for arms already mapped to rows (see ``rows_of``)."""
        n = len(self.arms)
        a = self._arrays
        if self.discount < 1.0:  # row i (of m) ages m - i times: weight γ^(m-i); the state γ^m
            m = len(rows)
            weight = self.discount ** np.arange(m, 0, -1, dtype=float)
            for arr in a.values():
                arr[:n] *= self.discount**m
            counts = np.bincount(rows, weights=weight, minlength=n)
            sums = np.bincount(rows, weights=weight * rewards, minlength=n)
        else:
            counts = np.bincount(rows, minlength=n)
            sums = np.bincount(rows, weights=rewards, minlength=n)
        a["n"][:n] += counts
        a["reward_sum"][:n] += sums
        a["resolved"][:n] += counts
        a["resolved_reward"][:n] += sums
        self._count(impressions=float(len(rows)), reward=float(rewards.sum()),
                    rewarded=float(np.count_nonzero(rewards)))
