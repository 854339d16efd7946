"""A whole simulated stream as arrays, for benchmarks and regret studies that replay one world.

The world's draws do not depend on the policy (see :mod:`banditloop.simulators.world`), so a run of ``steps``
requests can be drawn once and replayed for every policy: each step holds the context, the
candidates, every candidate's expected reward and the reward it *would* realise if shown. A policy's
reward is then a lookup, and all policies face the same contexts and common random numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from banditloop.simulators.config import WorldConfig
from banditloop.simulators.world import World


@dataclass(frozen=True)
class Stream:
    """``steps`` requests of one world. Candidates are indexes into ``arms`` (every arm ever seen)."""

    config: WorldConfig
    arms: list[str]
    #: (steps, dim) raw contexts (``context["x{i}"] == X[t, i]``)
    X: np.ndarray
    #: (steps, m) indexes into ``arms``
    candidates: np.ndarray
    #: (steps, m) expected reward of each candidate under ``config.reward``
    expected: np.ndarray
    #: (steps, m) realised reward of each candidate if it were shown
    rewards: np.ndarray
    #: (steps,) event time
    ts: np.ndarray
    #: (step, arm index) for every arm that retired just before that step
    retirements: list[tuple[int, int]]

    @property
    def steps(self) -> int:
        return self.X.shape[0]

    def oracle_expected(self) -> np.ndarray:
        """(steps,) the best candidate's expected reward per step."""
        return self.expected.max(axis=1)

    def with_bias(self) -> np.ndarray:
        """Contexts with a leading constant 1, the layout of ``Featurizer(FeatureSpec(dim=dim + 1,
        numeric=dense_names("x", dim)))``."""
        return np.hstack([np.ones((self.steps, 1)), self.X])


def draw_stream(config: WorldConfig, steps: int) -> Stream:
    """Draw ``steps`` requests of ``World(config)`` into arrays (identical to stepping the world)."""
    world = World(config)
    m = config.offered
    X = np.empty((steps, config.dim))
    cand = np.empty((steps, m), dtype=np.intp)
    expected = np.empty((steps, m))
    rewards = np.empty((steps, m))
    ts = np.empty(steps)
    arms: list[str] = []
    index: dict[str, int] = {}
    retirements: list[tuple[int, int]] = []
    for t in range(steps):
        req = world.next_request()
        for a in req.candidates:
            if a not in index:
                index[a] = len(arms)
                arms.append(a)
        for a in req.retired:
            retirements.append((t, index.setdefault(a, len(arms))))
            if len(arms) == index[a]:
                arms.append(a)
        X[t] = req.x
        cand[t] = [index[a] for a in req.candidates]
        expected[t] = req.truth.expected
        rewards[t] = req.truth.rewards
        ts[t] = req.ts
    return Stream(config=config, arms=arms, X=X, candidates=cand, expected=expected, rewards=rewards, ts=ts,
                  retirements=retirements)
