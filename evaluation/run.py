"""Off-policy evaluation of a target policy on an event log (``banditloop evaluate``).

The log is read as ``replay`` reads it (decoded, validated, sorted by event time) and joined with the
same :class:`~banditloop.pipeline.join.EventJoin`, so an impression's reward is exactly what a
learner would have been taught: clicks and conversions within their windows, the model's
:class:`~banditloop.core.reward.RewardSpec`, duplicates once. For every impression the target
policy's probability of each candidate is taken *when the impression is seen*:

* **fixed** mode: a frozen learner (a checkpoint, or a fresh learner) scores every impression;
* **progressive** mode: the learner first gives its probabilities for the impression, then learns
  it exactly as ``replay`` would (every logged impression and its delayed feedback, through its own
  :class:`~banditloop.pipeline.runner.LearningRun`), so the estimate is the value of the sequence of
  policies the learner went through, each on the next impression (progressive validation). Note
  that the learner learns from *all* logged actions, not only the ones it would have chosen.

Only impressions that carry a propensity, a candidate list and position 0 (or none) can be weighted:
the others are **counted by reason and reported** (``excluded``), never silently dropped. A logged
arm the target cannot play (retired by it) gets target probability 0, which is counted too
(``logged_arm_ineligible``) and kept (its weight is 0). Lines whose propensity is outside (0, 1]
(0 included) are invalid events: the decoder refuses them, and they are counted in
``invalid_propensity``. Slates: only position 0 carries the policy's own propensity (see
``docs/serving.md``), so positions > 0 are excluded and counted (``slate_position``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from banditloop.core.events import Event, Impression
from banditloop.evaluation.control_variate import DRCV
from banditloop.evaluation.estimators import DR, IPS, SNIPS, ClippedIPS, Estimate, OnPolicy, Replay, SwitchDR
from banditloop.evaluation.policy import TargetPolicy
from banditloop.evaluation.reward_model import cross_fit
from banditloop.operators.policies import sample_index
from banditloop.pipeline.join import EventJoin, OpenImpression
from banditloop.pipeline.logs import load_log
from banditloop.pipeline.progress import progress_bar
from banditloop.pipeline.runner import LearningRun

ESTIMATORS = ("replay", "ips", "snips", "dr", "dr_cv", "clipped_ips", "switch_dr")
EXCLUSIONS = ("no_propensity", "no_candidates", "slate_position")


@dataclass
class EvaluationOptions:
    progressive: bool = False
    #: cross-fitting folds of the DR reward model, and its ridge
    folds: int = 2
    ridge: float = 1.0
    #: DR's reward model: "ridge" (per-arm ridge regression) or "logistic" (per-arm logistic regression of
    #: the rewards rescaled to [0, 1]); see banditloop.evaluation.reward_model
    reward_model: str = "ridge"
    #: weight cap of clipped IPS and switch threshold of switch-DR
    clip: float = 20.0
    seed: int = 0
    #: Monte Carlo draws for sampled (Thompson) targets; None: the learner's own setting
    draws: int | None = None
    strict: bool = False
    quiet: bool = True
    #: confidence interval of IPS, SNIPS, DR, clipped IPS and switch-DR: "normal", "el" (empirical
    #: likelihood) or None, each estimator's default (see banditloop.evaluation.estimators)
    interval: str | None = None
    #: the EL interval's bound on the importance weights: "logged" (the default: 1 / min propensity),
    #: a number, inf, or None (no unseen row; see banditloop.evaluation.intervals)
    weight_bound: float | str | None = "logged"


@dataclass
class LoggedData:
    """Per usable impression (``n`` rows, ``k`` = most candidates of any row, ``d`` = feature dim)."""

    X: np.ndarray  # (n, d) featurized contexts
    arm_names: list[str]
    logged_arm: np.ndarray  # (n,) index into arm_names
    cand_arm: np.ndarray  # (n, k) candidate arm indexes, -1 padding
    cand_prob: np.ndarray  # (n, k) target probabilities, 0 padding
    logged_col: np.ndarray  # (n,) column of the logged arm in cand_arm
    pscore: np.ndarray  # (n,) logging propensity
    reward: np.ndarray  # (n,)
    matched: np.ndarray  # (n,) bool: the target's sampled choice was the logged arm
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def target_pscore(self) -> np.ndarray:
        return self.cand_prob[np.arange(self.reward.size), self.logged_col]

    @property
    def uniform_logging(self) -> bool:
        """Every propensity is 1/(number of candidates): the log is uniformly random (replay is valid)."""
        k = (self.cand_arm >= 0).sum(axis=1)
        return bool(self.reward.size) and bool(np.allclose(self.pscore * k, 1.0, rtol=1e-6, atol=0))


class _Collector:
    """Join sink that records usable impressions, their target probabilities and their rewards."""

    def __init__(self, target: TargetPolicy, seed: int) -> None:
        self.target = target
        self.rng = np.random.default_rng([seed, 0xE7A1])
        self.event: Impression | None = None
        self.rows: dict[str, int] = {}
        self.arm_index: dict[str, int] = {}
        self.X: list[np.ndarray] = []
        self.cands: list[list[int]] = []
        self.probs: list[np.ndarray] = []
        self.logged: list[int] = []
        self.cols: list[int] = []
        self.pscore: list[float] = []
        self.reward: list[float] = []
        self.matched: list[bool] = []
        self.counts = dict.fromkeys((*EXCLUSIONS, "logged_arm_ineligible"), 0)

    def _arm(self, arm: str) -> int:
        i = self.arm_index.get(arm)
        if i is None:
            i = self.arm_index[arm] = len(self.arm_index)
        return i

    def on_impression(self, imp: OpenImpression) -> None:
        ev = self.event
        assert ev is not None and ev.impression_id == imp.impression_id
        if ev.propensity is None:
            self.counts["no_propensity"] += 1
            return
        if not ev.candidates:
            self.counts["no_candidates"] += 1
            return
        if ev.position:
            self.counts["slate_position"] += 1
            return
        x = self.target.vectorizer.x(ev.context)
        probs = self.target.probabilities(ev.context, ev.candidates, ev.arm_features, x=x)
        col = ev.candidates.index(ev.arm)
        if ev.arm in self.target.learner.retired:
            self.counts["logged_arm_ineligible"] += 1
        self.rows[imp.impression_id] = len(self.reward)
        self.X.append(x)
        self.cands.append([self._arm(a) for a in ev.candidates])
        self.probs.append(probs)
        self.logged.append(self._arm(ev.arm))
        self.cols.append(col)
        self.pscore.append(float(ev.propensity))
        self.reward.append(0.0)
        self.matched.append(sample_index(probs, self.rng) == col)

    def on_close(self, imp: OpenImpression) -> None:
        """A closed window adds nothing: rewards were recorded as their increments arrived."""

    def on_reward(self, imp: OpenImpression, delta: float) -> None:
        row = self.rows.get(imp.impression_id)
        if row is not None:
            self.reward[row] += delta

    def data(self, dim: int) -> LoggedData:
        n = len(self.reward)
        k = max((len(c) for c in self.cands), default=1)
        cand_arm = np.full((n, k), -1, dtype=np.intp)
        cand_prob = np.zeros((n, k))
        for i, (c, p) in enumerate(zip(self.cands, self.probs, strict=True)):
            cand_arm[i, : len(c)] = c
            cand_prob[i, : len(c)] = p
        return LoggedData(
            X=np.array(self.X) if n else np.zeros((0, dim)), arm_names=list(self.arm_index),
            logged_arm=np.array(self.logged, dtype=np.intp), cand_arm=cand_arm, cand_prob=cand_prob,
            logged_col=np.array(self.cols, dtype=np.intp), pscore=np.array(self.pscore),
            reward=np.array(self.reward), matched=np.array(self.matched, dtype=bool), counts=dict(self.counts))


def collect(events: list[Event], target: TargetPolicy, options: EvaluationOptions,
            on_progress: Callable[[int], None] | None = None) -> tuple[LoggedData, dict[str, int]]:
    """Join the (time-ordered) events and record every usable impression with the target's
    probabilities; returns the data and the join's counters."""
    collector = _Collector(target, options.seed)
    config = target.config
    join = EventJoin(sink=collector, reward=config.reward, config=config.join, clip_reward=False)
    learning = None
    if options.progressive:
        learning = LearningRun(config, target.label, learner=target.learner)
    for position, event in enumerate(events):
        join.advance(event.ts)
        if learning is not None:  # windows that close by now are learned before the target is asked
            learning.join.advance(event.ts)
        if isinstance(event, Impression):
            collector.event = event
        join.process(event)
        if learning is not None:
            learning.process(event)
        if on_progress is not None and position % 4096 == 4095:
            on_progress(4096)
    join.close()
    if learning is not None:
        learning.join.close()
    return collector.data(config.features.dim), dict(join.counters)


def estimate(data: LoggedData, options: EvaluationOptions | None = None) -> dict[str, Estimate]:
    """Every estimator of :data:`ESTIMATORS` plus the logging policy's own value (``logging``)."""
    opts = options or EvaluationOptions()
    r, p, t = data.reward, data.pscore, data.target_pscore
    out: dict[str, Estimate] = {"logging": OnPolicy().estimate(r)}
    out["replay"] = Replay().estimate(r, data.matched)
    chosen: dict[str, Any] = {} if opts.interval is None else {"interval": opts.interval}
    bounded = {**chosen, "weight_bound": opts.weight_bound}
    out["ips"] = IPS(**bounded).estimate(r, p, t)
    out["snips"] = SNIPS(**bounded).estimate(r, p, t)
    q = cross_fit(data.X, data.logged_arm, r, data.cand_arm, len(data.arm_names),
                  folds=opts.folds, ridge=opts.ridge, seed=opts.seed, model=opts.reward_model)
    q_logged = q[np.arange(r.size), data.logged_col]
    q_target = (q * data.cand_prob).sum(axis=1)
    out["dr"] = dr = DR(**bounded).estimate(r, p, t, q_logged, q_target)
    if dr.interval == "el":  # dr_cv's EL interval is DR's (free of β): not solved twice
        cv = DRCV(**{**bounded, "interval": "normal"}).estimate(r, p, t, q_logged, q_target)
        out["dr_cv"] = dataclasses.replace(cv, ci_low=dr.ci_low, ci_high=dr.ci_high, interval=dr.interval)
    else:
        out["dr_cv"] = DRCV(**bounded).estimate(r, p, t, q_logged, q_target)
    out["clipped_ips"] = ClippedIPS(opts.clip, **chosen).estimate(r, p, t)
    out["switch_dr"] = SwitchDR(opts.clip, **chosen).estimate(r, p, t, q_logged, q_target)
    return out


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def evaluate_log(path: str | Path, target: TargetPolicy, options: EvaluationOptions | None = None) -> dict[str, Any]:
    """Estimate the value of ``target`` on the log at ``path``; the summary ``banditloop evaluate`` prints.

    Each estimator's entry holds ``value``, ``ci_low``, ``ci_high`` (95%, of the kind named by
    ``interval``: ``normal`` or ``el``), ``std_error``,
    ``n``, ``ess`` and ``lift`` (relative to the logging policy's own value: ``value / logging − 1``).
    """
    opts = options or EvaluationOptions()
    path = Path(path)
    started = time.perf_counter()
    invalid_propensity = 0

    def on_invalid(number: int, raw: bytes, reason: str) -> None:
        nonlocal invalid_propensity
        invalid_propensity += reason.startswith("propensity")

    loaded = load_log(path, strict=opts.strict, on_invalid=on_invalid)
    mode = "progressive" if opts.progressive else "fixed"
    with progress_bar(len(loaded.events), desc=f"evaluate {target.label}", quiet=opts.quiet) as bar:
        data, join_counters = collect(loaded.events, target, opts, on_progress=bar.update)
        bar.update(bar.total - bar.n)
    summary: dict[str, Any] = {
        "command": "evaluate", "log": str(path), "policy": target.label, "learner": target.config.learner,
        "mode": mode, "reward": target.config.reward.kind, "lines": loaded.lines, "events": len(loaded.events),
        "invalid": loaded.invalid, "impressions": join_counters["impressions"], "used": int(data.reward.size),
        "excluded": {**{k: data.counts[k] for k in EXCLUSIONS}, "invalid_propensity": invalid_propensity,
                     **{k: join_counters[k] for k in ("duplicates", "late", "unmatched")}},
        "logged_arm_ineligible": data.counts["logged_arm_ineligible"],
        "uniform_logging": data.uniform_logging, "reward_model": opts.reward_model,
        "weight_bound": "none" if opts.weight_bound is None else "inf"
        if isinstance(opts.weight_bound, float) and math.isinf(opts.weight_bound) else opts.weight_bound,
    }
    if data.reward.size == 0:
        raise ValueError(f"{path}: no impression carries a propensity, candidates and position 0 "
                         f"(excluded: {summary['excluded']})")
    estimates = estimate(data, opts)
    base = estimates["logging"].value
    for name, est in estimates.items():
        entry = {k: (_finite(v) if isinstance(v, float) else v) for k, v in est.to_dict().items()}
        if name != "logging":
            entry["lift"] = _finite(est.value / base - 1.0) if base else None
        summary[name] = entry
    if not data.uniform_logging:
        summary["replay"]["note"] = "the log is not uniformly random: replay is biased, use snips or dr"
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary
