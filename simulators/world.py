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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from banditloop.core.events import Click, Conversion, Impression
from banditloop.simulators.config import WorldConfig, logit
from banditloop.simulators.conversions import conversion_delays, conversion_probabilities

__all__ = ["World", "WorldConfig", "Request", "Outcome"]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass(slots=True)
class _Truth:
    """Per candidate (same order as ``Request.candidates``): probabilities and pre-drawn variates."""

    index: dict[str, int]
    p_click: np.ndarray
    p_conv: np.ndarray
    value_mean: np.ndarray
    expected: np.ndarray
    u_click: np.ndarray
    u_conv: np.ndarray
    click_delay: np.ndarray
    conv_delay: np.ndarray
    value: np.ndarray
    rewards: np.ndarray


@dataclass(slots=True)
class Request:
    """One ad request. ``context`` and ``arm_features`` are shared with the world: treat as read-only.

    ``x`` is the context as a vector (``context["x{i}"] == x[i]``). ``retired`` and ``added`` list
    the arms that churned out and in just before this request (empty without churn).
    """

    step: int
    ts: float
    impression_id: str
    context: dict[str, float | str]  # numbers only; typed as the event model's features
    candidates: list[str]
    arm_features: dict[str, dict[str, float | str]]
    x: np.ndarray
    retired: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    truth: _Truth = field(default=None, repr=False)  # type: ignore[assignment]

    def expected_reward(self, arm: str) -> float:
        """Expected reward of showing ``arm`` here, under the world's :class:`~banditloop.core.reward.RewardSpec`."""
        return float(self.truth.expected[self._position(arm)])

    def expected_rewards(self) -> np.ndarray:
        """Expected reward of every candidate, in candidate order."""
        return self.truth.expected.copy()

    def realized_rewards(self) -> np.ndarray:
        """The reward each candidate *would* realise if shown (common random numbers), in candidate order."""
        return self.truth.rewards.copy()

    @property
    def oracle_arm(self) -> str:
        return self.candidates[int(np.argmax(self.truth.expected))]

    @property
    def oracle_expected_reward(self) -> float:
        return float(self.truth.expected.max())

    def _position(self, arm: str) -> int:
        try:
            return self.truth.index[arm]
        except KeyError:
            raise ValueError(f"arm {arm!r} is not a candidate of request {self.step}") from None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What showing one arm led to: the events (with event times) and the truth behind them."""

    impression: Impression
    click: Click | None
    conversion: Conversion | None
    clicked: bool
    converted: bool
    value: float
    #: realised reward under the world's reward spec
    reward: float
    expected_reward: float
    oracle_arm: str
    oracle_expected_reward: float

    @property
    def regret(self) -> float:
        """Expected reward lost against the best candidate (0 for the oracle's choice)."""
        return self.oracle_expected_reward - self.expected_reward

    @property
    def events(self) -> list[Impression | Click | Conversion]:
        """The impression and its feedback, in event-time order."""
        return [e for e in (self.impression, self.click, self.conversion) if e is not None]


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
        self.retired_arms: list[str] = []
        self.step = 0
        self._feature_names = tuple(f"f{i}" for i in range(k))
        self._context_names = tuple(f"x{i}" for i in range(d))
        for slot in range(n):
            self._new_arm(slot)
        if c.arm_probabilities is not None:
            self._bias[:] = [logit(p) for p in c.arm_probabilities]
            self._theta[:] = 0.0
        self._changes = list(c.change_points)

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

    @property
    def active_arms(self) -> list[str]:
        return list(self._ids)

    def theta(self, arm: str) -> np.ndarray:
        """Current true click coefficients θ* of an active arm (a copy)."""
        return self._theta[self._slot[arm]].copy()

    def arm_bias(self, arm: str) -> float:
        return float(self._bias[self._slot[arm]])

    def arm_features(self, arm: str) -> dict[str, float]:
        return dict(self._features[self._slot[arm]])

    def click_probability(self, x: np.ndarray, arm: str) -> float:
        """``sigmoid(θ*·x + bias)`` for an active arm under its current parameters."""
        s = self._slot[arm]
        return float(_sigmoid(self._theta[s] @ np.asarray(x, dtype=float) + self._bias[s]))

    # -- requests -----------------------------------------------------------------------------
    def _evolve(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Drift and churn between two steps; draws a fixed number of variates per step."""
        c = self.config
        if c.drift > 0 and c.context_free:  # context-free arms: the logit walks
            self._bias += self._drift_rng.standard_normal(self._bias.shape) * (c.drift * c.theta_scale)
        elif c.drift > 0:
            self._theta += self._drift_rng.standard_normal(self._theta.shape) * (c.drift * c.theta_scale
                                                                                   / math.sqrt(c.dim))
        while self._changes and self._changes[0][0] <= self.step:
            _, slot, p = self._changes.pop(0)
            self._bias[slot] = logit(p)
        if c.churn <= 0:
            return (), ()
        leaving = np.flatnonzero(self._churn_rng.random(c.arms) < c.churn)
        retired = tuple(self._ids[s] for s in leaving)
        added = tuple(self._new_arm(int(s)) for s in leaving)
        self.retired_arms.extend(retired)
        return retired, added

    def _evolve_changes_only(self) -> None:
        while self._changes and self._changes[0][0] <= self.step:
            _, slot, p = self._changes.pop(0)
            self._bias[slot] = logit(p)

    def next_request(self) -> Request:
        """The next request; all randomness of this step (including every outcome) is drawn here."""
        c = self.config
        step = self.step
        retired, added = self._evolve() if step > 0 else ((), ())
        if step == 0 and self._changes:
            self._evolve_changes_only()
        x = np.round(self._ctx_rng.standard_normal(c.dim), 4)
        m = c.offered
        if m < c.arms:
            slots = np.sort(self._cand_rng.choice(c.arms, size=m, replace=False))
        else:
            slots = np.arange(c.arms)
        u = self._out_rng.random((2, m))
        e = self._out_rng.standard_exponential((3, m))
        ids = self._ids
        candidates = [ids[s] for s in slots]
        click_logit = self._theta[slots] @ x + self._bias[slots]
        p_click = _sigmoid(click_logit)
        p_conv = conversion_probabilities(click_logit, self._gamma[slots] @ x + self._conv_bias[slots],
                                          c.selection_bias)
        value_mean = self._value[slots]
        spec = c.reward
        if spec.kind == "click":
            expected = p_click
        elif spec.kind == "conversion":
            expected = p_click * p_conv
        else:
            expected = p_click * (1.0 + spec.weight * p_conv * value_mean)
        clicked = u[0] < p_click
        converted = clicked & (u[1] < p_conv)
        value = np.where(converted, np.round(value_mean * e[2], 2), 0.0)
        if spec.kind == "click":
            rewards = clicked.astype(float)
        elif spec.kind == "conversion":
            rewards = converted.astype(float)
        else:
            rewards = clicked + spec.weight * value
        truth = _Truth(index={a: i for i, a in enumerate(candidates)}, p_click=p_click, p_conv=p_conv,
                       value_mean=value_mean, expected=expected, u_click=u[0], u_conv=u[1],
                       click_delay=c.click_delay_mean * e[0],
                       conv_delay=conversion_delays(c.conversion_delay, c.conversion_delay_mean,
                                                    c.conversion_delay_shape, e[1]),
                       value=value, rewards=rewards)
        feats = self._features
        self.step = step + 1
        if c.feedback_batch:  # a batch's requests share one event time (see WorldConfig)
            ts = c.start_ts + (step // c.feedback_batch) * c.feedback_batch / c.rate
        else:
            ts = c.start_ts + step / c.rate
        return Request(step=step, ts=ts, impression_id=f"imp-{c.seed}-{step}",
                       context=dict(zip(self._context_names, x.tolist(), strict=True)), candidates=candidates,
                       arm_features={ids[s]: feats[s] for s in slots} if c.arm_feature_dim else {},
                       x=x, retired=retired, added=added, truth=truth)

    def expected_reward(self, req: Request, arm: str) -> float:
        """Expected reward of ``arm`` for ``req`` (click probability, or the configured reward's mean)."""
        return req.expected_reward(arm)

    def respond(self, req: Request, arm: str, propensity: float | None = None, policy: str | None = None,
                position: int | None = None) -> Outcome:
        """Show ``arm`` for ``req``: the impression, and the click and conversion it leads to (if any).

        Draws no randomness, so the same ``(req, arm)`` always gives the same outcome. A NaN
        propensity (a policy that could not estimate it) is logged as unknown.
        """
        t = req.truth
        i = req._position(arm)
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
        clicked = bool(t.u_click[i] < t.p_click[i])
        converted = bool(clicked and t.u_conv[i] < t.p_conv[i])
        value = float(t.value[i])
        click = conversion = None
        batch = self.config.feedback_batch
        if clicked:
            if batch:  # revealed together, half a batch later
                click_ts = conv_ts = req.ts + 0.5 * batch / self.config.rate
            else:
                click_ts = req.ts + float(t.click_delay[i])
                conv_ts = click_ts + float(t.conv_delay[i])
            click = Click(event_id=f"{imp_id}:c", ts=click_ts, impression_id=imp_id)
            if converted:
                conversion = Conversion(event_id=f"{imp_id}:v", ts=conv_ts, impression_id=imp_id, value=value)
        return Outcome(impression=impression, click=click, conversion=conversion, clicked=clicked,
                       converted=converted, value=value, reward=float(t.rewards[i]),
                       expected_reward=float(t.expected[i]), oracle_arm=req.oracle_arm,
                       oracle_expected_reward=req.oracle_expected_reward)

    def requests(self, steps: int) -> list[Request]:
        """The next ``steps`` requests."""
        return [self.next_request() for _ in range(steps)]


def oracle_choice(req: Request) -> str:
    """The best candidate by expected reward (what the oracle policy shows)."""
    return req.oracle_arm


def uniform_choice(rng: np.random.Generator, candidates: Sequence[str]) -> tuple[str, float]:
    """A uniformly random candidate and its propensity (the default logging policy)."""
    return candidates[int(rng.integers(len(candidates)))], 1.0 / len(candidates)
