"""The closed loop in one process (``banditloop simulate``).

Each step the world draws a request, the learner chooses, the world answers with an impression
and (maybe) a click and a conversion at later event times. Feedback is delivered to the learner
only when the simulated clock reaches its event time, through the same join as ``replay`` and
``consume``; the events are processed in event-time order, so replaying the written log gives the
same parameters.

Regret is exact because the world knows its probabilities: per step the expected reward of the
chosen arm, of the best candidate (oracle) and the mean over candidates (uniform random policy).

``calibration``: for a learner that predicts the probability of a binary reward (``ctr-lr``,
``ctr-ftrl``, ``vw-ctr``, ``dfm``, ``esmm``: see :func:`~banditloop.operators.predictions.reward_probability`)
and a click or conversion reward, Σ the served model's predicted probability of the arm it chose ÷ Σ
the world's true probability of that arm's reward, over every impression of the run (1 = calibrated on
what it served); ``None`` otherwise. ``final_calibration`` (and ``final_calibration_all_arms``, and
``final_calibration_heads`` for ``esmm``): the same for the final model once every open window is
closed, on fresh contexts (:func:`~banditloop.pipeline.sim_calibration.final_calibration`).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from banditloop.core.events import TYPE_ORDER, Click, Conversion, Event, encode_event
from banditloop.operators.base import Learner
from banditloop.operators.decision import Decision
from banditloop.operators.predictions import reward_probability
from banditloop.pipeline.logs import open_log
from banditloop.pipeline.model import ModelConfig, Vectorizer
from banditloop.pipeline.progress import progress_bar
from banditloop.pipeline.runner import LearningRun
from banditloop.pipeline.scheduling import CheckpointTimer
from banditloop.pipeline.sim_calibration import final_calibration
from banditloop.simulators.blocks import Block
from banditloop.simulators.world import Request, World, WorldConfig

if TYPE_CHECKING:  # SQLAlchemy is imported only by runs that checkpoint (the caller builds the store)
    from banditloop.pipeline.checkpoints import CheckpointStore

EventHook = Callable[[Event], None]


@dataclass
class RegretTracker:
    """Cumulative expected rewards of the policy, the oracle and uniform random.

    ``add_steps`` takes many consecutive steps as arrays; its running sums add the steps one after
    the other (a cumulative sum), so the totals are the same as ``add`` called per step.
    """

    steps: int = 0
    reward: float = 0.0  # realised
    expected: float = 0.0
    oracle: float = 0.0
    random: float = 0.0
    curve: list[tuple[int, float, float]] = field(default_factory=list)  # (step, regret, realised CTR)
    #: a curve point every this many steps (``add_steps``)
    every: int = 0

    def add(self, realised: float, expected: float, oracle: float, random: float) -> None:
        self.steps += 1
        self.reward += realised
        self.expected += expected
        self.oracle += oracle
        self.random += random

    def add_steps(self, realised: np.ndarray, expected: np.ndarray, oracle: np.ndarray, random: np.ndarray) -> None:
        n = len(realised)
        if n == 0:
            return
        sums = [np.cumsum(np.concatenate(([start], values)))[1:]
                for start, values in ((self.reward, realised), (self.expected, expected), (self.oracle, oracle),
                                      (self.random, random))]
        steps = self.steps + np.arange(1, n + 1)
        if self.every:
            for j in np.flatnonzero(steps % self.every == 0).tolist():
                self.curve.append((int(steps[j]), float(sums[2][j] - sums[1][j]), float(sums[0][j] / steps[j])))
        self.steps += n
        self.reward, self.expected, self.oracle, self.random = (float(v[-1]) for v in sums)

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


class _Chosen:
    """The candidate position chosen at each step of the world's current block; handed to the
    tracker as arrays when the block changes."""

    def __init__(self, tracker: RegretTracker) -> None:
        self.tracker = tracker
        self.block: Block | None = None
        self.lo = 0
        self.columns: list[int] = []

    def add(self, block: Block, row: int, column: int) -> None:
        if block is not self.block:
            self.flush()
            self.block, self.lo = block, row
        self.columns.append(column)

    def flush(self) -> None:
        b, lo = self.block, self.lo
        if b is None or not self.columns:
            return
        rows = np.arange(lo, lo + len(self.columns))
        cols = np.array(self.columns)
        self.tracker.add_steps(b.rewards[rows, cols], b.expected[rows, cols], b.oracle_expected[rows],
                               b.mean_expected[rows])
        self.lo += len(self.columns)
        self.columns = []


@dataclass
class SimulationOptions:
    steps: int = 10_000
    out: str | Path | None = None
    checkpoint_interval: float | None = 30.0
    quiet: bool = False
    curve_points: int = 200
    on_event: EventHook | None = None
    #: score this many consecutive requests together with the parameters frozen, as concurrent
    #: requests at a scorer: feedback that arrives meanwhile is learned after the micro-batch's choices
    batch: int = 1


def _dense_context(config: ModelConfig, world: WorldConfig) -> tuple[np.ndarray, slice | np.ndarray] | None:
    """``(template, slots)`` when the model's featurization of a world context is only placing the
    numbers ``x0..x{d-1}`` in fixed slots (the layout ``banditloop simulate`` uses): the vector is then
    ``template`` with ``x`` written at ``slots``, which equals ``Vectorizer.x(context)`` bit for bit
    without a dictionary walk per step. ``None`` for any other featurization."""
    spec = config.features
    names = [f"x{i}" for i in range(world.dim)]
    if spec.interactions or not set(names) <= set(spec.numeric):
        return None
    template = np.zeros(spec.dim)
    if spec.bias:
        template[0] = 1.0
    position = {name: int(spec.bias) + i for i, name in enumerate(spec.numeric)}
    slots = [position[name] for name in names]
    if slots == list(range(slots[0], slots[0] + len(slots))):
        return template, slice(slots[0], slots[0] + len(slots))
    return template, np.array(slots, dtype=np.intp)


def _featurizer(config: ModelConfig, world: WorldConfig, vectorizer: Vectorizer) -> Callable[[Request], np.ndarray]:
    """``vectorizer.x(req.context)`` for the world's requests. With the plain layout (:func:`_dense_context`)
    the contexts of a block are featurized at once when its first request comes, and a request gets its
    row, a view (vectors are never modified after they are built); the first request is checked
    against the vectorizer, and any other layout is featurized context by context."""
    dense = _dense_context(config, world)
    featurize = vectorizer.x
    current: list[Any] = [None, None]  # the block, its featurized contexts

    def x_of(req: Request) -> np.ndarray:
        nonlocal dense
        if dense is None:
            return featurize(req.context)
        truth = req.truth
        if truth.block is not current[0]:
            b = truth.block
            X = np.empty((b.x.shape[0], dense[0].shape[0]))
            X[:] = dense[0]
            X[:, dense[1]] = b.x
            current[:] = b, X
        x = current[1][truth.row]
        if req.step == 0 and not np.array_equal(x, featurize(req.context)):
            dense = None  # not the plain layout after all: featurize every context
            return featurize(req.context)
        return x

    return x_of


class _SameContext:
    """The model's :class:`Vectorizer` with a one-entry memo keyed by the context *object*: the
    impression that simulate just emitted carries the very dict it featurized for the choice, so the
    join's sink gets that vector back instead of featurizing the same context again (any other
    context is featurized as usual). Vectors are never modified after they are built."""

    def __init__(self, inner: Vectorizer) -> None:
        self.inner = inner
        self.shared = inner.shared
        self.context: object = None
        self.vector: np.ndarray | None = None

    def remember(self, context: object, vector: np.ndarray) -> None:
        self.context, self.vector = context, vector

    def x(self, context: Mapping[str, float | str]) -> np.ndarray:
        if context is self.context and self.vector is not None:
            return self.vector
        return self.inner.x(context)

    def z(self, context: Mapping[str, float | str],
          arm_features: Mapping[str, float | str] | None) -> np.ndarray | None:
        return None if self.shared is None else self.inner.z(context, arm_features)


def _decide(learner: Learner, reqs: list[Request], xs: list[np.ndarray], vectorizer: Vectorizer | None,
            ) -> list[Decision]:
    """The learner's decisions for requests scored with the same parameters (nothing is learned in
    between); one product for all when the learner has ``choose_many`` and the candidates agree."""
    choose_many = getattr(learner, "choose_many", None)
    first = reqs[0].candidates
    if len(reqs) > 1 and vectorizer is None and choose_many is not None and all(r.candidates == first for r in reqs):
        return choose_many(np.array(xs), first)
    return [learner.choose(x, r.candidates, None if vectorizer is None else
                           vectorizer.shared_for(r.context, r.candidates, r.arm_features))
            for r, x in zip(reqs, xs, strict=True)]


def simulate(world_config: WorldConfig, config: ModelConfig, model: str, store: CheckpointStore | None,
             options: SimulationOptions | None = None) -> dict[str, Any]:
    opts = options or SimulationOptions()
    world = World(world_config)
    run = LearningRun(config, model)
    learner, vectorizer = run.learner, run.vectorizer
    tracker = RegretTracker(every=max(1, opts.steps // max(opts.curve_points, 1)))
    chosen = _Chosen(tracker)
    pending: list[tuple[float, int, int, Event]] = []  # (ts, type order, sequence, event)
    sequence = 0
    log = open_log(opts.out, "wb") if opts.out else None
    policy = f"{config.learner}:{model}"
    started = time.perf_counter()
    checkpoints = 0
    # calibration of a model that predicts the probability of a binary reward (``ctr``), on what it served
    predict: Callable[[str, Any], float] | None = reward_probability(learner, config.reward.kind)
    if world_config.reward.kind != config.reward.kind:
        predict = None
    predicted_sum = true_sum = 0.0
    featurize = _featurizer(config, world_config, vectorizer)
    with_shared = vectorizer.shared is not None
    process, join_advance, choose = run.process, run.join.advance, learner.choose
    # the impression's time is the clock's (``join_advance`` ran at it): ``run.process`` would advance
    # the join to the same watermark again, a no-op; the join is handed the impression directly
    impress = run.join.process
    next_request, respond, heappush, heappop = world.next_request, world.respond_events, heapq.heappush, heapq.heappop
    click_order, conversion_order = TYPE_ORDER[Click], TYPE_ORDER[Conversion]
    on_event = opts.on_event
    batch = max(1, opts.batch)
    memo = None
    if getattr(run.sink, "vectorizer", None) is vectorizer:
        memo = run.sink.vectorizer = _SameContext(vectorizer)  # type: ignore[assignment]

    def emit(event: Event) -> None:
        process(event)
        if log is not None:
            log.write(encode_event(event) + b"\n")
        if on_event is not None:
            on_event(event)

    def source(step: int) -> dict[str, Any]:
        return {"kind": "simulation", "seed": world_config.seed, "step": step}

    try:
        with CheckpointTimer(opts.checkpoint_interval if store is not None else None) as timer, \
                progress_bar(opts.steps, desc=f"simulate {config.learner}", unit="step", quiet=opts.quiet) as bar:
            for start in range(0, opts.steps, batch):
                if batch == 1:  # one request at a time: the loop of `simulate` without micro-batches
                    req = next_request()
                    reqs = None
                    ts = req.ts
                else:
                    reqs = [next_request() for _ in range(min(batch, opts.steps - start))]
                    ts = reqs[0].ts
                while pending and pending[0][0] <= ts:
                    emit(heappop(pending)[3])
                # the clock is at req.ts: windows that closed by now are learned before this choice
                # (the impression below would advance the join to the same watermark right after)
                join_advance(ts)
                if reqs is None:
                    for arm in req.retired:
                        learner.retire_arm(arm)
                    x = featurize(req)
                    decision = choose(x, req.candidates, vectorizer.shared_for(req.context, req.candidates,
                                                                                req.arm_features)
                                      if with_shared else None)
                    steps: Any = ((req, x, decision),)
                else:
                    xs = []
                    for r in reqs:
                        for arm in r.retired:
                            learner.retire_arm(arm)
                        xs.append(featurize(r))
                    decisions = _decide(learner, reqs, xs, vectorizer if with_shared else None)
                    steps = zip(reqs, xs, decisions, strict=True)
                for req, x, decision in steps:
                    step = req.step
                    if reqs is not None:  # feedback that arrived while the micro-batch was being scored
                        ts = req.ts
                        while pending and pending[0][0] <= ts:
                            emit(heappop(pending)[3])
                        join_advance(ts)
                    if memo is not None:  # (memo.remember, inlined)
                        memo.context, memo.vector = req.context, x
                    column, impression, click, conversion = respond(req, decision.arm, decision.propensity, policy)
                    truth = req.truth
                    if predict is not None:
                        predicted_sum += predict(decision.arm, x)
                        true_sum += float(truth.block.expected[truth.row, column])
                    impress(impression)
                    if log is not None:
                        log.write(encode_event(impression) + b"\n")
                    if on_event is not None:
                        on_event(impression)
                    if click is not None:
                        sequence += 1
                        heappush(pending, (click.ts, click_order, sequence, click))
                        if conversion is not None:
                            sequence += 1
                            heappush(pending, (conversion.ts, conversion_order, sequence, conversion))
                    if truth.block is chosen.block:
                        chosen.columns.append(column)
                    else:
                        chosen.add(truth.block, truth.row, column)
                    if store is not None and timer.due():
                        run.checkpoint(store, source(step + 1))
                        checkpoints += 1
                    if not (step + 1) & 1023:
                        chosen.flush()
                        bar.update(1024)
                        bar.set_postfix(regret=f"{tracker.regret:.1f}", refresh=False)
            chosen.flush()
            bar.set_postfix(regret=f"{tracker.regret:.1f}", refresh=False)  # the final regret, as in the summary
            bar.update(bar.total - bar.n)
            while pending:  # feedback due after the last request still arrives
                emit(heappop(pending)[3])
    finally:
        if log is not None:
            log.close()
    if store is not None:
        run.checkpoint(store, source(opts.steps))
        checkpoints += 1
    elapsed = time.perf_counter() - started
    counters = run.counters()
    final = {"final_calibration": None, "final_calibration_all_arms": None}
    if predict is not None:  # on a copy with every window closed, fresh contexts: the run is unchanged
        final = final_calibration(run, world, config.reward.kind)
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
        **final,
        # feedback the join refused (outside its window, or after its impression closed): counted and
        # dead-lettered with the reason, never learned as a negative; as replay reports them
        **{k: counters[k] for k in ("impressions", "clicks", "conversions", "unmatched", "late", "rewarded",
                                    "ignored")},
        # esmm: clicks joined after their pCTR label and learned as corrections (pipeline/click_labels.py;
        # None for a model without click labels; 0 here, where feedback comes in event-time order)
        "late_click_labels": counters.get("late_click_labels"),
        "log": None if opts.out is None else str(opts.out),
        "checkpoints": checkpoints,
        "seconds": round(elapsed, 3),
        "steps_per_second": round(opts.steps / elapsed, 1) if elapsed > 0 else None,
        "curve": tracker.curve,
    }
