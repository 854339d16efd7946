"""Per-arm impression counts and reward sums: the whole state of the context-free bandits
(uniform random, ε-greedy, UCB1).

Both arrays are plain sums, so ``learn_batch`` is a scatter-add and shards merge exactly by addition.
An impression counts at once with reward 0; a reward (increment) that arrives later is added to
``reward_sum``, so delayed feedback gives the same state as ``learn_one`` in any order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from banditloop.operators.base import Learner


class ArmCounts(Learner):
    """Base for learners whose state is ``n`` (impressions) and ``reward_sum`` per arm."""

    additive_arrays = ("n", "reward_sum")

    def _arm_arrays(self):
        return {"n": ((), 0.0), "reward_sum": ((), 0.0)}

    def counts(self, arm: str) -> tuple[float, float]:
        """``(impressions, reward sum)`` of ``arm``."""
        r = self.arm_index[arm]
        return float(self._arrays["n"][r]), float(self._arrays["reward_sum"][r])

    def _means(self, rows: np.ndarray, default: float) -> np.ndarray:
        """Mean reward of each row; ``default`` for arms never shown."""
        n = self._arrays["n"][rows]
        s = self._arrays["reward_sum"][rows]
        return np.divide(s, n, out=np.full(n.shape, float(default)), where=n > 0)

    def learn_impression(self, arm: str, x: np.ndarray | None = None, shared: np.ndarray | None = None) -> None:
        r = self.add_arm(arm)
        self._arrays["n"][r] += 1.0
        self._count(impressions=1.0)

    def learn_reward(self, arm: str, x: np.ndarray | None, reward: float, shared: np.ndarray | None = None) -> None:
        r = self.add_arm(arm)
        self._arrays["reward_sum"][r] += reward
        self._count(reward=reward, rewarded=1.0)

    def learn_batch(self, arms: Sequence[str], X: np.ndarray | None, rewards: np.ndarray,
                    shared: np.ndarray | None = None) -> None:
        self.learn_batch_rows(self.rows_of(arms), np.asarray(rewards, dtype=float))

    def learn_batch_rows(self, rows: np.ndarray, rewards: np.ndarray) -> None:
        """``learn_batch`` for arms already mapped to rows (see ``rows_of``)."""
        n = len(self.arms)
        self._arrays["n"][:n] += np.bincount(rows, minlength=n)
        self._arrays["reward_sum"][:n] += np.bincount(rows, weights=rewards, minlength=n)
        self._count(impressions=float(len(rows)), reward=float(rewards.sum()),
                    rewarded=float(np.count_nonzero(rewards)))
