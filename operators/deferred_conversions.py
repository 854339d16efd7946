"""Conversions learned at the next tick, interleaved with the tick's survival factors (``conversions_at``).

The delayed feedback models (:mod:`banditloop.operators.dfm`, :mod:`banditloop.operators.esmm`) learn
two kinds of factors through the pipeline: a conversion's ``p λ e^{−λd} / S(e₀)`` when it arrives, and the
survival ``S(e₁)/S(e₀)`` of every pending item only at the caller's ticks. With ``conversions_at="arrival"``
(the old behaviour) the positives of a tick interval are learned as they come and the "not yet" of all
their pending peers in one burst at the tick: the model is a sawtooth, pushed up between ticks and down at
each, and with FTRL's redundant bias, shared and per-arm coordinates the swing is large. Measured at a 2 h
click delay, 10 requests/s, ticks every 10 min, the delay head frozen at the truth: the served model's
CTR went 0.80 → 1.65 → 1.11 → 0.80 × the truth at checks 66 min apart (``benchmarks/README.md``, issue 11).

``conversions_at="tick"`` keeps each conversion (its arm, context, delay and ``e₀``) until the next
:meth:`learn_elapsed_batch` and learns it there, spread evenly among that tick's survival factors: the
j-th of ``m`` buffered conversions after ``round((j + 1)·n/(m + 1))`` of the ``n`` pending items, which
are taken in a golden-ratio order (:func:`tick_order`) rather than oldest first. Each
factor is the same as before, only its moment moves (by less than a tick), so Chapelle's likelihood is
unchanged; the model changes only at ticks, and the positives and negatives of an interval are learned
together. :meth:`flush_deferred` learns the buffer at once (the pipeline calls it when every window has
closed at the end of a run). The buffer is part of the state (array ``deferred``: rows ``[arm row, delay,
e₀, x…]``), so a restored model continues identically; a merge appends the other model's buffer.

>>> import numpy as np
>>> from banditloop.operators.dfm import DelayedFeedbackModel
>>> model = DelayedFeedbackModel(dim=1, prior=0.1, delay_prior=3600.0, conversions_at="tick")
>>> x = np.array([1.0])
>>> model.learn_conversion("ad", x, delay=600.0)
>>> model.deferred, round(model.cvr("ad", x), 3)        # kept until the next tick: nothing learned yet
(1, 0.1)
>>> model.learn_elapsed_batch(["ad", "ad"], np.ones((2, 1)), np.zeros(2), np.full(2, 1200.0))
>>> model.deferred, round(model.cvr("ad", x), 3) > 0.1
(0, True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from banditloop.operators.event_times import checked_tick, checked_times

#: when a conversion is learned: on arrival, or at the next tick among the survival factors
CONVERSIONS_AT = ("arrival", "tick")


def check_conversions_at(value: str) -> str:
    if value not in CONVERSIONS_AT:
        raise ValueError(f"conversions_at must be one of {CONVERSIONS_AT}, not {value!r}")
    return value


def interleave_cuts(pending: int, conversions: int) -> list[int]:
    """How many of ``pending`` survival factors precede each of ``conversions`` buffered conversions.

    >>> interleave_cuts(10, 3), interleave_cuts(0, 2)
    ([2, 5, 8], [0, 0])
    """
    return [round((j + 1) * pending / (conversions + 1)) for j in range(conversions)]


def tick_order(pending: int) -> np.ndarray:
    """The order in which a tick learns its ``pending`` survival factors (given oldest first): a
    golden-ratio sequence, so each stretch of the tick holds old and recent items alike and the tick
    does not end on a block of the newest items (whose "not yet" pushes hardest) — the model is then
    not left at the bottom of the tick's own swing until the next one.

    >>> tick_order(5).tolist()
    [0, 2, 4, 1, 3]
    """
    return np.argsort((np.arange(pending) * _GOLDEN) % 1.0, kind="stable")


_GOLDEN = 0.6180339887498949


class DeferredConversions:
    """Mixin of :class:`~banditloop.operators.ftrl_heads.FTRLHeads` models: ``learn_conversion`` per
    ``conversions_at`` (see the module docstring). The model defines ``_conversion_step`` (learn one
    conversion factor now) and sets ``conversions_at`` before ``super().__init__``.

    >>> from banditloop.operators.esmm import ESMM
    >>> model = ESMM(dim=1, conversions_at="tick")
    >>> model.learn_conversion("ad", [1.0], delay=60.0); model.deferred
    1
    """

    conversions_at: str = "arrival"
    _deferred: list[tuple[int, float, float, np.ndarray]]
    _mid_tick: bool = False

    # what the FTRLHeads side provides (typed here for the checker)
    dim: int
    arms: list[str]
    add_arm: Any
    _conversion_step: Any

    def learn_conversion(self, arm: str, x: np.ndarray, delay: float, elapsed_from: float = 0.0) -> None:
        """The item converted ``delay`` seconds after it, having been learned unconverted up to
        ``elapsed_from``: learned now, or kept for the next tick (``conversions_at="tick"``)."""
        checked_times(delay, elapsed_from)
        if self.conversions_at == "arrival":
            self._conversion_step(arm, x, float(delay), float(elapsed_from))
            return
        xv = np.array(x, dtype=float).reshape(-1)
        if xv.shape != (self.dim,) or not np.all(np.isfinite(xv)):
            raise ValueError(f"x must be {self.dim} finite values")
        self._buffer().append((self.add_arm(arm), float(delay), float(elapsed_from), xv))

    def _buffer(self) -> list[tuple[int, float, float, np.ndarray]]:
        if "_deferred" not in self.__dict__:
            self._deferred = []
        return self._deferred

    @property
    def deferred(self) -> int:
        """Conversions kept for the next tick."""
        return len(self._buffer())

    def flush_deferred(self) -> None:
        """Learn every kept conversion now, in arrival order."""
        buffered, self._deferred = self._buffer(), []
        for row, delay, e0, x in buffered:
            self._conversion_step(self.arms[row], x, delay, e0)

    def learn_elapsed_batch(self, arms: Sequence[str], X: np.ndarray, elapsed_from: np.ndarray,
                            elapsed_to: np.ndarray) -> None:
        """The tick: the pending items' survival factors, with the kept conversions spread among them."""
        if self.conversions_at == "arrival":
            super().learn_elapsed_batch(arms, X, elapsed_from, elapsed_to)  # type: ignore[misc]
            return
        X, e0, e1 = checked_tick(arms, X, elapsed_from, elapsed_to, self.dim)  # before anything is learned
        n = len(arms)
        order = tick_order(n)
        arms, X, e0, e1 = [arms[i] for i in order], X[order], e0[order], e1[order]
        buffered = self._buffer()
        if not buffered:
            super().learn_elapsed_batch(arms, X, e0, e1)  # type: ignore[misc]
            return
        self._deferred = []
        self._mid_tick = True  # one averaging snapshot per tick, at its end
        try:
            start = 0
            for cut, (row, delay, conv_e0, x) in zip(interleave_cuts(n, len(buffered)), buffered, strict=True):
                if cut > start:
                    super().learn_elapsed_batch(arms[start:cut], X[start:cut], e0[start:cut],  # type: ignore[misc]
                                                e1[start:cut])
                    start = cut
                self._conversion_step(self.arms[row], x, delay, conv_e0)
            if start < n:
                super().learn_elapsed_batch(arms[start:], X[start:], e0[start:], e1[start:])  # type: ignore[misc]
        finally:
            self._mid_tick = False
        self.snapshot()

    def snapshot(self) -> None:
        if not self._mid_tick:
            super().snapshot()  # type: ignore[misc]

    # -- state and merge ---------------------------------------------------------------------------------
    def _state_arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = super()._state_arrays()  # type: ignore[misc]
        if self.conversions_at == "tick":
            rows = [[row, delay, e0, *x.tolist()] for row, delay, e0, x in self._buffer()]
            out["deferred"] = np.array(rows, dtype=float).reshape(len(rows), 3 + self.dim)
        return out

    def _load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        arrays = dict(arrays)
        kept = arrays.pop("deferred", None)
        if self.conversions_at == "tick" and kept is None:
            raise ValueError(f"{type(self).__name__} state with conversions_at='tick' lacks its 'deferred' array")
        buffered = [] if kept is None else _checked_buffer(np.asarray(kept, dtype=float), self.dim, len(self.arms))
        super()._load_arrays(arrays)  # type: ignore[misc]
        self._deferred = buffered

    def _merge_arrays(self, rows: np.ndarray, theirs: Mapping[str, np.ndarray], other: Any) -> None:
        super()._merge_arrays(rows, theirs, other)  # type: ignore[misc]
        for row, delay, e0, x in other._buffer():
            self._buffer().append((int(rows[row]), delay, e0, x.copy()))


def _checked_buffer(kept: np.ndarray, dim: int, arms: int) -> list[tuple[int, float, float, np.ndarray]]:
    """The ``deferred`` array as buffer entries, after checking its shape, rows, times and values."""
    if kept.ndim != 2 or kept.shape[1] != 3 + dim or not np.all(np.isfinite(kept)):
        raise ValueError(f"deferred conversions must be finite rows of {3 + dim} values")
    rows = kept[:, 0]
    if np.any(rows != np.floor(rows)) or np.any(rows < 0) or np.any(rows >= arms) or np.any(kept[:, 1:3] < 0):
        raise ValueError("deferred conversions need known arm rows and times >= 0")
    return [(int(r[0]), float(r[1]), float(r[2]), r[3:].copy()) for r in kept]
