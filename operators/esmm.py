"""Entire-space multi-task model (``esmm``): pCTR and pCTCVR on every impression, pCVR derived.

Ma et al. 2018 ("Entire Space Multi-Task Model", SIGIR): a CVR model trained on clicked impressions only
is applied to every impression at serving time, but the clicked population differs from the rest (sample
selection bias), and clicks are few (data sparsity). ESMM instead learns, on *every* impression and with
one featurization, ``pCTR = P(click | x)`` and ``pCTCVR = P(click and conversion | x)``; the conversion
rate given a click follows as ``pCVR = pCTCVR / pCTR`` (capped at 1), and the expected value of an
impression is ``pCTCVR × value``. Here both heads are FTRL-Proximal logistic models on context × arm
features (bias, shared and per-arm weights, as ``ctr-ftrl``), in one state, and the pCTCVR head is
written on top of the pCTR head: ``logit pCTCVR = logit pCTR + δ(x)``, with the pCTR logit an offset
(no gradient into the pCTR head) and the linear ``δ`` learned from the conversion terms. That is any
linear pCTCVR logit, as a free head, but the ratio pCVR = pCTCVR/pCTR then depends on ``δ`` only: with
two free heads, a pCTCVR head that converges slower than the pCTR head (it learns from ~10× fewer
positives) has a flatter slope, and their ratio overshoots by tens of per cent on the impressions
unlikely to be clicked (measured: +55 % mean pCVR, 20k impressions).

**Forms** (``form``). ``"logit"`` (default, above): exact when pCTCVR is logistic in the features, as
in the simulator's selection-bias world; where the pCVR does not depend on the click probability it is
not (``σ(l + δ)/σ(l)`` varies with the click logit ``l``), and while ``δ`` is still at its prior the pCVR
of impressions likely to be clicked is over-estimated (``benchmarks/README.md``, issue 11). ``"product"``:
Ma et al.'s own form, ``pCTCVR = pCTR × pCVR`` with ``pCVR = sigmoid(v(x))`` a head of its own (prior
``prior / ctr_prior``), learned from the same entire-space pCTCVR terms (the gradient in the logit of
pCTCVR times ``(1 − pCVR)/(1 − pCTCVR)``, the chain rule through the product, the pCTR factor still an
offset); exact when the pCVR is logistic, bounded by 1 by construction. States written before ``form``
load as ``"logit"``.

**Delayed conversions.** The click∧conversion label of an impression arrives days late, so the pCTCVR
head is a delayed feedback model (Chapelle 2014, :mod:`banditloop.operators.dfm`) over impressions: an
impression converts eventually with probability ``pCTCVR`` after an exponential delay of rate ``λ(x)``
(a third, log-linear head) counted from the impression (clicks come seconds after it, conversions days).
Every impression, clicked or not, ages: :meth:`learn_elapsed` / :meth:`learn_elapsed_batch` learn
``−log S(e₁)/S(e₀)`` at the caller's re-weighting ticks and at the window's close, :meth:`learn_conversion`
``−log pλe^{−λd}/S(e₀)`` when the conversion arrives. Unclicked impressions are *not* closed early as
final negatives although they cannot convert: revealing the negatives early but the positives late would
bias pCTCVR down, as unweighted fake negatives do (the conditional on the click would need the product
form, which is no longer the entire-space loss). The pCTR head learns each impression's click label
once, when its click window closes (:meth:`learn_click`; minutes).

Through the pipeline (simulate, replay, consume; a conversion reward), the join drives the model with
event times as ``dfm`` (:mod:`banditloop.pipeline.event_time`, ticks every ``tick`` seconds): each
conversion with its delay since the impression, elapsed times at the ticks and at the close, and the
pCTR head learns each impression's click label (``imp.clicked``) at the first tick after its click
window. With ``tick = 0`` it learns only the pCTCVR head, from the final reward at each window's close,
and the pCTR head stays at its prior. Scores are the expected value per impression, ``pCTCVR`` (× the
value given to :meth:`expected_value`): greedy by default, ε-greedy or softmax with ``epsilon`` /
``exploration`` as ``dfm`` (a softmax ``temperature`` is on the scale of pCTCVR, often 10⁻³).

**Rates and averaging** (opt-in, :mod:`banditloop.operators.ftrl_heads`). ``ctr_alpha`` and
``ctcvr_alpha``: the FTRL ``alpha`` of the pCTR and of the second (δ or pCVR) head (None: ``alpha``; the
delay head keeps ``alpha``). ``average = ω``: predict with the ω-suffix average of the FTRL iterates
(Polyak–Ruppert; per step, or ``average_at="tick"``: of the iterates at the ticks), learn with the raw
iterate (the pCTCVR terms take the raw pCTR logit as offset). In the selection-bias world the online
``δ`` fits against a pCTR offset that is still moving: a faster pCTR head (``ctr_alpha=0.5``) settles it
early (pCVR error 0.75× the clicked-only model's with daily ticks, 0.84× by default); a faster δ with
averaged iterates helps only without delays (``benchmarks/README.md``). States written before these
load with them off.

``conversions_at="tick"``: conversions learned at the next tick among its survival factors (as ``dfm``).
Through the pipeline ``tick``, ``delay_prior`` and ``window`` not given follow the join's window (as ``dfm``:
1/28, 1/7 and 1 × it; 6 h, 1 day and 7 days for the default 7-day conversion window).

**State**: per arm ``z``, ``n`` (3 × dim: CTR, CTCVR (δ or pCVR), delay heads), ``impressions``, ``clicks`` and
``conversions``; global ``z_shared``, ``n_shared`` (3 × dim), ``z_bias``, ``n_bias`` (3); with averaging
also ``w_avg``, ``avg_steps`` (per arm), ``w_avg_shared``, ``w_avg_bias``, ``avg_steps_global``. Approximate
merge as ``ctr-ftrl``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from banditloop.operators.base import Shared
from banditloop.operators.deferred_conversions import DeferredConversions, check_conversions_at
from banditloop.operators.dfm import conversion_factor_grad, elapsed_factor_grad, window_grad
from banditloop.operators.ftrl_checks import check_average, check_average_at, check_ftrl, check_head_alpha
from banditloop.operators.ftrl_heads import (
    FTRLHeads,
    _sigmoid,
    sigmoid_scalar,
)
from banditloop.operators.policies import OptionalExploration, check_exploration

CTR, CTCVR, DELAY = 0, 1, 2
FORMS = ("logit", "product")


class ESMM(DeferredConversions, OptionalExploration, FTRLHeads):
    """Entire-space pCTR and pCTCVR heads (FTRL-Proximal, one featurization), pCVR = pCTCVR / pCTR,
    with delayed-feedback treatment of conversions; chooses on the expected value per impression, greedy or
    ε-greedy/softmax (``epsilon``, ``exploration``).

    >>> import numpy as np
    >>> model = ESMM(dim=1, ctr_prior=0.5, prior=0.1)
    >>> rng, x = np.random.default_rng(0), np.array([1.0])
    >>> for _ in range(4000):                      # clicks at 40 %, a click converts at 25 %
    ...     clicked = rng.random() < 0.4
    ...     model.learn_click("ad", x, clicked)
    ...     if clicked and rng.random() < 0.25:
    ...         model.learn_conversion("ad", x, delay=3600.0)
    ...     else:
    ...         model.learn_elapsed("ad", x, 0.0, 30 * 86400.0)   # never converted
    >>> round(model.ctr("ad", x), 2), round(model.ctcvr("ad", x), 2), round(model.cvr("ad", x), 2)
    (0.4, 0.1, 0.25)
    """

    kind = "esmm"
    binary_reward = True
    learns_at_close = True
    click_labels = True
    additive_arrays = ("impressions", "clicks", "conversions")
    heads = 3

    def __init__(self, dim: int, alpha: float = 0.05, beta: float = 1.0, l1: float = 0.0, l2: float = 0.0,
                 ctr_prior: float = 0.05, prior: float = 0.005, delay_prior: float = 86400.0,
                 window: float = 604800.0, tick: float = 21600.0, form: str = "logit",
                 ctr_alpha: float | None = None, ctcvr_alpha: float | None = None, average: float | None = None,
                 average_at: str = "step", conversions_at: str = "arrival", exploration: str = "egreedy",
                 epsilon: float = 0.0, temperature: float = 0.05, seed: int = 0) -> None:
        check_ftrl(alpha, beta, l1, l2, prior, delay_prior, window, tick)
        check_exploration(exploration, epsilon, temperature)
        self.exploration, self.epsilon, self.temperature = exploration, float(epsilon), float(temperature)
        self.conversions_at = check_conversions_at(conversions_at)
        self.ctr_alpha = check_head_alpha("ctr_alpha", ctr_alpha)
        self.ctcvr_alpha = check_head_alpha("ctcvr_alpha", ctcvr_alpha)
        self.average = check_average(average)
        self.average_at = check_average_at(average_at)
        self.tick = float(tick)
        if not 0.0 < ctr_prior < 1.0:
            raise ValueError("ctr_prior must be in (0, 1)")
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, not {form!r}")
        if form == "product" and not prior < ctr_prior:
            raise ValueError("form='product' needs prior (pCTCVR) < ctr_prior (pCTR)")
        self.form = form
        self.alpha, self.beta, self.l1, self.l2 = float(alpha), float(beta), float(l1), float(l2)
        self.ctr_prior = float(ctr_prior)
        self.prior = float(prior)
        self.delay_prior = float(delay_prior)
        self.window = float(window)
        ctr_logit, cvr = math.log(self.ctr_prior / (1.0 - self.ctr_prior)), self.prior / self.ctr_prior
        second = (math.log(cvr / (1.0 - cvr)) if form == "product"
                  else math.log(self.prior / (1.0 - self.prior)) - ctr_logit)
        self._offsets = np.array([ctr_logit, second, -math.log(self.delay_prior)])
        rates = (self.alpha if ctr_alpha is None else self.ctr_alpha,
                 self.alpha if ctcvr_alpha is None else self.ctcvr_alpha, self.alpha)
        self._head_alpha = None if rates == (self.alpha,) * 3 else np.array(rates)[:, None]
        super().__init__(dim, seed)

    # -- predictions ----------------------------------------------------------------------------
    def _probs(self, arm: str, x: np.ndarray) -> tuple[float, float]:
        out = self._logits(self.add_arm(arm), x)
        if self.form == "product":
            ctr = float(_sigmoid(out[CTR]))
            return ctr, ctr * float(_sigmoid(out[CTCVR]))
        return float(_sigmoid(out[CTR])), float(_sigmoid(out[CTR] + out[CTCVR]))

    def _ctcvr(self, c: float, a: float) -> tuple[float, float]:
        """pCTCVR of the logits ``c`` (pCTR head) and ``a`` (second head), and the factor that turns a
        gradient in the logit of pCTCVR into one in ``a``: 1 for ``"logit"`` (``a`` = δ adds to the
        logit); ``(1 − pCVR)/(1 − pCTCVR)`` for ``"product"`` (``∂P/∂a = P (1 − pCVR)``)."""
        if self.form == "product":
            s = sigmoid_scalar(a)
            p = sigmoid_scalar(c) * s
            return p, (1.0 - s) / (1.0 - p)
        return sigmoid_scalar(c + a), 1.0

    def ctr(self, arm: str, x: np.ndarray) -> float:
        """pCTR: probability that an impression of ``arm`` in context ``x`` is clicked."""
        return self._probs(arm, x)[0]

    def ctcvr(self, arm: str, x: np.ndarray) -> float:
        """pCTCVR: probability that the impression is clicked and (eventually) converts."""
        return self._probs(arm, x)[1]

    def cvr(self, arm: str, x: np.ndarray) -> float:
        """pCVR = pCTCVR / pCTR (capped at 1): conversion probability given a click."""
        if self.form == "product":
            return float(_sigmoid(self._logits(self.add_arm(arm), x)[CTCVR]))
        ctr, ctcvr = self._probs(arm, x)
        return min(ctcvr / ctr, 1.0)

    predict = ctcvr

    def expected_value(self, arm: str, x: np.ndarray, value: float = 1.0) -> float:
        """Expected value of the impression: ``pCTCVR × value`` (= pCTR × pCVR × value)."""
        return self.ctcvr(arm, x) * float(value)

    def score(self, x: np.ndarray, candidates: Sequence[str], shared: Shared = None) -> np.ndarray:
        out = self._logits(self._rows(candidates), x)
        if self.form == "product":
            return _sigmoid(out[:, CTR]) * _sigmoid(out[:, CTCVR])
        return _sigmoid(out[:, CTR] + out[:, CTCVR])

    # -- learning with event times --------------------------------------------------------------------
    def learn_click(self, arm: str, x: np.ndarray, clicked: bool | float) -> None:
        """The impression's click window closed: the pCTR head learns its click label."""
        label = min(max(float(clicked), 0.0), 1.0)
        r = self.add_arm(arm)
        xv = self._xv(x)
        buf, index, v, logits = self._gather(r, xv)
        self._put(buf, index, v, xv, (sigmoid_scalar(logits[CTR]) - label, 0.0, 0.0))
        self._arrays["impressions"][r] += 1.0
        self._arrays["clicks"][r] += label

    def learn_late_click(self, arm: str, x: np.ndarray) -> None:
        """The impression's click joined after :meth:`learn_click` learned it unclicked (a click delivered
        later than the caller's lateness): the pCTR head learns ``−log p − (−log(1 − p))``, its true label's
        loss less the negative's, whose gradient in the logit is −1; the head has then learned the
        impression's term ``−log p`` in all (as if labelled right, each part at the weights of its moment)."""
        r = self.add_arm(arm)
        xv = self._xv(x)
        buf, index, v, _ = self._gather(r, xv)
        self._put(buf, index, v, xv, (-1.0, 0.0, 0.0))
        self._arrays["clicks"][r] += 1.0

    def clicks(self, arm: str) -> float:
        """Click labels learned for ``arm`` (clicked impressions, late corrections included)."""
        return float(self._arrays["clicks"][self.add_arm(arm)])

    def _elapsed_grads(self, logits: list[float], elapsed_from: float, elapsed_to: float) -> tuple[float, ...]:
        """The impression, last seen unconverted ``elapsed_from`` seconds after it, is still unconverted
        at ``elapsed_to`` (:meth:`learn_elapsed`): the pCTCVR and delay heads learn ``−log S(e₁)/S(e₀)``."""
        p, scale = self._ctcvr(logits[CTR], logits[CTCVR])
        ga, gl = elapsed_factor_grad(p, logits[DELAY], elapsed_from, elapsed_to)
        return 0.0, ga * scale, gl

    def _conversion_step(self, arm: str, x: np.ndarray, delay: float, elapsed_from: float = 0.0) -> None:
        """The impression converted ``delay`` seconds after it (learned unconverted up to ``elapsed_from``)."""
        r = self.add_arm(arm)
        xv = self._xv(x)
        buf, index, v, (c, a, lr) = self._gather(r, xv)
        p, scale = self._ctcvr(c, a)
        ga, gl = conversion_factor_grad(p, lr, delay, elapsed_from)
        self._put(buf, index, v, xv, (0.0, ga * scale, gl))
        self._arrays["conversions"][r] += 1.0

    # -- the pipeline's hooks (no event times, one reward) ---------------------------------------------
    def learn_impression(self, arm: str, x: np.ndarray, shared: np.ndarray | None = None) -> None:
        self._count(impressions=1.0)

    def learn_close(self, arm: str, x: np.ndarray | None, reward: float, shared: np.ndarray | None = None) -> None:
        if x is None:
            return
        r, xv, (buf, index, v, (c, a, lr)), label = self._at_close(arm, x, reward)
        p, scale = self._ctcvr(c, a)
        ga, gl = window_grad(p, lr, self.window, label)
        self._put(buf, index, v, xv, (0.0, ga * scale, gl))
        self._arrays["conversions"][r] += label
