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
    """Draw ``steps`` requests of ``World(config)`` into arrays (identical to stepping the world), a
    block of the world at a time without building the requests."""
    world = World(config)
    m = config.offered
    X = np.empty((steps, config.dim))
    cand = np.empty((steps, m), dtype=np.intp)
    expected = np.empty((steps, m))
    rewards = np.empty((steps, m))
    arms: list[str] = []
    index: dict[str, int] = {}
    retirements: list[tuple[int, int]] = []

    def number(arm: str) -> int:
        if arm not in index:
            index[arm] = len(arms)
            arms.append(arm)
        return index[arm]

    t = 0
    for block, lo, hi in world.blocks(steps):
        n = hi - lo
        X[t:t + n] = block.x[lo:hi]
        expected[t:t + n] = block.expected[lo:hi]
        rewards[t:t + n] = block.rewards[lo:hi]
        for seg in block.segments:
            a, b = max(seg.start - block.start, lo), min(seg.stop - block.start, hi)
            if a >= b:
                continue
            # arms are numbered in order of first appearance: a step's candidates, then its retirements
            retired = seg.retired if a == seg.start - block.start else ()
            if block.slots is None:  # every arm offered: one row for the whole segment
                cand[t + a - lo:t + b - lo] = [number(arm) for arm in seg.ids]
                retirements.extend((t + a - lo, number(arm)) for arm in retired)
            else:
                for i, row in enumerate(block.slots[a:b].tolist(), start=t + a - lo):
                    cand[i] = [number(seg.ids[s]) for s in row]
                    if retired:
                        retirements.extend((i, number(arm)) for arm in retired)
                        retired = ()
        t += n
    steps_ = np.arange(steps)
    if config.feedback_batch:
        ts = config.start_ts + (steps_ // config.feedback_batch) * config.feedback_batch / config.rate
    else:
        ts = config.start_ts + steps_ / config.rate
    return Stream(config=config, arms=arms, X=X, candidates=cand, expected=expected, rewards=rewards, ts=ts,
                  retirements=retirements)
