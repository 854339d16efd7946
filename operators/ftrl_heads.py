"""FTRL-Proximal heads on one featurization: the common base of ``dfm`` and ``esmm``.

Each head (a logistic or log-linear output) has a bias, a shared weight vector and one per arm, learned
by FTRL-Proximal (McMahan et al. 2013, as ``ctr-ftrl``). The models learn one item at a time (a pending
impression's elapsed time, a conversion, a click label): :meth:`FTRLHeads.learn_elapsed_batch` runs the
same sequential steps as the single calls, in order.

**Speed.** A step touches every head's bias, shared and per-arm coordinates of one arm. The ``z``,
``n`` and ``w`` of all coordinates live in one buffer (``3 × coordinates``) that the state's arrays
(``z_bias``, ``z_shared``, ``z``, ...) are views of, so a step gathers the touched coordinates with one
``take`` (heads × ``[bias, shared, arm]``), computes every head's logit with one dot against
``[1, x, x]``, updates them in place with a dozen ufuncs (the float operations of ``ftrl_step``, so the
weights equal ``ftrl_weights`` of the statistics bit for bit, as a restored model recomputes them) and
puts them back with one ``put``. The per-item gradient formulas are scalar ``math`` (subclasses).

**Options** (opt-in; off, the steps are the plain ones above, bit for bit). *Step rule* (``steps``):
``"ftrl"`` (FTRL-Proximal, ``σ = (√(n + g²) − √n)/α``, weights ``−z/((β + √n)/α + l2)``) or ``"newton"``
(``n`` in place of ``√n``: ``σ = g²/α``, weights ``−z/((β + n)/α + l2)``, a per-coordinate online Newton
step with the summed squared gradients as curvature, ``1/n`` steps; ``dfm``'s docstring says when) or
``"fisher"`` (the Newton step with a curvature the subclass gives per head, ``_elapsed_curvature``, added to
``n`` in place of ``g²``).
*Per-head rates*: a subclass
may give each head its own ``alpha`` (``_head_alpha``, shape ``(heads, 1)``). *Averaged iterates*
(``average = ω ≥ 0``, Polyak–Ruppert averaging; ω-suffix averaging of Shamir & Zhang 2013): the model
learns with the raw FTRL iterate ``w`` and predicts with its running average ``w̄``, updated at every step
of a coordinate as ``w̄ += (w − w̄)·(1 + ω)/(k + ω)``, ``k`` the coordinate's step count (the global
count for the bias and shared coordinates, the arm's for its own): ω = 0 the uniform average of all
iterates, larger ω weighs the recent ones more (about the last ``1/(1 + ω)`` of them). ``w̄`` and the
counts (``w_avg``, ``avg_steps``; global ``w_avg_shared``, ``w_avg_bias``, ``avg_steps_global``) are state
arrays when averaging is on (a 4th row of the buffer), absent when off, so older states load unchanged.
``average_at = "tick"``: the average is taken instead over the raw weights at the end of each
:meth:`FTRLHeads.learn_elapsed_batch` (a tick: every pending item's elapsed time learned, the model
consistent), ``k`` the number of ticks, every coordinate at once (:meth:`FTRLHeads.snapshot`); before the
first tick the raw weights are served. With delayed feedback and a fast rate the raw iterate is a
sawtooth (conversions push it up between ticks, each tick's burst of elapsed times down): per-step
averages were measured +10 % to +28 % biased, tick averages −5 % to −30 % (``benchmarks/README.md``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from banditloop.core.state_codec import LearnerState
from banditloop.operators.base import Learner
from banditloop.operators.ctr_ftrl import ftrl_weights
from banditloop.operators.event_times import checked_tick, checked_times

#: log λ·e is clipped here: e^{-λe} underflows to 0 long before, and exp must not overflow
_MAX_LOG = 700.0
_ONE = np.ones(1)


def _sigmoid(z: np.ndarray | float) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=float)))


def sigmoid_scalar(z: float) -> float:
    """``_sigmoid`` of one float, with ``math``."""
    return 0.5 * (1.0 + math.tanh(0.5 * z))


def merge_ftrl_coords(z1: np.ndarray, n1: np.ndarray, z2: np.ndarray, n2: np.ndarray, alpha: Any, beta: float,
                      l1: float, l2: float, newton: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Merged FTRL ``(z, n)``: the ``n``-weighted mean weight, ``n`` summed (as ``ctr-ftrl``'s merge)."""
    n = n1 + n2
    share = np.divide(n2, n, out=np.full(n.shape, 0.5), where=n > 0)
    w = ((1.0 - share) * ftrl_weights(z1, n1, alpha, beta, l1, l2, newton)
         + share * ftrl_weights(z2, n2, alpha, beta, l1, l2, newton))
    z_at_zero = np.clip((1.0 - share) * z1 + share * z2, -l1, l1)
    z = np.where(w == 0.0, z_at_zero, -(w * ((beta + (n if newton else np.sqrt(n))) / alpha + l2) + np.sign(w) * l1))
    return np.where(share == 1.0, z2, np.where(share == 0.0, z1, z)), n


def ftrl_step_packed(v: np.ndarray, g: np.ndarray, alpha: float | np.ndarray, beta: float, l1: float,
                     l2: float, newton: bool = False, curvature: np.ndarray | None = None) -> None:
    """``ftrl_step`` in place on gathered coordinates ``v = (z, n, w)`` (stacked), gradient ``g``: the
    same float operations, so the same bits (the weights are ``ftrl_weights(z, n)`` exactly). ``alpha``
    may be an array broadcast against ``z`` (per-head rates). ``newton``: ``n`` in place of ``√n``;
    ``curvature`` (with ``newton``; shaped as ``g``, overwritten): added to ``n`` in place of ``g²``.

    >>> import numpy as np
    >>> from banditloop.operators.ctr_ftrl import ftrl_step
    >>> z, n, w, g = np.array([0.3, 0.0]), np.array([1.0, 0.0]), np.array([-0.1, 0.0]), np.array([0.5, -2.0])
    >>> v = np.stack([z, n, w])
    >>> ftrl_step(z, n, w, g, 0.1, 1.0, 0.0, 0.0); ftrl_step_packed(v, g, 0.1, 1.0, 0.0, 0.0)
    >>> bool(np.array_equal(v, np.stack([z, n, w])))
    True
    """
    z, n, w = v
    gg = g * g if curvature is None else curvature
    if newton:  # σ = g²/α, the weights' denominator (β + n)/α
        s0 = gg / alpha
        n += gg
        s1 = n.copy()
        s0 *= w
    else:
        s0 = np.sqrt(n)
        n += gg
        s1 = np.sqrt(n)  # √(n + g²): the new n's root, for σ and the weights
        np.subtract(s1, s0, out=s0)
        s0 /= alpha  # σ
        s0 *= w
    np.subtract(g, s0, out=s0)
    z += s0  # z += g − σw
    s1 += beta  # −((β + √n)/α + l2): w = −(z − sign(z) l1)/(…) = (z − sign(z) l1)/(−…)
    s1 /= -alpha
    if l2:
        s1 -= l2
    if l1 == 0.0 and beta > 0.0:
        np.divide(z, s1, out=w)
        w += 0.0  # −0.0 (z = 0) to 0.0, as np.where(|z| <= 0, 0.0, …)
    else:
        np.sign(z, out=gg)
        gg *= l1
        np.subtract(z, gg, out=gg)
        np.divide(gg, s1, out=w)
        w[np.abs(z) <= l1] = 0.0


def averaged(w_bar: np.ndarray, w: np.ndarray, steps: np.ndarray | float, omega: float) -> np.ndarray:
    """One averaging step: ``w̄ + (w − w̄)·(1 + ω)/(k + ω)`` with ``k = steps`` (after this step).

    >>> float(averaged(np.array([0.0]), np.array([2.0]), 1.0, 0.0)[0])   # the first iterate itself
    2.0
    >>> float(averaged(np.array([2.0]), np.array([4.0]), 2.0, 0.0)[0])   # the mean of 2 and 4
    3.0
    """
    return w_bar + (w - w_bar) * ((1.0 + omega) / (steps + omega))


class FTRLHeads(Learner):
    """Base of the FTRL models with several logistic/log-linear heads on one featurization: per head
    a bias, a shared weight vector and one per arm. Subclasses set ``heads`` and ``_offsets`` and give
    the per-item gradients (one float per head) of an elapsed time in ``_elapsed_grads``.

    >>> from banditloop.operators.dfm import DelayedFeedbackModel
    >>> isinstance(DelayedFeedbackModel(dim=2), FTRLHeads)
    True
    """

    exact_merge = False
    derived_arrays = ("w", "w_shared", "w_bias")
    #: through the pipeline: conversions with their delays, elapsed times at ticks every ``tick`` seconds
    #: (:mod:`banditloop.pipeline.event_time`); ``tick = 0``: once per impression at its window's close
    learns_event_times = True
    #: learns each impression's click label (``learn_click``) at the end of its click window
    click_labels: ClassVar[bool] = False
    tick: float
    heads: int = 2
    #: ω of the averaged iterates (see the module docstring); None: off
    average: float | None = None
    #: when the average is updated: "step" (every step of a coordinate) or "tick" (:meth:`snapshot`)
    average_at: str = "step"
    #: the step rule: "ftrl" (FTRL-Proximal, per-coordinate ``α/√Σg²``), "newton" (``α/Σg²``) or "fisher"
    steps: str = "ftrl"
    #: per-head ``alpha`` (shape ``(heads, 1)``); None: ``alpha`` for every head
    _head_alpha: np.ndarray | None = None
    #: per-head mask of ``[1, x, x]`` (``(heads, 2 dim + 1)``; 0 keeps a coordinate at 0); None: all learn
    _grad_mask: np.ndarray | None = None
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
        avg = {"w_avg": (hd, 0.0), "avg_steps": ((), 0.0)} if self.average is not None else {}
        return ({"z": (hd, 0.0), "n": (hd, 0.0), "w": (hd, 0.0)} | avg
                | {k: ((), 0.0) for k in self.additive_arrays})

    def _global_arrays(self):
        hd, h = (self.heads, self.dim), (self.heads,)
        avg = ({"w_avg_shared": (hd, 0.0), "w_avg_bias": (h, 0.0), "avg_steps_global": ((1,), 0.0)}
               if self.average is not None else {})
        return {"z_shared": (hd, 0.0), "n_shared": (hd, 0.0), "w_shared": (hd, 0.0),
                "z_bias": (h, 0.0), "n_bias": (h, 0.0), "w_bias": (h, 0.0)} | avg

    def _hyper(self, bias: bool = False) -> tuple[Any, float, float, float]:
        """``(alpha, beta, l1, l2)``, ``alpha`` per head (shaped for the bias arrays if ``bias``) if set."""
        alpha = self.alpha if self._head_alpha is None else self._head_alpha[:, 0] if bias else self._head_alpha
        return alpha, self.beta, self.l1, self.l2

    # -- the packed buffer ------------------------------------------------------------------------------
    def _on_resize(self) -> None:
        super()._on_resize()
        self._pack()

    def _pack(self) -> None:
        """One buffer for ``z``, ``n``, ``w`` (rows) of the bias, shared and per-arm coordinates (columns);
        the state's arrays become views of it (their values kept)."""
        a, g = self._arrays, self._globals
        h, d, cap = self.heads, self.dim, self._capacity
        first = h * (d + 1)
        names = ("z", "n", "w") + (("w_avg",) if self.average is not None else ())
        buf = np.empty((len(names), first + cap * h * d))
        for i, k in enumerate(names):
            row = buf[i]
            row[:h], row[h:first], row[first:] = g[f"{k}_bias"], g[f"{k}_shared"].ravel(), a[k].ravel()
            g[f"{k}_bias"], g[f"{k}_shared"], a[k] = row[:h], row[h:first].reshape(h, d), row[first:].reshape(cap, h, d)
        # flat indexes of one arm's coordinates, (z|n|w) × head × [bias, shared, arm]: row 0, and per row
        heads = np.arange(h)[:, None]
        cols = np.arange(d)[None, :]
        base = np.concatenate([heads, h + heads * d + cols, first + heads * d + cols], axis=1)
        per_row = np.concatenate([np.zeros((h, d + 1), dtype=np.intp), np.full((h, d), h * d, dtype=np.intp)], axis=1)
        width = buf.shape[1]
        self._take = np.stack([base + i * width for i in range(len(names))])
        self._rate = np.empty(2 * d + 1)  # the averaging rate per column (bias and shared, then the arm's)
        self._per_row = np.broadcast_to(per_row, self._take.shape)
        self._index: dict[int, np.ndarray] = {}
        self._buf = buf

    def _packed(self) -> np.ndarray:
        """The buffer (packed again if the state's arrays were replaced rather than written in place)."""
        buf = self._buf
        if self._arrays["z"].base is not buf or self._globals["z_bias"].base is not buf:
            self._pack()
            buf = self._buf
        return buf

    def _coords(self, row: int) -> np.ndarray:
        """Flat indexes into the buffer of ``row``'s coordinates, shape ``(rows, heads, 2 dim + 1)``."""
        index = self._index.get(row)
        if index is None:
            index = self._index[row] = self._take + row * self._per_row
        return index

    def _xv(self, x: np.ndarray) -> np.ndarray:
        """``[1, x, x]``: the input of the bias, shared and per-arm coordinates."""
        x = np.asarray(x, dtype=float)
        if x.shape != (self.dim,):
            raise ValueError(f"x must have shape ({self.dim},), got {x.shape}")
        return np.concatenate((_ONE, x, x))

    def _gather(self, row: int, xv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[float]]:
        """The buffer, ``row``'s indexes, its coordinates ``(z, n, w)`` and every head's logit."""
        buf = self._packed()
        index = self._coords(row)
        v = buf.take(index)
        self._row = row  # for the averaging counts of :meth:`_put`
        return buf, index, v, (v[2].dot(xv) + self._offsets).tolist()

    def _put(self, buf: np.ndarray, index: np.ndarray, v: np.ndarray, xv: np.ndarray,
             grads: Sequence[float], curvature: Sequence[float] | None = None) -> None:
        """One FTRL step of the gathered coordinates (of the row last gathered); ``grads`` is the loss
        gradient per head output, ``curvature`` (``steps="fisher"``) the information per head output.
        With averaging, then the averaged weights' step (``averaged``)."""
        g, curv = self._step_inputs(xv, grads, curvature)
        alpha = self.alpha if self._head_alpha is None else self._head_alpha
        newton = self.steps != "ftrl"
        if self.average is None:
            ftrl_step_packed(v, g, alpha, self.beta, self.l1, self.l2, newton, curv)
        else:
            ftrl_step_packed(v[:3], g, alpha, self.beta, self.l1, self.l2, newton, curv)
            if self.average_at == "tick":  # averaged at the ticks (snapshot)
                buf.put(index, v)
                return
            steps, arm_steps, rate, omega, d = (self._globals["avg_steps_global"], self._arrays["avg_steps"],
                                                self._rate, self.average, self.dim)
            steps += 1.0
            arm_steps[self._row] += 1.0
            rate[:d + 1] = (1.0 + omega) / (steps[0] + omega)
            rate[d + 1:] = (1.0 + omega) / (arm_steps[self._row] + omega)
            v[3] += (v[2] - v[3]) * rate
        buf.put(index, v)

    def _logits(self, rows: np.ndarray | int, x: np.ndarray) -> np.ndarray:
        """Every head's output for each row (shape ``heads`` for one row, ``(len(rows), heads)`` else):
        of the averaged weights if averaging is on."""
        g, a = self._globals, self._arrays
        x = np.asarray(x, dtype=float)
        if self.average is not None and (self.average_at == "step" or g["avg_steps_global"][0] > 0):
            return self._offsets + g["w_avg_bias"] + g["w_avg_shared"] @ x + a["w_avg"][rows] @ x
        return self._offsets + g["w_bias"] + g["w_shared"] @ x + a["w"][rows] @ x

    def snapshot(self) -> None:
        """With ``average_at="tick"``: one averaging step of every coordinate towards the raw weights now
        (``averaged``, ``k`` = ``avg_steps_global``); called at the end of each :meth:`learn_elapsed_batch`
        (callers without ticks call it at their own consistent points). Otherwise nothing."""
        if self.average is None or self.average_at != "tick":
            return
        buf, steps = self._packed(), self._globals["avg_steps_global"]
        steps += 1.0
        buf[3] = averaged(buf[3], buf[2], steps[0], self.average)

    def _step_inputs(self, xv: np.ndarray, grads: Sequence[float],
                     curvature: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Per coordinate: the gradient (per head output times ``xv``) and, for ``steps="fisher"``, the
        curvature (times ``xv²``), both masked by ``_grad_mask``."""
        g = np.multiply(np.array(grads)[:, None], xv)
        curv = None if curvature is None else np.multiply(np.array(curvature)[:, None], xv * xv)
        if self._grad_mask is not None:
            g *= self._grad_mask
            if curv is not None:
                curv *= self._grad_mask
        return g, curv

    def _on_load(self) -> None:
        a, g, h, newton = self._arrays, self._globals, self._hyper(), self.steps != "ftrl"
        a["w"][...] = ftrl_weights(a["z"], a["n"], *h, newton)
        g["w_shared"][...] = ftrl_weights(g["z_shared"], g["n_shared"], *h, newton)
        g["w_bias"][...] = ftrl_weights(g["z_bias"], g["n_bias"], *self._hyper(bias=True), newton)

    def _merge_arrays(self, rows: np.ndarray, theirs: Mapping[str, np.ndarray], other: Learner) -> None:
        a, g = self._arrays, self._globals
        if self.average is not None:  # the averaged weights mixed as the weights: n-weighted
            for avg, n, at in (("w_avg", "n", rows), ("w_avg_shared", "n_shared", ...), ("w_avg_bias", "n_bias", ...)):
                target, mine = (a, a[n][rows]) if at is rows else (g, g[n])
                total = mine + theirs[n]
                share = np.divide(theirs[n], total, out=np.full(total.shape, 0.5), where=total > 0)
                target[avg][at] = (1.0 - share) * target[avg][at] + share * theirs[avg]
            a["avg_steps"][rows] += theirs["avg_steps"]
            g["avg_steps_global"] += theirs["avg_steps_global"]
        h, newton = self._hyper(), self.steps != "ftrl"
        a["z"][rows], a["n"][rows] = merge_ftrl_coords(a["z"][rows], a["n"][rows], theirs["z"], theirs["n"], *h,
                                                       newton)
        for part in ("shared", "bias"):
            zk, nk = f"z_{part}", f"n_{part}"
            g[zk][...], g[nk][...] = merge_ftrl_coords(g[zk], g[nk], theirs[zk], theirs[nk],
                                                       *self._hyper(bias=part == "bias"), newton)
        for name in self.additive_arrays:
            a[name][rows] += theirs[name]

    def _at_close(self, arm: str, x: np.ndarray, reward: float) -> tuple[
            int, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray, list[float]], float]:
        """What ``learn_close`` needs: the arm's row, ``[1, x, x]``, its gathered coordinates with the
        heads' logits (:meth:`_gather`), the label in [0, 1]."""
        r = self.add_arm(arm)
        xv = self._xv(x)
        return r, xv, self._gather(r, xv), min(max(float(reward), 0.0), 1.0)

    def learn_reward(self, arm: str, x: np.ndarray, reward: float, shared: np.ndarray | None = None) -> None:
        self._count(reward=reward, rewarded=1.0)  # learned at the close, with the final reward

    # -- learning with event times ----------------------------------------------------------------------
    def _elapsed_grads(self, logits: list[float], elapsed_from: float, elapsed_to: float) -> tuple[float, ...]:
        """Gradient per head output of the factor "still not converted from ``elapsed_from`` to
        ``elapsed_to``" at the heads' ``logits``: each model defines its own."""
        raise NotImplementedError(f"{type(self).__name__} learns no elapsed time")

    def _elapsed_curvature(self, logits: list[float], elapsed_from: float, elapsed_to: float) -> tuple[float, ...]:
        """Information per head output of that factor, known before its outcome (``steps="fisher"``)."""
        raise NotImplementedError(f"{type(self).__name__} has no outcome-independent curvature")

    def _elapsed_step(self, row: int, xv: np.ndarray, elapsed_from: float, elapsed_to: float) -> None:
        buf, index, v, logits = self._gather(row, xv)
        curvature = (self._elapsed_curvature(logits, elapsed_from, elapsed_to) if self.steps == "fisher"
                     else None)
        self._put(buf, index, v, xv, self._elapsed_grads(logits, elapsed_from, elapsed_to), curvature)

    def learn_elapsed(self, arm: str, x: np.ndarray, elapsed_from: float, elapsed_to: float) -> None:
        """Learn that an item shown with context ``x`` is still not converted from ``elapsed_from`` to
        ``elapsed_to`` seconds after its click or impression (``elapsed_from = 0`` for its first
        update): each model defines its own factor (``−log S(e₁)/S(e₀)`` for the delayed feedback ones)."""
        checked_times(elapsed_from, elapsed_to)
        self._elapsed_step(self.add_arm(arm), self._xv(x), elapsed_from, elapsed_to)

    def learn_elapsed_batch(self, arms: Sequence[str], X: np.ndarray, elapsed_from: np.ndarray,
                            elapsed_to: np.ndarray) -> None:
        """``learn_elapsed`` for many pending items at one tick, in order (equal to the single calls);
        every time and shape is checked before anything is learned."""
        X, e0, e1 = checked_tick(arms, X, elapsed_from, elapsed_to, self.dim)
        count = len(arms)
        if count == 0:
            return
        rows = self.rows_of(arms).tolist()  # adds unseen arms first, in order: the rows of the single calls
        XV = np.empty((count, 2 * self.dim + 1))
        XV[:, 0], XV[:, 1:self.dim + 1], XV[:, self.dim + 1:] = 1.0, X, X
        if self.average is not None or self._head_alpha is not None:  # options of the averaging and rates
            for r, xv, a, b in zip(rows, XV, e0.tolist(), e1.tolist(), strict=True):
                self._elapsed_step(r, xv, a, b)
            self.snapshot()
            return
        # _elapsed_step's gather and put on the packed buffer directly (the same float operations: the same bits)
        buf, coords, grads, offsets = self._packed(), self._coords, self._elapsed_grads, self._offsets
        alpha, beta, l1, l2, newton = self.alpha, self.beta, self.l1, self.l2, self.steps != "ftrl"
        inputs, step = self._step_inputs, ftrl_step_packed
        information = self._elapsed_curvature if self.steps == "fisher" else None
        for r, xv, a, b in zip(rows, XV, e0.tolist(), e1.tolist(), strict=True):
            index = coords(r)
            v = buf.take(index)
            logits = (v[2].dot(xv) + offsets).tolist()
            g, curv = inputs(xv, grads(logits, a, b), None if information is None else information(logits, a, b))
            step(v, g, alpha, beta, l1, l2, newton, curv)
            buf.put(index, v)
