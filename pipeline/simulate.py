"""The closed loop in one process (``banditloop simulate``).

Each step the world draws a request, the learner chooses, the world answers with an impression
and (maybe) a click and a conversion at later event times. Feedback is delivered to the learner
only when the simulated clock reaches its event time, through the same join as ``replay`` and
``consume``; the events are processed in event-time order, so replaying the written log gives the
same parameters.

Regret is exact because the world knows its probabilities: per step the expected reward of the
chosen arm, of the best candidate (oracle) and the mean over candidates (uniform random policy).

``calibration``: for a learner that predicts the probability of a binary reward (a ``ctr(arm, x)``
method: ``ctr-lr``, ``ctr-ftrl``, ``vw-ctr``) and a click or conversion reward, Σ the served model's
predicted probability of the arm it chose ÷ Σ the world's true probability of that arm's reward,
over every impression of the run (1 = calibrated on what it served); ``None`` otherwise.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from banditloop.core.events import TYPE_ORDER, Event, encode_event
from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.pipeline.logs import open_log
from banditloop.pipeline.model import ModelConfig
from banditloop.pipeline.progress import progress_bar
from banditloop.pipeline.runner import LearningRun
from banditloop.pipeline.scheduling import CheckpointTimer
from banditloop.simulators.world import World, WorldConfig

EventHook = Callable[[Event], None]


@dataclass
class RegretTracker:
    """Cumulative expected rewards of the policy, the oracle and uniform random."""

    steps: int = 0
    reward: float = 0.0  # realised
    expected: float = 0.0
    oracle: float = 0.0
    random: float = 0.0
    curve: list[tuple[int, float, float]] = field(default_factory=list)  # (step, regret, realised CTR)

    def add(self, realised: float, expected: float, oracle: float, random: float) -> None:
        self.steps += 1
        self.reward += realised
        self.expected += expected
        self.oracle += oracle
        self.random += random

    @property
    def regret(self) -> float:
        return self.oracle - self.expected

    def summary(self) -> dict[str, float]:
        n = max(self.steps, 1)
        gap = self.oracle - self.random
        return {
            "steps": self.steps,
            "reward": round(self.reward, 6),
            "reward_per_step": self.reward / n,
            "expected_reward_per_step": self.expected / n,
            "oracle_reward_per_step": self.oracle / n,
            "random_reward_per_step": self.random / n,
            "regret": self.regret,
            "random_regret": self.oracle - self.random,
            # share of the oracle's advantage over random that the policy captured (1 = oracle)
            "captured_vs_random": (self.expected - self.random) / gap if gap > 0 else 0.0,
        }


@dataclass
class SimulationOptions:
    steps: int = 10_000
    out: str | Path | None = None
    checkpoint_interval: float | None = 30.0
    quiet: bool = False
    curve_points: int = 200
    on_event: EventHook | None = None


def simulate(world_config: WorldConfig, config: ModelConfig, model: str, store: CheckpointStore | None,
             options: SimulationOptions | None = None) -> dict[str, Any]:
    opts = options or SimulationOptions()
    world = World(world_config)
    run = LearningRun(config, model)
    learner, vectorizer = run.learner, run.vectorizer
    tracker = RegretTracker()
    pending: list[tuple[float, int, int, Event]] = []  # (ts, type order, sequence, event)
    sequence = 0
    log = open_log(opts.out, "wb") if opts.out else None
    every = max(1, opts.steps // max(opts.curve_points, 1))
    policy = f"{config.learner}:{model}"
    started = time.perf_counter()
    checkpoints = 0
    # calibration of a model that predicts the probability of a binary reward (``ctr``), on what it served
    predict: Callable[[str, Any], float] | None = getattr(learner, "ctr", None)
    if config.reward.kind not in ("click", "conversion") or world_config.reward.kind != config.reward.kind:
        predict = None
    predicted_sum = true_sum = 0.0

    def emit(event: Event) -> None:
        run.process(event)
        if log is not None:
            log.write(encode_event(event) + b"\n")
        if opts.on_event is not None:
            opts.on_event(event)

    def source(step: int) -> dict[str, Any]:
        return {"kind": "simulation", "seed": world_config.seed, "step": step}

    try:
        with CheckpointTimer(opts.checkpoint_interval if store is not None else None) as timer, \
                progress_bar(opts.steps, desc=f"simulate {config.learner}", unit="step", quiet=opts.quiet) as bar:
            for step in range(opts.steps):
                req = world.next_request()
                while pending and pending[0][0] <= req.ts:
                    emit(heapq.heappop(pending)[3])
                # the clock is at req.ts: windows that closed by now are learned before this choice
                # (the impression below would advance the join to the same watermark right after)
                run.join.advance(req.ts)
                for arm in req.retired:
                    learner.retire_arm(arm)
                x = vectorizer.x(req.context)
                shared = vectorizer.shared_for(req.context, req.candidates, req.arm_features)
                decision = learner.choose(x, req.candidates, shared)
                outcome = world.respond(req, decision.arm, propensity=decision.propensity, policy=policy)
                if predict is not None:
                    predicted_sum += predict(decision.arm, x)
                    true_sum += outcome.expected_reward
                emit(outcome.impression)
                for fb in (outcome.click, outcome.conversion):
                    if fb is not None:
                        sequence += 1
                        heapq.heappush(pending, (fb.ts, TYPE_ORDER[type(fb)], sequence, fb))
                tracker.add(outcome.reward, outcome.expected_reward, outcome.oracle_expected_reward,
                            float(req.expected_rewards().mean()))
                if (step + 1) % every == 0:
                    tracker.curve.append((step + 1, tracker.regret, tracker.reward / (step + 1)))
                if store is not None and timer.due():
                    run.checkpoint(store, source(step + 1))
                    checkpoints += 1
                if (step + 1) % 1024 == 0:
                    bar.update(1024)
                    bar.set_postfix(regret=f"{tracker.regret:.1f}", refresh=False)
            bar.set_postfix(regret=f"{tracker.regret:.1f}", refresh=False)  # the final regret, as in the summary
            bar.update(bar.total - bar.n)
            while pending:  # feedback due after the last request still arrives
                emit(heapq.heappop(pending)[3])
    finally:
        if log is not None:
            log.close()
    if store is not None:
        run.checkpoint(store, source(opts.steps))
        checkpoints += 1
    elapsed = time.perf_counter() - started
    counters = run.counters()
    return {
        "command": "simulate",
        "model": model,
        "learner": config.learner,
        "version": run.version,
        "seed": world_config.seed,
        "arms": world_config.arms,
        "dim": world_config.dim,
        **tracker.summary(),
        "calibration": round(predicted_sum / true_sum, 6) if predict is not None and true_sum > 0 else None,
        **{k: counters[k] for k in ("impressions", "clicks", "conversions", "rewarded")},
        "log": None if opts.out is None else str(opts.out),
        "checkpoints": checkpoints,
        "seconds": round(elapsed, 3),
        "steps_per_second": round(opts.steps / elapsed, 1) if elapsed > 0 else None,
        "curve": tracker.curve,
    }
