"""A simulated ad world with known ground truth, for closed-loop runs, logs and regret.

A :class:`World` produces requests (a context and candidate arms); a policy picks an arm and
:meth:`World.respond` returns the impression plus the click and conversion it leads to, with
event times that include the configured delays. Because the truth is known, every outcome carries
the expected reward of the chosen arm and of the best arm (the oracle), so regret is exact.

Reproducibility and fair comparisons: every random draw comes from generators spawned from
``config.seed`` (one per purpose: arm parameters, contexts, drift, churn, candidate sets,
outcomes), and every variate of a step (the uniforms deciding a click and a conversion and the
delays, for *every* candidate) is drawn in :meth:`World.next_request`, before the policy chooses.
:meth:`World.respond` draws nothing. Hence policies run on the same seed see the same contexts and
candidates and — common random numbers — the same outcome for the same choice, and switching on
drift or churn does not change the contexts.

Speed: the draws and the truth of :data:`~banditloop.simulators.blocks.BLOCK_STEPS` steps are
computed at once, as arrays (:mod:`banditloop.simulators.blocks`); ``next_request`` and ``respond``
are views over that block. Each generator still yields its variates in the order a step at a time
drew them (contexts, drift, churn and candidates per step, then per step the outcome uniforms and
exponentials), so a seed gives the same requests and outcomes as before blocks and whatever the
block size; probabilities come from matrix products over the block and may differ from a per-step
product in the last bit. The accessors (``theta``, ``active_arms``, ``retired_arms``, ...) answer
for the step of the last request, although the block was drawn ahead.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import pairwise

import numpy as np

from banditloop.core.events import Click, Conversion, Impression
from banditloop.simulators.blocks import (
    Block,
    Segment,
    Truth,
    block_steps,
    draw_candidates,
    draw_evolution,
    draw_outcome_variates,
    sigmoid,
)
from banditloop.simulators.config import WorldConfig, logit
from banditloop.simulators.conversions import apply_conversions
from banditloop.simulators.requests import Outcome, Request

__all__ = ["World", "WorldConfig", "Request", "Outcome"]


class World:
    """K arms with logistic click models; see :class:`WorldConfig` for the generative model.

    >>> world = World(WorldConfig(arms=3, dim=2, seed=0))
    >>> req = world.next_request()
    >>> outcome = world.respond(req, req.candidates[0], propensity=1 / 3)
    >>> len(req.candidates), outcome.impression.arm == req.candidates[0], outcome.regret >= 0
    (3, True, True)
    """

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = c = config or WorldConfig()
        streams = np.random.SeedSequence(c.seed).spawn(6)
        self._arm_rng, self._ctx_rng, self._drift_rng, self._churn_rng, self._cand_rng, self._out_rng = (
            np.random.default_rng(s) for s in streams)
        k, d, n = c.arm_feature_dim, c.dim, c.arms
        #: fixed random projection from standardised true parameters to published arm features
        self._projection = self._arm_rng.standard_normal((k, d + 1)) / math.sqrt(d + 1)
        self._ids: list[str] = [""] * n
        self._bias = np.zeros(n)
        self._theta = np.zeros((n, d))
        self._conv_bias = np.zeros(n)
        self._gamma = np.zeros((n, d))
        self._value = np.zeros(n)
        self._features: list[dict[str, float]] = [{} for _ in range(n)]
        self._slot: dict[str, int] = {}
        self._next_id = 0
        self._retired_log: list[str] = []  # every retirement drawn so far (blocks are drawn ahead)
        self.step = 0
        self._feature_names = tuple(f"f{i}" for i in range(k))
        self._context_names = tuple(f"x{i}" for i in range(d))
        self._id_prefix = f"imp-{c.seed}-"
        for slot in range(n):
            self._new_arm(slot)
        if c.arm_probabilities is not None:
            self._bias[:] = [logit(p) for p in c.arm_probabilities]
            self._theta[:] = 0.0
        self._changes = list(c.change_points)
        self._block_steps = block_steps(n, 1 if c.context_free else d, c.drift > 0)
        self._block: Block | None = None
        self._segment = 0  # index in the current block of the segment of the next step

    # -- arms ---------------------------------------------------------------------------------
    def _new_arm(self, slot: int) -> str:
        c, rng, d = self.config, self._arm_rng, self.config.dim
        arm = f"a{self._next_id}"
        self._next_id += 1
        z_bias = rng.standard_normal()
        z_theta = rng.standard_normal(d)
        self._bias[slot] = logit(c.base_ctr) + c.bias_spread * z_bias
        self._theta[slot] = z_theta * (c.theta_scale / math.sqrt(d))
        if c.context_free:
            self._theta[slot] = 0.0
            if c.arm_means is not None:
                p = float(np.clip(rng.beta(*c.arm_means), 1e-6, 1 - 1e-6))
                self._bias[slot] = logit(p)
        self._conv_bias[slot] = logit(c.conversion_rate) + c.conversion_spread * rng.standard_normal()
        self._gamma[slot] = rng.standard_normal(d) * (c.conversion_context / math.sqrt(d))
        s = c.value_spread
        self._value[slot] = c.value_mean * math.exp(s * rng.standard_normal() - s * s / 2)
        noise = rng.standard_normal(c.arm_feature_dim)
        if c.arm_features == "params":
            feats = self._projection @ np.concatenate(([z_bias], z_theta)) + 0.1 * noise
        else:
            feats = noise
        self._features[slot] = {n: round(float(v), 4) for n, v in zip(self._feature_names, feats, strict=True)}
        old = self._ids[slot]
        if old:
            del self._slot[old]
        self._ids[slot] = arm
        self._slot[arm] = slot
        return arm

    def _current(self) -> Segment | None:
        """The segment of the last request (None before the first)."""
        b = self._block
        if b is None or self.step == 0:
            return None
        step = self.step - 1
        return b.segments[int(b.segment_of[step - b.start])]

    @property
    def active_arms(self) -> list[str]:
        seg = self._current()
        return list(self._ids if seg is None else seg.ids)

    @property
    def retired_arms(self) -> list[str]:
        """Arms retired up to the last request, in order."""
        seg = self._current()
        return self._retired_log[:0 if seg is None else seg.retired_total]

    def _params(self, arm: str) -> tuple[np.ndarray, float]:
        seg = self._current()
        if seg is None:
            s = self._slot[arm]
            return self._theta[s], float(self._bias[s])
        if arm not in seg.ids:
            raise KeyError(arm)
        return seg.params_at(self.step - 1, seg.slot(arm))

    def theta(self, arm: str) -> np.ndarray:
        """Current true click coefficients θ* of an active arm (a copy)."""
        return self._params(arm)[0].copy()

    def arm_bias(self, arm: str) -> float:
        return self._params(arm)[1]

    def arm_features(self, arm: str) -> dict[str, float]:
        seg = self._current()
        if seg is None:
            return dict(self._features[self._slot[arm]])
        if arm not in seg.ids:
            raise KeyError(arm)
        return dict(seg.features[seg.slot(arm)])

    def click_probability(self, x: np.ndarray, arm: str) -> float:
        """``sigmoid(θ*·x + bias)`` for an active arm under its current parameters."""
        theta, bias = self._params(arm)
        return float(sigmoid(theta @ np.asarray(x, dtype=float) + bias))

    def conversion_logit(self, x: np.ndarray, arm: str) -> float:
        """``γ*·x + conversion bias`` of an arm; NaN once it left the world's slots (churn drawn ahead)."""
        s = self._slot.get(arm)
        return math.nan if s is None else float(self._gamma[s] @ np.asarray(x, dtype=float) + self._conv_bias[s])

    def has_conversion_truth(self, arm: str) -> bool:
        return arm in self._slot

    # -- blocks ---------------------------------------------------------------------------------
    def _draw_block(self, start: int) -> Block:
        """Draw steps ``[start, start + block)``: the world's state moves to the end of the block."""
        c = self.config
        steps, n, m = self._block_steps, c.arms, c.offered
        x = np.round(self._ctx_rng.standard_normal((steps, c.dim)), 4)
        slots = draw_candidates(self._cand_rng, n, m, steps)
        u, e = draw_outcome_variates(self._out_rng, steps, m)
        block = Block(start, x, slots, u, e, m)
        noise, leaving = draw_evolution(self._drift_rng, self._churn_rng, c, steps, first=int(start == 0))
        events = {ch[0] for ch in self._changes if ch[0] < block.stop}
        if leaving is not None:
            events.update((start + np.flatnonzero(leaving.any(axis=1))).tolist())
        bounds = [start, *sorted(t for t in events if t > start), block.stop]
        for a, b in pairwise(bounds):
            i0, i1 = a - start, b - start
            # the evolution at step a, in the order a step at a time applied it: drift, changes, churn
            if noise is not None and a > 0:
                (self._bias if c.context_free else self._theta)[...] += noise[i0]
            while self._changes and self._changes[0][0] <= a:
                _, slot, p = self._changes.pop(0)
                self._bias[slot] = logit(p)
            retired: tuple[str, ...] = ()
            added: tuple[str, ...] = ()
            if leaving is not None and a > 0:
                gone = np.flatnonzero(leaving[i0])
                retired = tuple(self._ids[s] for s in gone)
                added = tuple(self._new_arm(int(s)) for s in gone)
                self._retired_log.extend(retired)
            seg = Segment(a, b, tuple(self._ids), list(self._features), self._theta.copy(), self._bias.copy(),
                          retired, added, retired_total=len(self._retired_log))
            if noise is not None:  # the random walk within the segment: the same additions, in order
                state = self._bias if c.context_free else self._theta
                walk = np.cumsum(np.concatenate([state[None], noise[i0 + 1:i1]]), axis=0)
                state[...] = walk[-1]
                setattr(seg, "bias_steps" if c.context_free else "theta_steps", walk)
            block.add_segment(seg, self._gamma, self._conv_bias, self._value, bool(c.arm_feature_dim))
        return apply_conversions(block, c)  # selection bias, delay distribution; then block.finish

    def _block_for(self, step: int) -> Block:
        b = self._block
        if b is None or step >= b.stop:
            b = self._block = self._draw_block(step)
            self._segment = 0
        return b

    def blocks(self, steps: int) -> Iterator[tuple[Block, int, int]]:
        """The next ``steps`` steps as ``(block, lo, hi)``: rows ``lo:hi`` of each block, in order (what
        ``steps`` calls of :meth:`next_request` would return, without building the requests)."""
        end = self.step + steps
        while self.step < end:
            b = self._block_for(self.step)
            lo = self.step - b.start
            hi = min(b.stop, end) - b.start
            self.step = b.start + hi
            self._segment = int(b.segment_of[hi - 1])
            yield b, lo, hi

    # -- requests -----------------------------------------------------------------------------
    def next_request(self) -> Request:
        """The next request; all randomness of this step (including every outcome) was drawn with its block."""
        c = self.config
        step = self.step
        b = self._block
        if b is None or step >= b.stop:
            b = self._block_for(step)
        i = step - b.start
        seg = b.segments[self._segment]
        while step >= seg.stop:
            self._segment += 1
            seg = b.segments[self._segment]
        self.step = step + 1
        if b.slots is None:
            candidates = list(seg.ids)
            arm_features, index = seg.arm_features or {}, seg.index
        else:
            ids, feats = seg.ids, seg.features
            row = b.slots[i].tolist()
            candidates = [ids[s] for s in row]
            arm_features = {ids[s]: feats[s] for s in row} if c.arm_feature_dim else {}
            index = None
        if c.feedback_batch:  # a batch's requests share one event time (see WorldConfig)
            ts = c.start_ts + (step // c.feedback_batch) * c.feedback_batch / c.rate
        else:
            ts = c.start_ts + step / c.rate
        rows = b.rows  # the block's contexts as Python floats, converted once per block
        if rows is None:
            rows = b.rows = b.x.tolist()
        # one row per dimension, so no ``strict`` (which costs ~0.5 µs a call); positional arguments:
        # the fields in their declared order, cheaper than keywords per step
        context = dict(zip(self._context_names, rows[i]))  # noqa: B905
        if step == seg.start:
            return Request(step, ts, f"{self._id_prefix}{step}", context, candidates, arm_features,  # type: ignore[arg-type]
                           b.x[i], seg.retired, seg.added, Truth(b, i, index, candidates))
        return Request(step, ts, f"{self._id_prefix}{step}", context, candidates, arm_features,  # type: ignore[arg-type]
                       b.x[i], (), (), Truth(b, i, index, candidates))

    def expected_reward(self, req: Request, arm: str) -> float:
        """Expected reward of ``arm`` for ``req`` (click probability, or the configured reward's mean)."""
        return req.expected_reward(arm)

    def respond(self, req: Request, arm: str, propensity: float | None = None, policy: str | None = None,
                position: int | None = None) -> Outcome:
        """Show ``arm`` for ``req``: the impression, and the click and conversion it leads to (if any).

        Draws no randomness, so the same ``(req, arm)`` always gives the same outcome (and it is safe
        from any thread). A NaN propensity (a policy that could not estimate it) is logged as unknown.
        """
        i, impression, click, conversion = self.respond_events(req, arm, propensity, policy, position)
        b, row = req.truth.block, req.truth.row
        value = 0.0 if conversion is None else conversion.value
        return Outcome(impression=impression, click=click, conversion=conversion, clicked=click is not None,
                       converted=conversion is not None, value=value,  # type: ignore[arg-type]
                       reward=float(b.rewards[row, i]), expected_reward=float(b.expected[row, i]),
                       oracle_arm=req.candidates[int(b.oracle[row])],
                       oracle_expected_reward=float(b.oracle_expected[row]))

    def respond_events(self, req: Request, arm: str, propensity: float | None = None, policy: str | None = None,
                       position: int | None = None) -> tuple[int, Impression, Click | None, Conversion | None]:
        """:meth:`respond` without the :class:`Outcome`: the shown arm's position among ``req.candidates``
        (the column of ``req.truth``), the impression, and its click and conversion or ``None`` (the
        same events as :meth:`respond`, for a closed loop that needs only them)."""
        t = req.truth
        b, row = t.block, t.row
        try:
            i = t.index[arm]
        except KeyError:
            raise ValueError(f"arm {arm!r} is not a candidate of request {req.step}") from None
        if propensity is not None:
            propensity = float(propensity)
            if math.isnan(propensity):
                propensity = None
            elif not 0.0 < propensity <= 1.0:
                raise ValueError(f"propensity must be in (0, 1], got {propensity}")
        imp_id = req.impression_id
        impression = Impression(event_id=f"{imp_id}:i", ts=req.ts, impression_id=imp_id, arm=arm,
                                context=req.context, candidates=list(req.candidates),
                                arm_features=req.arm_features or None, position=position,
                                propensity=propensity, policy=policy)
        if not b.clicked[row, i]:
            return i, impression, None, None
        batch = self.config.feedback_batch
        if batch:  # revealed together, half a batch later
            click_ts = conv_ts = req.ts + 0.5 * batch / self.config.rate
        else:
            click_ts = req.ts + float(b.click_delay[row, i])
            conv_ts = click_ts + float(b.conv_delay[row, i])
        click = Click(event_id=f"{imp_id}:c", ts=click_ts, impression_id=imp_id)
        if not b.converted[row, i]:
            return i, impression, click, None
        return i, impression, click, Conversion(event_id=f"{imp_id}:v", ts=conv_ts, impression_id=imp_id,
                                                value=float(b.value[row, i]))

    def requests(self, steps: int) -> list[Request]:
        """The next ``steps`` requests."""
        return [self.next_request() for _ in range(steps)]


def oracle_choice(req: Request) -> str:
    """The best candidate by expected reward (what the oracle policy shows)."""
    return req.oracle_arm


def uniform_choice(rng: np.random.Generator, candidates: Sequence[str]) -> tuple[str, float]:
    """A uniformly random candidate and its propensity (the default logging policy)."""
    return candidates[int(rng.integers(len(candidates)))], 1.0 / len(candidates)
