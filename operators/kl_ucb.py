"""KL-UCB for Bernoulli rewards (Garivier & Cappé 2011, "The KL-UCB algorithm for bounded stochastic
bandits and beyond"; Cappé et al. 2013).

Index of arm ``a``: ``max {q ∈ [p̂_a, 1] : N_a · kl(p̂_a, q) ≤ log t + c · log log t}`` with ``kl`` the
Bernoulli Kullback–Leibler divergence, ``p̂_a`` the arm's mean reward, ``N_a`` its number of
observations and ``t`` the total. ``c = 0`` is the variant the authors recommend in practice
(``c = 3`` is the one their bound is proved for). The bound is tight for Bernoulli rewards, where
UCB1's Hoeffding bonus ``sqrt(2 log t / N)`` is loose (2-4× the regret on click rates of a few
percent). Deterministic argmax: propensity 1 (``1/ties`` on ties).

Pending feedback (``pending``), rewards in [0, 1] (the pipeline clips them, ``binary_reward``):

* ``"wait"`` (default): the mean and the counts use only impressions whose feedback window closed
  (``learn_close``): the textbook index on everything observed. Pending impressions change nothing,
  so within a window the index of an arm does not move and a burst of requests all go to one arm:
  fine when feedback is quick compared to the traffic, costly under long delays.
* ``"shrink"``: the mean still uses closed impressions only (a pending impression is never taken for
  a failure), but ``N_a`` and ``t`` count impressions when they are seen, so the bonus of an arm
  shrinks as it is shown and requests spread over the arms while their outcomes are pending. An arm
  shown but with no closed window yet has ``p̂ = 0`` (its index ``1 - exp(-(log t)/N_a)`` falls as it
  is shown), so a new arm is not flooded for a whole window.

An arm never shown scores 1 (the largest possible index); ties are broken uniformly at random.

>>> kl = KLUCB()
>>> for r in (1, 0, 0, 1):
...     kl.learn_one("a", None, r)
>>> round(float(kl.score(None, ["a", "new"])[0]), 4), float(kl.score(None, ["a", "new"])[1])
(0.8536, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from banditloop.operators.base import Learner, Shared

KL_UCB_PENDING = ("wait", "shrink")
_EPS = 1e-15


def bernoulli_kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``kl(p, q) = p log(p/q) + (1-p) log((1-p)/(1-q))``, elementwise (``0 log 0 = 0``, to ~1e-13)."""
    p = np.clip(p, _EPS, 1.0 - _EPS)
    q = np.clip(q, _EPS, 1.0 - _EPS)
    return p * np.log(p / q) + (1.0 - p) * np.log((1.0 - p) / (1.0 - q))


def kl_ucb_index(p: np.ndarray, budget: np.ndarray, iterations: int = 30) -> np.ndarray:
    """The largest ``q ∈ [p, 1]`` with ``kl(p, q) ≤ budget``, elementwise.

    Newton's method from above: ``kl(p, ·)`` is convex and increasing on ``[p, 1]``, so from a point
    right of the root the iterates decrease monotonically to it (quadratically near it). The start is
    the smaller of two upper bounds of the root: Pinsker's ``p + sqrt(budget/2)`` and
    ``1 - (1-p) exp(-(budget - p log p)/(1-p))`` (from ``kl(p, q) ≥ p log p + (1-p) log((1-p)/(1-q))``).
    """
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    budget = np.maximum(np.asarray(budget, dtype=float), 0.0)
    pc = np.clip(p, _EPS, 1.0 - _EPS)
    with np.errstate(over="ignore", under="ignore"):
        tail = 1.0 - (1.0 - pc) * np.exp(-(budget - pc * np.log(pc)) / (1.0 - pc))
    q = np.minimum(np.minimum(p + np.sqrt(budget / 2.0), tail), 1.0 - _EPS)
    q = np.maximum(q, p)
    for _ in range(iterations):
        f = bernoulli_kl(pc, q) - budget
        step = f * q * (1.0 - q) / np.maximum(q - pc, _EPS)  # f / (d kl / dq)
        new = np.maximum(q - np.maximum(step, 0.0), p)
        if not q.size or np.max(np.abs(new - q)) < 1e-13:
            q = new
            break
        q = new
    return np.where(p >= 1.0 - _EPS, 1.0, q)


class KLUCB(Learner):
    """KL-UCB for Bernoulli rewards (Garivier & Cappé 2011); see the module docstring.

    >>> kl = KLUCB()
    >>> for _ in range(30):
    ...     kl.learn_one("a", None, 1.0)
    ...     kl.learn_one("b", None, 0.0)
    >>> kl.choose(None, ["a", "b"]).arm
    'a'
    """

    kind = "kl-ucb"
    binary_reward = True
    learns_at_close = True
    close_without_context = True
    additive_arrays = ("n", "resolved", "successes")

    def __init__(self, dim: int = 1, c: float = 0.0, pending: str = "wait", seed: int = 0) -> None:
        if c < 0:
            raise ValueError("c must be >= 0")
        if pending not in KL_UCB_PENDING:
            raise ValueError(f"pending must be one of {KL_UCB_PENDING}, got {pending!r}")
        self.c = float(c)
        self.pending = pending
        self._kl_cache: tuple[tuple[str, ...], np.ndarray] | None = None
        super().__init__(dim, seed)

    def _arm_arrays(self):
        # n: impressions seen; resolved: impressions whose window closed; successes: their rewards
        return {"n": ((), 0.0), "resolved": ((), 0.0), "successes": ((), 0.0)}

    def _changed(self) -> None:
        self._kl_cache = None

    def _on_load(self) -> None:
        self._changed()

    def _on_resize(self) -> None:
        self._changed()

    def indices(self, candidates: Sequence[str]) -> np.ndarray:
        """The KL-UCB index of each candidate (1 for an arm never shown)."""
        key = tuple(candidates)
        cached = self._kl_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        rows = self._rows(key)
        m = len(self.arms)
        resolved = self._arrays["resolved"][rows]
        count = self._arrays["n"][rows] if self.pending == "shrink" else resolved
        total = float((self._arrays["n"] if self.pending == "shrink" else self._arrays["resolved"])[:m].sum())
        log_t = math.log(max(total, 1.0))
        budget_total = log_t + (self.c * math.log(log_t) if log_t > 1.0 else 0.0)
        p = np.divide(self._arrays["successes"][rows], resolved, out=np.zeros(len(key)), where=resolved > 0)
        out = np.ones(len(key))
        seen = count > 0
        out[seen] = kl_ucb_index(p[seen], budget_total / count[seen])
        self._kl_cache = (key, out)
        return out

    def score(self, x: np.ndarray | None, candidates: Sequence[str], shared: Shared = None) -> np.ndarray:
        return self.indices(candidates).copy()

    def learn_impression(self, arm: str, x: np.ndarray | None = None, shared: np.ndarray | None = None) -> None:
        r = self.add_arm(arm)  # first: adding an arm may reallocate the arrays
        self._arrays["n"][r] += 1.0
        self._count(impressions=1.0)
        if self.pending == "shrink":
            self._changed()

    def learn_reward(self, arm: str, x: np.ndarray | None, reward: float, shared: np.ndarray | None = None) -> None:
        self.add_arm(arm)
        self._count(reward=reward, rewarded=1.0)  # learned with the close: the mean is of closed windows

    def learn_close(self, arm: str, x: np.ndarray | None, reward: float, shared: np.ndarray | None = None) -> None:
        r = self.add_arm(arm)
        self._arrays["resolved"][r] += 1.0
        self._arrays["successes"][r] += reward
        self._changed()

    def learn_batch(self, arms: Sequence[str], X: np.ndarray | None, rewards: np.ndarray,
                    shared: np.ndarray | None = None) -> None:
        rows = self.rows_of(arms)
        rewards = np.asarray(rewards, dtype=float)
        m = len(self.arms)
        counts = np.bincount(rows, minlength=m)
        self._arrays["n"][:m] += counts
        self._arrays["resolved"][:m] += counts
        self._arrays["successes"][:m] += np.bincount(rows, weights=rewards, minlength=m)
        self._count(impressions=float(len(rows)), reward=float(rewards.sum()),
                    rewarded=float(np.count_nonzero(rewards)))
        self._changed()
