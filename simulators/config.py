"""Configuration of the simulated world (:class:`banditloop.simulators.world.World`).

The defaults describe a small display-ads setting: click-through rates of a few percent that depend
on the context (a user) and differ between arms (ads) by a factor of several, a conversion for
roughly one click in ten, clicks within seconds and conversions within the hour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from banditloop.core.reward import RewardSpec


@dataclass(frozen=True)
class WorldConfig:
    """Parameters of a :class:`~banditloop.simulators.world.World`. Every random draw derives from ``seed``.

    Click model, per arm ``a``: ``p = sigmoid(θ*_a·x + bias_a)`` with ``x ~ N(0, I_dim)``,
    ``θ*_a ~ N(0, theta_scale²/dim · I)`` (so ``θ*_a·x`` has standard deviation ``theta_scale`` and
    the best arm depends on the context) and ``bias_a ~ N(logit(base_ctr), bias_spread²)``.

    Conversion given a click: ``sigmoid(c_a + γ_a·x)`` with ``c_a ~ N(logit(conversion_rate),
    conversion_spread²)`` and ``γ_a·x`` of standard deviation ``conversion_context`` (0: the
    conversion rate does not depend on the context); with ``selection_bias`` the conversion is
    specified on the entire space instead (:mod:`banditloop.simulators.conversions`). The delay from
    click to conversion has mean ``conversion_delay_mean`` and a ``conversion_delay`` distribution
    (exponential, or long-tailed log-normal or Weibull). A conversion is worth ``value_a · Exp(1)``
    where the arm's mean value ``value_a`` is log-normal around ``value_mean``.

    Settings of the bandit literature:

    * ``arm_means = (a, b)``: a context-free Bernoulli world: each arm's click probability is drawn
      from Beta(a, b) (fresh arms brought by ``churn`` too) and does not depend on the context;
      ``drift`` then random-walks each arm's logit (step std ``drift · theta_scale``).
    * ``arm_probabilities``: fixed click probabilities of the initial arms (context-free), e.g. the
      best arm at 0.5 and the others at 0.4 of Chapelle & Li (2011); arms brought by ``churn`` draw
      from ``arm_means`` if set, else from the logistic model with ``theta = 0``.
    * ``feedback_batch = δ``: outcomes are revealed in batches every δ steps (Chapelle & Li 2011,
      Table 1): the δ requests of a batch share one event time, their clicks and conversions come
      half a batch later, and the join windows (``feedback_batch_window``) close before the next
      batch, so every outcome of batch k is learned before the first decision of batch k+1.
    * ``change_points``: abrupt changes ``(step, arm slot, p)``: from ``step`` on, the arm in that
      slot has base click probability ``p`` (its logit bias becomes ``logit(p)``; a context-free
      arm's click probability is then exactly ``p``).

    >>> WorldConfig(arms=4, dim=3, seed=7).arms
    4
    """

    arms: int = 10
    dim: int = 8
    seed: int = 0
    #: mean delay (seconds, exponential) from the impression to its click
    click_delay_mean: float = 30.0
    #: mean delay (seconds) from the click to its conversion
    conversion_delay_mean: float = 3600.0
    #: distribution of that delay: "exponential", "lognormal" (σ = ``conversion_delay_shape``) or "weibull"
    #: (k = ``conversion_delay_shape``); see :mod:`banditloop.simulators.conversions`
    conversion_delay: Literal["exponential", "lognormal", "weibull"] = "exponential"
    conversion_delay_shape: float = 1.0
    #: conversions specified on the entire space (pCTCVR logistic, pCVR = pCTCVR / pCTR grows with the
    #: click probability): the clicked population converts more than the unclicked would have
    selection_bias: bool = False
    #: per-step standard deviation of the random walk of θ*, relative to its initial scale: after
    #: ``n`` steps an arm's logit for a typical context has moved by about ``drift·sqrt(n)·theta_scale``
    drift: float = 0.0
    #: per-step probability that an active arm retires and is replaced by a fresh arm (new id)
    churn: float = 0.0
    #: offer a random subset of this many active arms per request (None: all active arms)
    candidates: int | None = None
    #: requests per second of event time
    rate: float = 10.0
    #: event time of step 0 (epoch seconds; 2026-01-01T00:00:00Z)
    start_ts: float = 1_767_225_600.0
    base_ctr: float = 0.04
    bias_spread: float = 0.4
    theta_scale: float = 0.8
    conversion_rate: float = 0.1
    conversion_spread: float = 0.5
    conversion_context: float = 0.0
    value_mean: float = 20.0
    value_spread: float = 0.5
    #: numeric features per arm for hybrid models (0: none are published)
    arm_feature_dim: int = 4
    #: "params": a fixed random projection of the arm's true parameters plus noise (informative);
    #: "random": independent noise (uninformative)
    arm_features: Literal["params", "random"] = "params"
    #: the reward that ``expected_reward`` and the oracle refer to
    reward: RewardSpec = field(default_factory=RewardSpec)
    #: (a, b): context-free arms with click probability ~ Beta(a, b) (see the class docstring)
    arm_means: tuple[float, float] | None = None
    #: fixed click probabilities of the initial arms (context-free); length ``arms``
    arm_probabilities: tuple[float, ...] | None = None
    #: reveal outcomes in batches of this many steps (0: each after its own delays)
    feedback_batch: int = 0
    #: abrupt changes: (step, arm slot, new base click probability)
    change_points: tuple[tuple[int, int, float], ...] = ()

    def __post_init__(self) -> None:
        if self.arms < 1 or self.dim < 1:
            raise ValueError("arms and dim must be >= 1")
        if self.candidates is not None and not 1 <= self.candidates <= self.arms:
            raise ValueError("candidates must be in [1, arms]")
        if not self.rate > 0:
            raise ValueError("rate must be > 0")
        if self.click_delay_mean < 0 or self.conversion_delay_mean < 0:
            raise ValueError("delay means must be >= 0")
        if self.conversion_delay not in ("exponential", "lognormal", "weibull"):
            raise ValueError("conversion_delay must be 'exponential', 'lognormal' or 'weibull'")
        if not self.conversion_delay_shape > 0:
            raise ValueError("conversion_delay_shape must be > 0")
        if self.drift < 0 or not 0.0 <= self.churn <= 1.0:
            raise ValueError("drift must be >= 0 and churn in [0, 1]")
        for name in ("base_ctr", "conversion_rate"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1)")
        if self.arm_feature_dim < 0 or self.arm_features not in ("params", "random"):
            raise ValueError("arm_feature_dim must be >= 0 and arm_features 'params' or 'random'")
        if self.value_mean < 0:
            raise ValueError("value_mean must be >= 0")
        if self.arm_means is not None:
            a, b = (float(v) for v in self.arm_means)
            if not (a > 0 and b > 0):
                raise ValueError("arm_means must be two Beta parameters > 0")
            object.__setattr__(self, "arm_means", (a, b))
        if self.arm_probabilities is not None:
            probs = tuple(float(p) for p in self.arm_probabilities)
            if len(probs) != self.arms or not all(0.0 < p < 1.0 for p in probs):
                raise ValueError("arm_probabilities needs one probability in (0, 1) per arm")
            object.__setattr__(self, "arm_probabilities", probs)
        if self.feedback_batch < 0:
            raise ValueError("feedback_batch must be >= 0")
        changes = tuple((int(s), int(a), float(p)) for s, a, p in self.change_points)
        if any(s < 0 or not 0 <= a < self.arms or not 0.0 < p < 1.0 for s, a, p in changes):
            raise ValueError("change_points are (step >= 0, arm slot in [0, arms), probability in (0, 1))")
        object.__setattr__(self, "change_points", tuple(sorted(changes)))

    @property
    def context_free(self) -> bool:
        """Click probabilities do not depend on the context."""
        return self.arm_means is not None or self.arm_probabilities is not None

    @property
    def feedback_batch_window(self) -> float:
        """Seconds of event time after which a batch's outcomes are all in (``feedback_batch``): the
        click and conversion windows to configure the join with (3/4 of a batch)."""
        return 0.75 * self.feedback_batch / self.rate

    @property
    def offered(self) -> int:
        """Candidates per request."""
        return self.arms if self.candidates is None else self.candidates


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))
