"""The world's draws and truth for many steps at once (the vectorised core of :mod:`banditloop.simulators.world`).

A :class:`Block` holds, as arrays, everything about steps ``[start, stop)``: the contexts, the
candidate slots, every candidate's click and conversion probabilities, the variates that decide its
outcome, the outcome itself and the expected rewards. :class:`~banditloop.simulators.world.World`
serves its per-step API (``next_request``, ``respond``) as views over the current block.

Within a block the arms change only at *events* (a churned arm replaced by a fresh one, a change
point); the steps between two events form a :class:`Segment`, which records the arms' ids, features
and parameters so that the world's accessors answer for the step of the last request, not for the
end of the block that was drawn ahead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from banditloop.simulators.config import WorldConfig

#: steps drawn at once (fewer when drift makes a per-step copy of every arm's parameters)
BLOCK_STEPS = 1024
#: with drift, at most this many float64 per block for the per-step parameters (steps × arms × dim)
DRIFT_BUDGET = 1 << 19


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass(slots=True, eq=False)
class Segment:
    """Steps ``[start, stop)`` of one block during which no arm is replaced or changed abruptly.

    ``theta``/``bias`` are the parameters at ``start`` (after that step's drift, change points and
    churn); with drift, ``theta_steps``/``bias_steps`` hold them for every step of the segment.
    """

    start: int
    stop: int
    ids: tuple[str, ...]
    features: list[dict[str, float]]
    theta: np.ndarray
    bias: np.ndarray
    retired: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    #: retirements so far, up to and including this segment's start
    retired_total: int = 0
    theta_steps: np.ndarray | None = None
    bias_steps: np.ndarray | None = None
    #: with every arm offered: the candidate list, its position index and arm features, shared by
    #: every request of the segment (read-only, like the rest of a request)
    index: dict[str, int] | None = None
    arm_features: dict[str, dict[str, float]] | None = None

    def slot(self, arm: str) -> int:
        return self.ids.index(arm)

    def params_at(self, step: int, slot: int) -> tuple[np.ndarray, float]:
        i = step - self.start
        theta = self.theta if self.theta_steps is None else self.theta_steps[i]
        bias = self.bias if self.bias_steps is None else self.bias_steps[i]
        return theta[slot], float(bias[slot])


class Block:
    """Steps ``[start, stop)`` as arrays of shape (steps, ...) or (steps, candidates); see the module docstring."""

    __slots__ = ("start", "stop", "x", "slots", "segments", "segment_of", "p_click", "p_conv",
                 "value_mean", "expected", "u", "e", "clicked", "converted", "value", "rewards",
                 "oracle", "oracle_expected", "mean_expected", "click_delay", "conv_delay", "rows")

    def __init__(self, start: int, x: np.ndarray, slots: np.ndarray | None, u: np.ndarray, e: np.ndarray,
                 offered: int) -> None:
        steps = x.shape[0]
        self.start, self.stop = start, start + steps
        self.x = x
        self.slots = slots
        self.u, self.e = u, e
        self.segments: list[Segment] = []
        self.segment_of = np.zeros(steps, dtype=np.intp)
        self.p_click, self.p_conv, self.value_mean = (np.empty((steps, offered)) for _ in range(3))
        #: ``x`` as lists of Python floats (``x.tolist()``), made by the first request that needs it
        self.rows: list[list[float]] | None = None

    def add_segment(self, seg: Segment, gamma: np.ndarray, conv_bias: np.ndarray, value: np.ndarray,
                    arm_features: bool) -> None:
        """The click and conversion probabilities of the candidates at the segment's steps (``gamma``,
        ``conv_bias`` and ``value``: the arms' conversion parameters, constant within a segment)."""
        i0, i1 = seg.start - self.start, seg.stop - self.start
        self.segment_of[i0:i1] = len(self.segments)
        self.segments.append(seg)
        X = self.x[i0:i1]
        if seg.theta_steps is not None:
            logits = np.matmul(seg.theta_steps, X[:, :, None])[..., 0] + seg.bias
        else:
            logits = X @ seg.theta.T + (seg.bias if seg.bias_steps is None else seg.bias_steps)
        conv = X @ gamma.T + conv_bias
        if self.slots is None:
            self.p_click[i0:i1], self.p_conv[i0:i1], self.value_mean[i0:i1] = sigmoid(logits), sigmoid(conv), value
            seg.index = {arm: i for i, arm in enumerate(seg.ids)}
            feats = seg.features
            seg.arm_features = {arm: feats[i] for i, arm in enumerate(seg.ids)} if arm_features else {}
        else:
            S = self.slots[i0:i1]
            self.p_click[i0:i1] = sigmoid(np.take_along_axis(logits, S, axis=1))
            self.p_conv[i0:i1] = sigmoid(np.take_along_axis(conv, S, axis=1))
            self.value_mean[i0:i1] = value[S]

    def finish(self, reward_kind: str, weight: float, click_delay_mean: float, conv_delay_mean: float) -> None:
        """Outcomes and expected rewards from the probabilities and variates (all candidates, all steps)."""
        p_click, p_conv, value_mean, u, e = self.p_click, self.p_conv, self.value_mean, self.u, self.e
        if reward_kind == "click":
            expected = p_click
        elif reward_kind == "conversion":
            expected = p_click * p_conv
        else:
            expected = p_click * (1.0 + weight * p_conv * value_mean)
        clicked = u[:, 0] < p_click
        converted = clicked & (u[:, 1] < p_conv)
        value = np.where(converted, np.round(value_mean * e[:, 2], 2), 0.0)
        if reward_kind == "click":
            rewards = clicked.astype(float)
        elif reward_kind == "conversion":
            rewards = converted.astype(float)
        else:
            rewards = clicked + weight * value
        self.expected, self.clicked, self.converted, self.value, self.rewards = (
            expected, clicked, converted, value, rewards)
        self.click_delay, self.conv_delay = click_delay_mean * e[:, 0], conv_delay_mean * e[:, 1]
        self.oracle = expected.argmax(axis=1)
        self.oracle_expected = expected.max(axis=1)
        self.mean_expected = expected.mean(axis=1)


def block_steps(arms: int, dim: int, drift: bool) -> int:
    if not drift:
        return BLOCK_STEPS
    return max(1, min(BLOCK_STEPS, DRIFT_BUDGET // max(arms * dim, 1)))


def draw_candidates(rng: np.random.Generator, arms: int, offered: int, steps: int) -> np.ndarray | None:
    """(steps, offered) sorted candidate slots, one ``choice`` per step as the world always drew them;
    ``None`` when every arm is offered."""
    if offered >= arms:
        return None
    out = np.empty((steps, offered), dtype=np.intp)
    choice = rng.choice
    for t in range(steps):
        out[t] = choice(arms, size=offered, replace=False)
    out.sort(axis=1)
    return out


def draw_evolution(drift_rng: np.random.Generator, churn_rng: np.random.Generator, c: WorldConfig, steps: int,
                   first: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per step from ``first`` on (step 0 does not evolve): the drift added to every arm's θ* (or logit,
    context-free), already scaled, and which arms churn out (``None`` without drift or churn)."""
    noise = leaving = None
    if c.drift > 0 and steps > first:
        shape = (c.arms,) if c.context_free else (c.arms, c.dim)
        scale = c.drift * c.theta_scale if c.context_free else c.drift * c.theta_scale / math.sqrt(c.dim)
        noise = np.zeros((steps, *shape))
        noise[first:] = drift_rng.standard_normal((steps - first, *shape)) * scale
    if c.churn > 0 and steps > first:
        leaving = np.zeros((steps, c.arms), dtype=bool)
        leaving[first:] = churn_rng.random((steps - first, c.arms)) < c.churn
    return noise, leaving


def draw_outcome_variates(rng: np.random.Generator, steps: int, offered: int) -> tuple[np.ndarray, np.ndarray]:
    """Per step and candidate: uniforms (click, conversion) and standard exponentials (click delay,
    conversion delay, value), in the order one step at a time drew them (2 uniforms rows, then 3
    exponential rows per step), so a seed gives the same outcomes whatever the block size."""
    u = np.empty((steps, 2, offered))
    e = np.empty((steps, 3, offered))
    uniform, exponential = rng.random, rng.standard_exponential
    for u_t, e_t in zip(u, e, strict=True):  # (iterating makes the row views in C: cheaper than u[t])
        uniform(out=u_t)
        exponential(out=e_t)
    return u, e


class Truth:
    """Per candidate (same order as ``Request.candidates``): probabilities and pre-drawn variates, as
    views of one row of a :class:`Block` (what ``Request.truth`` holds)."""

    __slots__ = ("block", "row", "_index", "_candidates")

    def __init__(self, block: Block, row: int, index: dict[str, int] | None, candidates: list[str]) -> None:
        self.block, self.row, self._index, self._candidates = block, row, index, candidates

    @property
    def index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {a: i for i, a in enumerate(self._candidates)}
        return self._index

    p_click = property(lambda self: self.block.p_click[self.row])
    p_conv = property(lambda self: self.block.p_conv[self.row])
    value_mean = property(lambda self: self.block.value_mean[self.row])
    expected = property(lambda self: self.block.expected[self.row])
    u_click = property(lambda self: self.block.u[self.row, 0])
    u_conv = property(lambda self: self.block.u[self.row, 1])
    click_delay = property(lambda self: self.block.click_delay[self.row])
    conv_delay = property(lambda self: self.block.conv_delay[self.row])
    value = property(lambda self: self.block.value[self.row])
    rewards = property(lambda self: self.block.rewards[self.row])
