"""UCB1 (Auer, Cesa-Bianchi & Fischer 2002, "Finite-time analysis of the multiarmed bandit problem").

Score ``mean_a + c·sqrt(2 ln N / n_a)`` with ``N`` the impressions of all arms and ``n_a`` those of
arm ``a``, counted when they are seen (the bonus shrinks while their feedback is pending), and
``mean_a`` the mean reward over the arm's impressions whose feedback window closed (0 while there is
none), so a pending impression is never taken for a 0 (see :mod:`banditloop.operators.counts`).
``c = 1`` is the paper's index for rewards in [0, 1], and scales the bonus for other reward ranges.
The Hoeffding bonus is loose for click rates: prefer ``kl-ucb`` or ``ts`` for Bernoulli rewards.

Pending feedback (``pending``, as ``kl-ucb``): ``"shrink"`` (the default, above) counts an impression
in ``N`` and ``n_a`` when it is seen, so requests spread over the arms while outcomes are pending;
``"wait"`` counts only impressions whose window closed: the textbook index on what was observed,
which does not move while outcomes are pending (a burst of requests all goes to one arm). Under
long delays ``"shrink"`` has the lower regret (``benchmarks/chapelle_li.py``: UCB1/TS falls with the
delay under ``"shrink"`` and grows under ``"wait"``, as the paper's UCB does).

Every arm is played once first: an arm never shown scores :data:`UNPLAYED_SCORE`, a large *finite*
number (1e300) rather than ``inf`` so that scores stay valid JSON and arithmetic on them stays
finite. The policy is a deterministic argmax: propensity 1, or ``1/ties`` when scores tie (e.g.
among unplayed arms).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from banditloop.operators.base import Shared
from banditloop.operators.counts import ArmCounts

#: what counts in the confidence width: impressions when seen ("shrink") or when their window closed ("wait")
UCB1_PENDING = ("shrink", "wait")

#: score of an arm that was never shown: above any real index, but finite (JSON has no infinity)
UNPLAYED_SCORE = 1e300


class UCB1(ArmCounts):
    """UCB1 (Auer et al. 2002): mean + ``c·sqrt(2 ln n / n_a)``; for Bernoulli rewards prefer ``kl-ucb``.

    >>> ucb = UCB1()
    >>> for _ in range(30):
    ...     ucb.learn_one("a", None, 1.0)
    ...     ucb.learn_one("b", None, 0.0)
    >>> ucb.choose(None, ["a", "b"]).arm
    'a'
    """

    kind = "ucb1"

    def __init__(self, dim: int = 1, c: float = 1.0, pending: str = "shrink", seed: int = 0) -> None:
        if c < 0:
            raise ValueError("c must be >= 0")
        if pending not in UCB1_PENDING:
            raise ValueError(f"pending must be one of {UCB1_PENDING}, got {pending!r}")
        self.c = float(c)
        self.pending = pending
        super().__init__(dim, seed)

    def score(self, x: np.ndarray | None, candidates: Sequence[str], shared: Shared = None) -> np.ndarray:
        rows = self._rows(candidates)
        counts = self._arrays["n" if self.pending == "shrink" else "resolved"]
        total = float(counts[: len(self.arms)].sum())
        n = counts[rows]
        played = n > 0
        out = np.full(n.shape, UNPLAYED_SCORE)
        mean = self._means(rows, 0.0)[played]
        out[played] = mean + self.c * np.sqrt(2.0 * np.log(max(total, 1.0)) / n[played])
        return out


class DiscountedUCB(UCB1):
    """Discounted UCB for arms whose rates change (Garivier & Moulines 2011).

    "On upper-confidence bound policies for switching bandit problems": UCB1 on counts and sums
    that are multiplied by ``discount`` = γ after each outcome learned (see
    :mod:`banditloop.operators.counts`), so ``N``, ``n_a`` and the means are
    discounted and the bonus of an arm not shown for a while grows back. Memory ≈ ``1/(1-γ)``
    outcomes; the authors' choice for ``Υ`` change points in ``T`` steps is ``γ = 1 - sqrt(Υ/T)/4``.
    Merge adds the discounted counts of the shards as they stand (not exact).

    >>> ucb = DiscountedUCB(discount=0.5)
    >>> ucb.learn_one("a", None, 1.0); ucb.learn_one("b", None, 0.0)
    >>> ucb.counts("a")  # one impression and one click, aged by two outcomes
    (0.25, 0.25)
    """

    kind = "discounted-ucb"
    exact_merge = False

    def __init__(self, dim: int = 1, c: float = 1.0, discount: float = 0.999, pending: str = "shrink",
                 seed: int = 0) -> None:
        if not 0.0 < discount <= 1.0:
            raise ValueError("discount must be in (0, 1]")
        self.discount = float(discount)
        super().__init__(dim, c=c, pending=pending, seed=seed)
