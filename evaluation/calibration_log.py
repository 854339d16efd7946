"""A model's calibration on a logged event stream (``banditloop evaluate --calibration``).

The log is read and joined as ``replay`` and ``evaluate`` read it (decoded, sorted by event time, the
model's reward and windows), so an impression's outcome is what the model would have been taught:
1 when its reward under the model's :class:`~banditloop.core.reward.RewardSpec` is positive (a click
within the click window, or a conversion within the conversion window for a conversion model), else 0.
For every impression (slate positions and impressions without a propensity included: the prediction
does not depend on them) the frozen model's predicted probability of that outcome for the shown arm,
the one :func:`~banditloop.operators.predictions.reward_probability` picks, is taken when the
impression is seen. Arms the model never learned are predicted from its shared weights and counted
(``unknown_arm_impressions``). The metrics are :mod:`banditloop.evaluation.calibration`'s.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from banditloop.core.events import Impression
from banditloop.evaluation.calibration import calibration_summary
from banditloop.evaluation.policy import TargetPolicy
from banditloop.operators.predictions import reward_probability
from banditloop.pipeline.join import EventJoin, OpenImpression
from banditloop.pipeline.logs import load_log
from banditloop.pipeline.progress import progress_bar


class NotAProbabilityModel(ValueError):
    """The model predicts no probability of its reward (or its reward is not binary)."""


class _Predictions:
    """Join sink: the prediction at each impression, the reward as its increments arrive."""

    def __init__(self, target: TargetPolicy, predict: Any) -> None:
        self.target = target
        self.predict = predict
        self.known = set(target.learner.arms)
        self.event: Impression | None = None
        self.rows: dict[str, int] = {}
        self.p: list[float] = []
        self.reward: list[float] = []
        self.arms: list[str] = []
        self.unknown = 0

    def on_impression(self, imp: OpenImpression) -> None:
        ev = self.event
        assert ev is not None and ev.impression_id == imp.impression_id
        if ev.arm not in self.known:
            self.unknown += 1
        x = self.target.vectorizer.x(ev.context)
        self.rows[imp.impression_id] = len(self.p)
        self.p.append(float(self.predict(ev.arm, x)))
        self.reward.append(0.0)
        self.arms.append(ev.arm)

    def on_reward(self, imp: OpenImpression, delta: float) -> None:
        row = self.rows.get(imp.impression_id)
        if row is not None:
            self.reward[row] += delta

    def on_close(self, imp: OpenImpression) -> None:
        """Rewards were recorded as their increments arrived."""


def calibration_report(path: str | Path, target: TargetPolicy, bins: int = 10, binning: str = "mass",
                       strict: bool = False, quiet: bool = True) -> dict[str, Any]:
    """The summary ``evaluate --calibration`` prints (metrics of
    :func:`~banditloop.evaluation.calibration.calibration_summary`).

    Raises :class:`NotAProbabilityModel` for a model that predicts no probability of its reward, and
    ``ValueError`` for a log without impressions."""
    kind = target.config.reward.kind
    predict = reward_probability(target.learner, kind)
    if predict is None:
        raise NotAProbabilityModel(
            f"model {target.label} ({target.config.learner}, reward {kind}) predicts no probability of a click or "
            "conversion reward: calibration needs ctr-lr, ctr-ftrl, vw-ctr, dfm or esmm with reward click or "
            "conversion")
    path = Path(path)
    started = time.perf_counter()
    loaded = load_log(path, strict=strict)
    sink = _Predictions(target, predict)
    config = target.config
    join = EventJoin(sink=sink, reward=config.reward, config=config.join, clip_reward=False)
    with progress_bar(len(loaded.events), desc=f"calibration {target.label}", quiet=quiet) as bar:
        for position, event in enumerate(loaded.events):
            join.advance(event.ts)
            if isinstance(event, Impression):
                sink.event = event
            join.process(event)
            if position % 4096 == 4095:
                bar.update(4096)
        join.close()
        bar.update(bar.total - bar.n)
    if not sink.p:
        raise ValueError(f"{path}: no impressions to compare the predictions with")
    y = (np.array(sink.reward) > 0).astype(float)
    summary: dict[str, Any] = {
        "command": "evaluate", "mode": "calibration", "log": str(path), "model": target.label,
        "learner": config.learner, "reward": kind, "prediction": getattr(predict, "__name__", "predict"),
        "lines": loaded.lines, "events": len(loaded.events), "invalid": loaded.invalid,
        "unknown_arm_impressions": sink.unknown,
        "excluded": {k: join.counters[k] for k in ("duplicates", "late", "unmatched")},
        **calibration_summary(np.array(sink.p), y, sink.arms, bins, binning),
    }
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary
