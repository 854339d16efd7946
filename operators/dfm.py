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
tens of per cent).

The caller keeps the pending clicks (the join keeps open impressions with their event times), so the
state is the weights only. **Through the pipeline** (simulate, replay, consume) every impression is a
"click" here (``p`` is then the probability that an impression earns the reward, e.g. converts) and
the join drives these factors with event times (:mod:`banditloop.pipeline.event_time`): each
conversion with its delay since the impression when it is joined, the elapsed time of every open,
unconverted impression at each multiple of ``tick`` seconds of event time (default 6 h: each tick costs
one FTRL step per pending impression, ``window / tick`` of them over an impression's life), and the
final elapsed time (the join's window) at the close. With ``tick = 0`` the model learns each impression
once when its window closes instead (so does a state written before ``tick`` existed), with the final
reward as label: converted within the window (``log p F(window)``, the delay unknown) or not
(``log S(window)``), through ``learn_close``, unbiased but a window late.

**State**: per arm ``z``, ``n`` (shape 2 × dim: conversion head, delay head), ``clicks`` and
``conversions``; global ``z_shared``, ``n_shared`` (2 × dim) and ``z_bias``, ``n_bias`` (2). Weights are
rebuilt from ``(z, n)`` on load, so a restored model continues identically. Merge is the
``n``-weighted approximation of ``ctr-ftrl`` (``exact_merge = False``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np

from banditloop.core.state_codec import LearnerState
from banditloop.operators.base import Learner, Shared
from banditloop.operators.ctr_ftrl import ftrl_step, ftrl_weights

#: log λ·e is clipped here: e^{-λe} underflows to 0 long before, and exp must not overflow
_MAX_LOG = 700.0


def _sigmoid(z: np.ndarray | float) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=float)))


def survival_grad(p: np.ndarray, log_rate: np.ndarray, elapsed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient of ``−log S(e)``, ``S(e) = 1 − p + p e^{−λe}``, in the logit of ``p`` and in ``log λ``."""
    e = np.asarray(elapsed, dtype=float)
    with np.errstate(divide="ignore"):
        le = np.where(e > 0, np.exp(np.minimum(log_rate + np.log(np.maximum(e, 1e-300)), _MAX_LOG)), 0.0)
    u = np.exp(-le)
    s = 1.0 - p + p * u
    return p * (1.0 - p) * (1.0 - u) / s, p * le * u / s


def conversion_grad(p: np.ndarray, log_rate: np.ndarray, delay: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient of ``−log p − log λ + λd`` in the logit of ``p`` and in ``log λ``."""
    ld = np.exp(np.minimum(log_rate + np.log(np.maximum(np.asarray(delay, dtype=float), 1e-300)), _MAX_LOG))
    return p - 1.0, ld - 1.0


def window_grad(p: float, log_rate: float, window: float, label: float) -> tuple[float, float]:
    """Gradient of the final term of a click whose window closed with ``label`` (1: converted at an
    unknown delay within the window, ``−log p F(W)``; 0: ``−log S(W)``; soft labels mix the two)."""
    lw = math.exp(min(log_rate + math.log(window), _MAX_LOG)) if window > 0 else 0.0
    u = math.exp(-lw)
    neg_a, neg_l = (float(v) for v in survival_grad(np.array(p), np.array(log_rate), np.array(window)))
    pos_a, pos_l = p - 1.0, -(lw * u / (-math.expm1(-lw))) if lw > 0 else 0.0
    return label * pos_a + (1.0 - label) * neg_a, label * pos_l + (1.0 - label) * neg_l


def merge_ftrl_coords(z1: np.ndarray, n1: np.ndarray, z2: np.ndarray, n2: np.ndarray, alpha: float, beta: float,
                      l1: float, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """Merged FTRL ``(z, n)``: the ``n``-weighted mean weight, ``n`` summed (as ``ctr-ftrl``'s merge)."""
    n = n1 + n2
    share = np.divide(n2, n, out=np.full(n.shape, 0.5), where=n > 0)
    w = (1.0 - share) * ftrl_weights(z1, n1, alpha, beta, l1, l2) + share * ftrl_weights(z2, n2, alpha, beta, l1, l2)
    z_at_zero = np.clip((1.0 - share) * z1 + share * z2, -l1, l1)
    z = np.where(w == 0.0, z_at_zero, -(w * ((beta + np.sqrt(n)) / alpha + l2) + np.sign(w) * l1))
    return np.where(share == 1.0, z2, np.where(share == 0.0, z1, z)), n


class FTRLHeads(Learner):
    """Base of the FTRL models with several logistic/log-linear heads on one featurization: per head
    a bias, a shared weight vector and one per arm. Subclasses set ``heads`` and ``_offsets``."""

    exact_merge = False
    derived_arrays = ("w", "w_shared", "w_bias")
    #: through the pipeline: conversions with their delays, elapsed times at ticks every ``tick`` seconds
    #: (:mod:`banditloop.pipeline.event_time`); ``tick = 0``: once per impression at its window's close
    learns_event_times = True
    #: learns each impression's click label (``learn_click``) at the end of its click window
    click_labels: ClassVar[bool] = False
    tick: float
    heads: int = 2
    alpha: float
    beta: float
    l1: float
    l2: float
    _offsets: np.ndarray

    @classmethod
    def from_state(cls, state: LearnerState) -> Learner:
        if "tick" not in state.params:  # written before event times: keeps learning at the close
            state = dataclasses.replace(state, params={**state.params, "tick": 0.0})
        return super().from_state(state)

    def _arm_arrays(self):
        hd = (self.heads, self.dim)
        return {"z": (hd, 0.0), "n": (hd, 0.0), "w": (hd, 0.0)} | {k: ((), 0.0) for k in self.additive_arrays}

    def _global_arrays(self):
        hd, h = (self.heads, self.dim), (self.heads,)
        return {"z_shared": (hd, 0.0), "n_shared": (hd, 0.0), "w_shared": (hd, 0.0),
                "z_bias": (h, 0.0), "n_bias": (h, 0.0), "w_bias": (h, 0.0)}

    def _hyper(self) -> tuple[float, float, float, float]:
        return self.alpha, self.beta, self.l1, self.l2

    def _logits(self, rows: np.ndarray | int, x: np.ndarray) -> np.ndarray:
        """Every head's output for each row (shape ``heads`` for one row, ``(len(rows), heads)`` else)."""
        g = self._globals
        x = np.asarray(x, dtype=float)
        return self._offsets + g["w_bias"] + g["w_shared"] @ x + self._arrays["w"][rows] @ x

    def _step(self, row: int, x: np.ndarray, grad: np.ndarray) -> None:
        """One FTRL step of every coordinate of every head; ``grad`` is the loss gradient per head output."""
        a, g, h = self._arrays, self._globals, self._hyper()
        gx = np.outer(grad, x)
        ftrl_step(g["z_bias"], g["n_bias"], g["w_bias"], np.asarray(grad, dtype=float), *h)
        ftrl_step(g["z_shared"], g["n_shared"], g["w_shared"], gx, *h)
        ftrl_step(a["z"][row], a["n"][row], a["w"][row], gx, *h)

    def _on_load(self) -> None:
        a, g, h = self._arrays, self._globals, self._hyper()
        a["w"][...] = ftrl_weights(a["z"], a["n"], *h)
        g["w_shared"][...] = ftrl_weights(g["z_shared"], g["n_shared"], *h)
        g["w_bias"][...] = ftrl_weights(g["z_bias"], g["n_bias"], *h)

    def _merge_arrays(self, rows: np.ndarray, theirs: Mapping[str, np.ndarray], other: Learner) -> None:
        a, g, h = self._arrays, self._globals, self._hyper()
        a["z"][rows], a["n"][rows] = merge_ftrl_coords(a["z"][rows], a["n"][rows], theirs["z"], theirs["n"], *h)
        for part in ("shared", "bias"):
            zk, nk = f"z_{part}", f"n_{part}"
            g[zk][...], g[nk][...] = merge_ftrl_coords(g[zk], g[nk], theirs[zk], theirs[nk], *h)
        for name in self.additive_arrays:
            a[name][rows] += theirs[name]

    def _at_close(self, arm: str, x: np.ndarray, reward: float) -> tuple[int, np.ndarray, np.ndarray, float]:
        """What ``learn_close`` needs: the arm's row, ``x`` as floats, the heads' logits, the label in [0, 1]."""
        r = self.add_arm(arm)
        x = np.asarray(x, dtype=float)
        return r, x, self._logits(r, x), min(max(float(reward), 0.0), 1.0)

    def learn_reward(self, arm: str, x: np.ndarray, reward: float, shared: np.ndarray | None = None) -> None:
        self._count(reward=reward, rewarded=1.0)  # learned at the close, with the final reward

    def learn_elapsed(self, arm: str, x: np.ndarray, elapsed_from: float, elapsed_to: float) -> None:
        """Learn that an item shown with context ``x`` is still not converted from ``elapsed_from`` to
        ``elapsed_to`` seconds after its click or impression: each model defines its own factor."""
        raise NotImplementedError(f"{type(self).__name__} learns no elapsed time")

    def learn_elapsed_batch(self, arms: Sequence[str], X: np.ndarray, elapsed_from: np.ndarray,
                            elapsed_to: np.ndarray) -> None:
        """``learn_elapsed`` (of the subclass) for many pending items at one tick, in order (equal to the
        single calls); every time is checked before anything is learned."""
        e0, e1 = np.asarray(elapsed_from, dtype=float), np.asarray(elapsed_to, dtype=float)
        if not (np.all(np.isfinite(e0)) and np.all(np.isfinite(e1)) and np.all(e0 >= 0) and np.all(e1 >= 0)):
            raise ValueError("times must be finite and >= 0 seconds")
        X = np.asarray(X, dtype=float)
        for arm, x, a, b in zip(arms, X, e0.tolist(), e1.tolist(), strict=True):
            self.learn_elapsed(arm, x, a, b)


def check_ftrl(alpha: float, beta: float, l1: float, l2: float, prior: float, delay_prior: float,
               window: float, tick: float = 0.0) -> None:
    if not (tick >= 0 and math.isfinite(tick)):
        raise ValueError("tick must be finite and >= 0 seconds (0: learn once at the close)")
    if not alpha > 0 or not beta >= 0 or not l1 >= 0 or not l2 >= 0:
        raise ValueError("alpha must be > 0, beta, l1 and l2 >= 0")
    if not 0.0 < prior < 1.0:
        raise ValueError("prior must be in (0, 1)")
    if not (delay_prior > 0 and math.isfinite(delay_prior)) or not (window > 0 and math.isfinite(window)):
        raise ValueError("delay_prior and window must be finite and > 0 (seconds)")


def _checked_times(*times: float) -> None:
    for t in times:
        if not (math.isfinite(t) and t >= 0):
            raise ValueError(f"times must be finite and >= 0 seconds, got {t!r}")


class DelayedFeedbackModel(FTRLHeads):
    """Chapelle's delayed feedback model (conversion probability and exponential delay), FTRL-Proximal,
    learned online from the elapsed time of every pending click; greedy on the conversion probability.

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
                 tick: float = 21600.0, seed: int = 0) -> None:
        check_ftrl(alpha, beta, l1, l2, prior, delay_prior, window, tick)
        self.tick = float(tick)
        self.alpha, self.beta, self.l1, self.l2 = float(alpha), float(beta), float(l1), float(l2)
        self.prior = float(prior)
        self.delay_prior = float(delay_prior)
        self.window = float(window)
        self._offsets = np.array([math.log(self.prior / (1.0 - self.prior)), -math.log(self.delay_prior)])
        super().__init__(dim, seed)

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
    def learn_elapsed(self, arm: str, x: np.ndarray, elapsed_from: float, elapsed_to: float) -> None:
        """The click, last seen unconverted ``elapsed_from`` seconds after it, is still unconverted at
        ``elapsed_to``: learn ``−log S(e₁)/S(e₀)``. ``elapsed_from = 0`` for its first update."""
        _checked_times(elapsed_from, elapsed_to)
        r = self.add_arm(arm)
        x = np.asarray(x, dtype=float)
        out = self._logits(r, x)
        p = _sigmoid(out[0])
        g1 = survival_grad(p, out[1], np.array(elapsed_to))
        g0 = survival_grad(p, out[1], np.array(elapsed_from))
        self._step(r, x, np.array([g1[0] - g0[0], g1[1] - g0[1]], dtype=float))

    def learn_conversion(self, arm: str, x: np.ndarray, delay: float, elapsed_from: float = 0.0) -> None:
        """The click converted ``delay`` seconds after it, having been learned unconverted up to
        ``elapsed_from``: learn ``−log p λ e^{−λd} / S(e₀)``."""
        _checked_times(delay, elapsed_from)
        r = self.add_arm(arm)
        x = np.asarray(x, dtype=float)
        out = self._logits(r, x)
        p = _sigmoid(out[0])
        ga, gl = conversion_grad(p, out[1], np.array(delay))
        s0 = survival_grad(p, out[1], np.array(elapsed_from))
        self._step(r, x, np.array([ga - s0[0], gl - s0[1]], dtype=float))
        self._arrays["conversions"][r] += 1.0

    # -- the pipeline's hooks (no event times) ---------------------------------------------------------
    def learn_impression(self, arm: str, x: np.ndarray, shared: np.ndarray | None = None) -> None:
        row = self.add_arm(arm)  # first: adding an arm may reallocate the arrays
        self._arrays["clicks"][row] += 1.0
        self._count(impressions=1.0)

    def learn_close(self, arm: str, x: np.ndarray | None, reward: float, shared: np.ndarray | None = None) -> None:
        if x is None:
            return
        r, x, out, label = self._at_close(arm, x, reward)
        self._step(r, x, np.array(window_grad(float(_sigmoid(out[0])), float(out[1]), self.window, label)))
        self._arrays["conversions"][r] += label
