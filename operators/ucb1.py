"""UCB1 (Auer, Cesa-Bianchi & Fischer 2002, "Finite-time analysis of the multiarmed bandit problem").

Score ``mean_a + c·sqrt(2 ln N / n_a)`` with ``N`` the impressions of all arms and ``n_a`` those of
arm ``a``; ``c = 1`` is the paper's index for rewards in [0, 1], and scales the bonus for other reward
ranges. Every arm is played once first: an arm never shown scores :data:`UNPLAYED_SCORE`, a large
*finite* number (1e300) rather than ``inf`` so that scores stay valid JSON and arithmetic on them
stays finite. The policy is a deterministic argmax: propensity 1, or ``1/ties`` when scores tie (e.g.
among unplayed arms).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from banditloop.operators.base import Shared
from banditloop.operators.counts import ArmCounts

#: score of an arm that was never shown: above any real index, but finite (JSON has no infinity)
UNPLAYED_SCORE = 1e300


class UCB1(ArmCounts):
    kind = "ucb1"

    def __init__(self, dim: int = 1, c: float = 1.0, seed: int = 0) -> None:
        if c < 0:
            raise ValueError("c must be >= 0")
        self.c = float(c)
        super().__init__(dim, seed)

    def score(self, x: np.ndarray | None, candidates: Sequence[str], shared: Shared = None) -> np.ndarray:
        rows = self._rows(candidates)
        total = float(self._arrays["n"][: len(self.arms)].sum())
        n = self._arrays["n"][rows]
        played = n > 0
        out = np.full(n.shape, UNPLAYED_SCORE)
        mean = self._arrays["reward_sum"][rows][played] / n[played]
        out[played] = mean + self.c * np.sqrt(2.0 * np.log(max(total, 1.0)) / n[played])
        return out
