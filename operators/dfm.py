"""Delayed feedback model (``dfm``): conversion probability jointly with an exponential delay.

Chapelle 2014 ("Modeling Delayed Feedback in Display Advertising", KDD): a click converts eventually
with probability ``p(x) = sigmoid(w_c·x)`` and, if it does, after an exponential delay of rate
``λ(x) = exp(w_d·x)``. A click that converted ``d`` seconds after it contributes
``log p + log λ − λd`` to the log-likelihood; one not (yet) converted ``e`` seconds after it contributes
``log S(e)``, ``S(e) = 1 − p + p·e^{−λe}``: the model explains a missing conversion either as "never"
or as "not yet", so recent clicks are not taken for negatives and ``p`` is the eventual conversion
probability, calibrated while conversions still arrive days late.

**Online approximation.** Chapelle retrains in batch on every click with its current elapsed time. Here
the likelihood of one click is split into conditional factors, each learned once when it is known:
``S(e₁)/S(e₀)`` when the click is seen unconverted at elapsed ``e₁`` after being last seen at ``e₀``
(:meth:`learn_elapsed`, e.g. at every periodic re-weighting tick of the caller and at the close of the
window with the final elapsed time), and ``p λ e^{−λd} / S(e₀)`` when its conversion arrives ``d``
seconds after the click (:meth:`learn_conversion`). The factors multiply to Chapelle's likelihood at
any time, so the sum of the learned losses of a click is exactly its current term in his objective
(each factor's gradient taken at the weights of its moment, as in any online method). Each factor is an
FTRL-Proximal step (McMahan et al. 2013, as ``ctr-ftrl``) on the bias, shared and per-arm coordinates
of both heads: the per-coordinate adaptive rate keeps a burst of late conversions from swinging the
model. :meth:`learn_elapsed_batch` learns the factors of one tick one after the other (a mini-batch
step with the gradients summed was tried: one huge step per tick swings the model, biasing pCTCVR by
tens of per cent). The online path is not order-free: FTRL weighs recent factors more, so a stream that has
not reached its steady mix of ages (a run shorter than the window, then its backlog) drifts although every
factor is unbiased at the truth: clicks 2 h late, 10 requests/s, α 0.1, started at the truth: 1.0-1.2× during
the run, 0.86-0.88× after the backlog (``benchmarks/dfm_ordering.py``; a smaller α drifts less).

The caller keeps the pending clicks (the join keeps open impressions with their event times), so the
state is the weights only. **Through the pipeline** (simulate, replay, consume) every impression is a
"click" here (``p`` is then the probability that an impression earns the reward, e.g. converts) and
the join drives these factors with event times (:mod:`banditloop.pipeline.event_time`): each
conversion with its delay since the impression when it is joined, the elapsed time of every open,
unconverted impression at each multiple of ``tick`` seconds of event time (each tick costs one FTRL
step per pending impression, ``window / tick`` of them over an impression's life), and the final
elapsed time (the join's window) at the close. Through the pipeline, ``tick``, ``delay_prior`` and
``window`` not given are 1/28, 1/7 and 1 × the join's window for the reward
(:func:`~banditloop.operators.event_times.window_defaults`; the constructor's 6 h, 1 day and 7 days for
the default 7-day conversion window, 129 s, 514 s and 1 h for the default 1-hour click window). With
``tick = 0`` the model learns each impression once when its window closes instead (so does a state
written before ``tick`` existed), with the final reward as label: converted within the window
(``log p F(window)``, the delay unknown) or not (``log S(window)``), through ``learn_close``, unbiased
but a window late.

``delay_features`` (default ``"all"``): the delay head's log-rate is linear in the bias, shared and
per-arm coordinates like the conversion head. ``"bias"``: one delay rate for every arm and context (the
head's bias only; its other coordinates stay 0). When the delay does not depend on the arm or the
context (a click delay is mostly the user's, not the ad's), this is the right model and it is learned from
every click at once: with per-arm delay rates each arm's ``p`` and ``λ`` are confounded in its own data
until its clicks have had time to arrive (``benchmarks/README.md``, issue 11 at a 2 h click delay). The
noise of per-arm rates also biases ``p`` upwards while the clicks are young (``p`` is about the conversions
÷ Σ F(e), the share of each click's delay already past, and 1/F is convex in the rate: a rate too slow
raises ``p`` more than one as much too fast lowers it): on conversions a day late, "bias" took the
excess over a no-delay model in the second tenth of a run from 1.3 to 0.3 points (``benchmarks/README.md``,
issue 11, sixth session). "all" stays the default: the consistent model when delays differ by arm.

``delay_alpha`` (opt-in, default None: ``alpha``): the FTRL rate of the delay head alone. With a delay
prior known from history, a slower delay head keeps the surprise of early events in ``p``'s head while
the pending events cannot yet tell the rate from ``p``: on clicks 2 h late at 10 requests/s from the
history's CTR, ``alpha=0.15 delay_alpha=0.02`` kept every tenth within 0.95-1.05× on one seed of three
(one rate for both heads: 1.10 mid-run), not on the other two (``benchmarks/README.md``, issue 11, sixth
session). Opt-in, not a recommendation yet. States written before the option learn both heads at ``alpha``.

``steps`` (opt-in, default ``"ftrl"``): ``"newton"`` divides each coordinate's step by ``Σg²`` instead of
``√Σg²`` (:mod:`banditloop.operators.ftrl_heads`): a diagonal online Newton step with the empirical Fisher
information as curvature, so the step shrinks as ``1/n`` and every factor keeps its weight, where FTRL's
``1/√n`` weighs the recent ones more; use ``alpha`` near 1 and ``beta`` as a prior precision (20). It removes
most of the ordering drift above (from the truth, one arm, after a 50k-impression checkpoint: 0.965-0.983×
per tenth, 1.004× after, against FTRL's 0.867-0.997×, 1.003×); from such a checkpoint, clicks 2 h late at 10
requests/s, it met every CTR target on 3 seeds of 5 (FTRL: none of 3; ``benchmarks/README.md``, issue 11,
eighth session). It is sensitive to ``alpha`` (0.3 too slow, 4 unstable with 19 correlated coordinates per
head) and moves slowly from a start far off: after ``n`` steps a coordinate has moved about ``α·ln n``
(FTRL about ``2α√n``), so a ``delay_prior`` of 2 h for clicks that arrive at once stayed at 5× the CTR;
start it from a checkpoint, a history's rates, a ``delay_prior`` near the true delay. Not order-free in
general (its curvature is the squared gradient, larger on conversions than on "not yet"): fed all
conversions first, its ``p`` ends far from the batch fit. States written before the option load with
``"ftrl"``. ``"fisher"``: the same step with the information of each factor's time at risk as curvature in
place of ``g²`` (:mod:`banditloop.operators.dfm_curvature`): it does not depend on the factor's outcome, so
a conversion adds what a "not yet" over the same interval adds. Measured, it changes nothing that matters (2 h
clicks, 10 requests/s, seeds 2 and 4: within 0.01 of ``"newton"`` on every figure; ``benchmarks/README.md``, issue
11, ninth session) and costs 1.4× per step: an outcome-independent variant, not a recommendation.

``conversions_at`` (default ``"arrival"``): ``"tick"`` learns each conversion at the next tick, spread
among that tick's survival factors, instead of when it arrives
(:mod:`banditloop.operators.deferred_conversions`): no sawtooth between ticks.

``average = ω`` (opt-in, default off): predict with the ω-suffix average of the FTRL iterates (per
step, or ``average_at="tick"``: at the ticks), learn with the raw iterate
(:mod:`banditloop.operators.ftrl_heads`).

**Exploration** (``exploration``, ``epsilon``, ``temperature``; default greedy: ``epsilon = 0``): as
``ctr-ftrl``, ε-greedy or softmax over the scores (the conversion probability), with exact propensities
(:class:`~banditloop.operators.policies.OptionalExploration`). A greedy model never corrects an arm it
stopped choosing early, and the arms it serves are those whose estimate is highest (the winner's curse of
its served predictions). States written before the option load greedy.

**State**: per arm ``z``, ``n`` (shape 2 × dim: conversion head, delay head), ``clicks`` and
``conversions``; global ``z_shared``, ``n_shared`` (2 × dim) and ``z_bias``, ``n_bias`` (2). Weights are
rebuilt from ``(z, n)`` on load, so a restored model continues identically. Merge is the
``n``-weighted approximation of ``ctr-ftrl`` (``exact_merge = False``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from banditloop.operators.base import Shared
from banditloop.operators.deferred_conversions import DeferredConversions, check_conversions_at
from banditloop.operators.dfm_curvature import interval_information, window_information
from banditloop.operators.ftrl_checks import check_average, check_average_at, check_ftrl, check_head_alpha, check_steps
from banditloop.operators.ftrl_heads import (
    _MAX_LOG,
    FTRLHeads,
    _sigmoid,
    sigmoid_scalar,
)
from banditloop.operators.policies import OptionalExploration, check_exploration


def survival_grad(p: np.ndarray, log_rate: np.ndarray, elapsed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient of ``−log S(e)``, ``S(e) = 1 − p + p e^{−λe}``, in the logit of ``p`` and in ``log λ``."""
    e = np.asarray(elapsed, dtype=float)
    with np.errstate(divide="ignore"):
        le = np.where(e > 0, np.exp(np.minimum(log_rate + np.log(np.maximum(e, 1e-300)), _MAX_LOG)), 0.0)
    u = np.exp(-le)
    s = 1.0 - p + p * u
    return p * (1.0 - p) * (1.0 - u) / s, p * le * u / s


def _over(a: float, s: float) -> float:
    """``a / s`` as numpy divides (inf or nan at ``s = 0``, where ``math`` raises)."""
    if s:
        return a / s
    return math.nan if a == 0.0 or a != a else math.copysign(math.inf, a)


def survival_grad_scalar(p: float, log_rate: float, elapsed: float) -> tuple[float, float]:
    """:func:`survival_grad` of one click, with ``math`` (equal up to the last bits of exp and log)."""
    le = math.exp(min(log_rate + math.log(max(elapsed, 1e-300)), _MAX_LOG)) if elapsed > 0 else 0.0
    u = math.exp(-le)
    s = 1.0 - p + p * u
    return _over(p * (1.0 - p) * (1.0 - u), s), _over(p * le * u, s)


def conversion_grad(p: np.ndarray, log_rate: np.ndarray, delay: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient of ``−log p − log λ + λd`` in the logit of ``p`` and in ``log λ``."""
    ld = np.exp(np.minimum(log_rate + np.log(np.maximum(np.asarray(delay, dtype=float), 1e-300)), _MAX_LOG))
    return p - 1.0, ld - 1.0


def conversion_grad_scalar(p: float, log_rate: float, delay: float) -> tuple[float, float]:
    """:func:`conversion_grad` of one click, with ``math``."""
    return p - 1.0, math.exp(min(log_rate + math.log(max(delay, 1e-300)), _MAX_LOG)) - 1.0


def window_grad(p: float, log_rate: float, window: float, label: float) -> tuple[float, float]:
    """Gradient of the final term of a click whose window closed with ``label`` (1: converted at an
    unknown delay within the window, ``−log p F(W)``; 0: ``−log S(W)``; soft labels mix the two)."""
    lw = math.exp(min(log_rate + math.log(window), _MAX_LOG)) if window > 0 else 0.0
    u = math.exp(-lw)
    neg_a, neg_l = survival_grad_scalar(p, log_rate, window)
    pos_a, pos_l = p - 1.0, -(lw * u / (-math.expm1(-lw))) if lw > 0 else 0.0
    return label * pos_a + (1.0 - label) * neg_a, label * pos_l + (1.0 - label) * neg_l


def elapsed_factor_grad(p: float, log_rate: float, elapsed_from: float, elapsed_to: float) -> tuple[float, float]:
    """Gradient of ``−log S(e₁)/S(e₀)`` in the logit of ``p`` and in ``log λ``."""
    a1, l1 = survival_grad_scalar(p, log_rate, elapsed_to)
    a0, l0 = survival_grad_scalar(p, log_rate, elapsed_from)
    return a1 - a0, l1 - l0


def conversion_factor_grad(p: float, log_rate: float, delay: float, elapsed_from: float) -> tuple[float, float]:
    """Gradient of ``−log p λ e^{−λd} / S(e₀)`` in the logit of ``p`` and in ``log λ``."""
    ga, gl = conversion_grad_scalar(p, log_rate, delay)
    a0, l0 = survival_grad_scalar(p, log_rate, elapsed_from)
    return ga - a0, gl - l0


#: what the delay head learns: "all" (bias, shared and per-arm weights), "bias" (one rate for all)
DELAY_FEATURES = ("all", "bias")


class DelayedFeedbackModel(DeferredConversions, OptionalExploration, FTRLHeads):
    """Chapelle's delayed feedback model (conversion probability and exponential delay), FTRL-Proximal,
    learned online from the elapsed time of every pending click; chooses on the conversion probability,
    greedy or ε-greedy/softmax (``epsilon``, ``exploration``).

    >>> import numpy as np
    >>> model = DelayedFeedbackModel(dim=1, prior=0.5, delay_prior=86400.0)
    >>> rng, x = np.random.default_rng(0), np.array([1.0])
    >>> for _ in range(3000):     # a quarter of clicks convert, after 2 days on average; seen at 3 days
    ...     delay = rng.exponential(2 * 86400.0)
    ...     if rng.random() < 0.25 and delay < 3 * 86400.0:
    ...         model.learn_conversion("ad", x, delay=delay)
    ...     else:
    ...         model.learn_elapsed("ad", x, 0.0, 3 * 86400.0)   # unconverted (yet) after 3 days
    >>> round(model.cvr("ad", x), 2), round(model.mean_delay("ad", x) / 86400.0, 1)
    (0.26, 2.0)
    """

    kind = "dfm"
    binary_reward = True
    learns_at_close = True
    additive_arrays = ("clicks", "conversions")
    heads = 2

    def __init__(self, dim: int, alpha: float = 0.05, beta: float = 1.0, l1: float = 0.0, l2: float = 0.0,
                 prior: float = 0.1, delay_prior: float = 86400.0, window: float = 604800.0,
                 tick: float = 21600.0, average: float | None = None, average_at: str = "step",
                 delay_features: str = "all", delay_alpha: float | None = None, conversions_at: str = "arrival",
                 steps: str = "ftrl",
                 exploration: str = "egreedy", epsilon: float = 0.0, temperature: float = 0.05, seed: int = 0) -> None:
        check_ftrl(alpha, beta, l1, l2, prior, delay_prior, window, tick)
        self.delay_alpha = check_head_alpha("delay_alpha", delay_alpha)
        self.steps = check_steps(steps)
        check_exploration(exploration, epsilon, temperature)
        self.exploration, self.epsilon, self.temperature = exploration, float(epsilon), float(temperature)
        self.conversions_at = check_conversions_at(conversions_at)
        if delay_features not in DELAY_FEATURES:
            raise ValueError(f"delay_features must be one of {DELAY_FEATURES}, not {delay_features!r}")
        self.delay_features = delay_features
        self.average = check_average(average)
        self.average_at = check_average_at(average_at)
        self.tick = float(tick)
        self.alpha, self.beta, self.l1, self.l2 = float(alpha), float(beta), float(l1), float(l2)
        self.prior = float(prior)
        self.delay_prior = float(delay_prior)
        self.window = float(window)
        self._offsets = np.array([math.log(self.prior / (1.0 - self.prior)), -math.log(self.delay_prior)])
        if self.delay_alpha is not None and self.delay_alpha != self.alpha:
            self._head_alpha = np.array([[self.alpha], [self.delay_alpha]])
        super().__init__(dim, seed)
        if delay_features == "bias":  # one delay rate for every arm and context: the delay head's bias
            mask = np.zeros((2, 2 * dim + 1))
            mask[0], mask[1, 0] = 1.0, 1.0
            self._grad_mask = mask

    # -- predictions ----------------------------------------------------------------------------
    def cvr(self, arm: str, x: np.ndarray) -> float:
        """Eventual conversion probability ``p`` of a click on ``arm`` in context ``x``."""
        return float(_sigmoid(self._logits(self.add_arm(arm), x)[0]))

    predict = cvr

    def mean_delay(self, arm: str, x: np.ndarray) -> float:
        """Predicted mean delay ``1/λ`` (seconds) from the click to its conversion."""
        return float(math.exp(-self._logits(self.add_arm(arm), x)[1]))

    def converted_by(self, arm: str, x: np.ndarray, elapsed: float) -> float:
        """Probability that the click has converted ``elapsed`` seconds after it: ``p (1 − e^{−λe})``."""
        a, lr = self._logits(self.add_arm(arm), x)
        return float(_sigmoid(a) * -math.expm1(-math.exp(min(lr + math.log(max(elapsed, 1e-300)), _MAX_LOG))))

    def score(self, x: np.ndarray, candidates: Sequence[str], shared: Shared = None) -> np.ndarray:
        return _sigmoid(self._logits(self._rows(candidates), x)[:, 0])

    # -- learning with event times --------------------------------------------------------------------
    def _elapsed_grads(self, logits: list[float], elapsed_from: float, elapsed_to: float) -> tuple[float, float]:
        """The click, last seen unconverted ``elapsed_from`` seconds after it, is still unconverted at
        ``elapsed_to`` (:meth:`learn_elapsed`): the gradient of ``−log S(e₁)/S(e₀)``."""
        return elapsed_factor_grad(sigmoid_scalar(logits[0]), logits[1], elapsed_from, elapsed_to)

    def _elapsed_curvature(self, logits: list[float], elapsed_from: float, elapsed_to: float) -> tuple[float, float]:
        """The information of the at-risk interval ``(e₀, e₁]`` (:mod:`~banditloop.operators.dfm_curvature`)."""
        return interval_information(sigmoid_scalar(logits[0]), logits[1], elapsed_from, elapsed_to)

    def _conversion_step(self, arm: str, x: np.ndarray, delay: float, elapsed_from: float = 0.0) -> None:
        """The click converted ``delay`` seconds after it, having been learned unconverted up to
        ``elapsed_from``: learn ``−log p λ e^{−λd} / S(e₀)``."""
        r = self.add_arm(arm)
        xv = self._xv(x)
        buf, index, v, (a, lr) = self._gather(r, xv)
        p = sigmoid_scalar(a)
        curvature = interval_information(p, lr, elapsed_from, delay) if self.steps == "fisher" else None
        self._put(buf, index, v, xv, conversion_factor_grad(p, lr, delay, elapsed_from), curvature)
        self._arrays["conversions"][r] += 1.0

    # -- the pipeline's hooks (no event times) ---------------------------------------------------------
    def learn_impression(self, arm: str, x: np.ndarray, shared: np.ndarray | None = None) -> None:
        row = self.add_arm(arm)  # first: adding an arm may reallocate the arrays
        self._arrays["clicks"][row] += 1.0
        self._count(impressions=1.0)

    def learn_close(self, arm: str, x: np.ndarray | None, reward: float, shared: np.ndarray | None = None) -> None:
        if x is None:
            return
        r, xv, (buf, index, v, (a, lr)), label = self._at_close(arm, x, reward)
        p = sigmoid_scalar(a)
        curvature = window_information(p, lr, self.window) if self.steps == "fisher" else None
        self._put(buf, index, v, xv, window_grad(p, lr, self.window, label), curvature)
        self._arrays["conversions"][r] += label
