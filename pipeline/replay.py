"""Learning from an event log in event-time order (``banditloop replay``)."""

from __future__ import annotations

import gc
import itertools
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.pipeline.dead_letters import DeadLetterFile
from banditloop.pipeline.log_sort import DEFAULT_MEMORY_BUDGET, SortedLog, sorted_log
from banditloop.pipeline.model import ModelConfig
from banditloop.pipeline.progress import progress_bar
from banditloop.pipeline.runner import LearningRun
from banditloop.pipeline.scheduling import CheckpointTimer


@dataclass
class ReplayOptions:
    strict: bool = False
    resume: bool = False
    checkpoint_interval: float | None = 30.0
    dead_letters: str | Path | None = None
    quiet: bool = False
    #: bytes of decoded events held for sorting (see :mod:`banditloop.pipeline.log_sort`)
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    #: where sorted runs are spilled when the log is too disordered for the budget (default: $TMPDIR)
    tmpdir: str | Path | None = None
    #: learner updates applied this many at a time (contexts featurized as one matrix; same result)
    learn_batch: int = 1024


def replay_log(path: str | Path, config: ModelConfig, model: str, store: CheckpointStore | None,
               options: ReplayOptions | None = None) -> dict[str, Any]:
    """Learn ``model`` from the log at ``path``; returns the summary that the CLI prints.

    Events are learned in event-time order (``ts``, then impressions before clicks before
    conversions, then line order), so clicks and conversions join their impression wherever they
    stand in the file. The log is sorted in bounded memory (``memory_budget``): a first pass reads
    only event times, a second decodes and learns, through a small reorder buffer for logs in nearly
    event-time order or from sorted runs spilled to ``tmpdir`` otherwise
    (:mod:`banditloop.pipeline.log_sort`). With ``resume`` the newest checkpoint of ``model``
    is restored: for the same file the events it already covered are skipped, for another file the
    stored model keeps learning from that file's first event. A run that learns no event (an empty
    log, or nothing new since the resumed checkpoint) writes no version (``checkpoints`` is 0).

    Progress bars (unless ``quiet``, after two seconds): lines scanned in the first pass, then events
    learned, whose rate is the summary's ``events_per_second``; ``load_seconds`` (the first pass, and
    spilling runs if needed) and ``learn_seconds`` (decoding and learning) split ``seconds``.
    """
    opts = options or ReplayOptions()
    path = Path(path)
    started = time.perf_counter()
    dead = DeadLetterFile(opts.dead_letters)
    try:
        with ExitStack() as stack:
            with progress_bar(None, desc=f"replay {model}: reading {path.name}", unit="line",
                              quiet=opts.quiet) as bar:
                loaded = stack.enter_context(sorted_log(
                    path, memory_budget=opts.memory_budget, strict=opts.strict, on_lines=bar.update,
                    on_invalid=lambda number, raw, reason: dead.raw(raw, reason, f"{path}:{number}"),
                    tmpdir=opts.tmpdir))
            return _learn(path, loaded, config, model, store, opts, dead, started)
    finally:
        dead.close()


def _learn(path: Path, loaded: SortedLog, config: ModelConfig, model: str, store: CheckpointStore | None,
           opts: ReplayOptions, dead: DeadLetterFile, started: float) -> dict[str, Any]:
    load_seconds = time.perf_counter() - started
    run, start, carried = _start(path, config, model, store, opts.resume, dead)
    run.sink.batch = opts.learn_batch
    collecting = gc.isenabled()
    gc.disable()  # the join keeps every open impression: full collections would walk them all, again and again
    try:
        return _learn_events(path, loaded, run, start, carried, config, model, store, opts, dead, started,
                             load_seconds)
    finally:
        if collecting:
            gc.enable()


def _learn_events(path: Path, loaded: SortedLog, run: LearningRun, start: int, carried: bool, config: ModelConfig,
                  model: str, store: CheckpointStore | None, opts: ReplayOptions, dead: DeadLetterFile,
                  started: float, load_seconds: float) -> dict[str, Any]:
    carried_invalid = run.invalid if carried else 0  # the same log's lines are not counted twice
    source = {"kind": "log", "path": str(path.resolve()), "events": start, "total": loaded.estimate}
    checkpoints = 0
    position = 0
    learn_started = time.perf_counter()
    with CheckpointTimer(opts.checkpoint_interval if store is not None else None) as timer, \
            progress_bar(max(loaded.estimate - start, 0), desc=f"replay {model}", quiet=opts.quiet) as bar:
        events = iter(loaded)
        for _ in itertools.islice(events, start):  # covered by the resumed checkpoint
            pass
        position = start
        advance, process = run.join.advance, run.join.process  # run.process(event), without a call
        for event in events:
            advance(event.ts)
            process(event)
            position += 1
            if store is not None and position % 64 == 0 and timer.due():  # the flag is checked every 64 events
                run.invalid = carried_invalid + loaded.invalid
                run.checkpoint(store, {**source, "events": position})
                checkpoints += 1
            if (position - start) % 4096 == 0:
                bar.update(4096)
        bar.update(max(bar.total - bar.n, 0))
    learn_seconds = time.perf_counter() - learn_started
    total = loaded.events
    run.invalid = carried_invalid + loaded.invalid
    run.join.close()
    run.flush()
    if store is not None and total > start:
        run.checkpoint(store, {**source, "events": total, "total": total})
        checkpoints += 1
    elapsed = time.perf_counter() - started
    counters = run.counters()
    learned = max(total - start, 0)
    weighting: dict[str, Any] = {}
    if config.ips_clip is not None:  # off-policy learning: how many impressions had no propensity
        weighting = {"ips_clip": config.ips_clip, "unweighted": run.sink.unweighted}
    return {
        "command": "replay",
        "log": str(path),
        "model": model,
        "learner": config.learner,
        "version": run.version,
        "lines": loaded.lines,
        "events": total,
        "resumed_from_event": start,
        **{k: counters[k] for k in ("impressions", "clicks", "conversions", "invalid", "duplicates", "conflicts",
                                    "unmatched", "late", "rewarded", "ignored")},
        "reward_sum": run.learner.counters["reward_sum"],
        "arms": len(run.learner.arms),
        "checkpoints": checkpoints,
        "dead_letters": dead.count,
        "first_errors": [f"line {n}: {reason}" for n, reason in loaded.errors],
        "seconds": round(elapsed, 3),
        "load_seconds": round(load_seconds, 3),
        "learn_seconds": round(learn_seconds, 3),
        "events_per_second": round(learned / learn_seconds, 1) if learn_seconds > 0 and learned else None,
        "sort": {"mode": loaded.mode, "capacity": loaded.capacity, "runs": loaded.runs,
                 "memory_budget": opts.memory_budget},
        **weighting,
    }


def _start(path: Path, config: ModelConfig, model: str, store: CheckpointStore | None, resume: bool,
           dead: DeadLetterFile) -> tuple[LearningRun, int, bool]:
    """The run, the first event to learn, and whether it carries on from another input."""
    if resume and store is not None:
        cp = store.latest(model)
        if cp is not None:
            same_log = cp.source.get("kind") == "log" and cp.source.get("path") == str(path.resolve())
            run = LearningRun.from_checkpoint(cp, dead_letter=dead.raw, expect=config)
            return run, int(cp.source.get("events", 0)) if same_log else 0, not same_log
    return LearningRun(config, model, dead_letter=dead.raw), 0, False
