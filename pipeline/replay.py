"""Learning from an event log in event-time order (``banditloop replay``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.pipeline.dead_letters import DeadLetterFile
from banditloop.pipeline.logs import load_log
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


def replay_log(path: str | Path, config: ModelConfig, model: str, store: CheckpointStore | None,
               options: ReplayOptions | None = None) -> dict[str, Any]:
    """Learn ``model`` from the log at ``path``; returns the summary that the CLI prints.

    The whole log is decoded and sorted by event time first, so clicks and conversions join their
    impression wherever they stand in the file. With ``resume`` the newest checkpoint of ``model``
    is restored: for the same file the events it already covered are skipped, for another file the
    stored model keeps learning from that file's first event. A run that learns no event (an empty
    log, or nothing new since the resumed checkpoint) writes no version (``checkpoints`` is 0).

    Progress bars (unless ``quiet``, after two seconds): lines read while loading, then events
    learned, whose rate is the summary's ``events_per_second``; ``load_seconds`` and
    ``learn_seconds`` split ``seconds``.
    """
    opts = options or ReplayOptions()
    path = Path(path)
    started = time.perf_counter()
    dead = DeadLetterFile(opts.dead_letters)
    with progress_bar(None, desc=f"replay {model}: reading {path.name}", unit="line", quiet=opts.quiet) as bar:
        loaded = load_log(path, strict=opts.strict, on_lines=bar.update,
                          on_invalid=lambda number, raw, reason: dead.raw(raw, reason, f"{path}:{number}"))
    load_seconds = time.perf_counter() - started
    run, start, carried = _start(path, config, model, store, opts.resume, dead)
    run.invalid = loaded.invalid + (run.invalid if carried else 0)  # the same log's lines are not counted twice
    events = loaded.events
    source = {"kind": "log", "path": str(path.resolve()), "events": start, "total": len(events)}
    checkpoints = 0
    learn_started = time.perf_counter()
    with CheckpointTimer(opts.checkpoint_interval if store is not None else None) as timer, \
            progress_bar(len(events) - start, desc=f"replay {model}", quiet=opts.quiet) as bar:
        for position in range(start, len(events)):
            run.process(events[position])
            if store is not None and timer.due():
                run.checkpoint(store, {**source, "events": position + 1})
                checkpoints += 1
            if (position - start) % 4096 == 4095:
                bar.update(4096)
        bar.update(bar.total - bar.n)
    learn_seconds = time.perf_counter() - learn_started
    run.join.close()
    if store is not None and len(events) > start:
        run.checkpoint(store, {**source, "events": len(events)})
        checkpoints += 1
    dead.close()
    elapsed = time.perf_counter() - started
    counters = run.counters()
    learned = len(events) - start
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
        "events": len(events),
        "resumed_from_event": start,
        **{k: counters[k] for k in ("impressions", "clicks", "conversions", "invalid", "duplicates", "conflicts",
                                    "unmatched", "late", "rewarded")},
        "reward_sum": run.learner.counters["reward_sum"],
        "arms": len(run.learner.arms),
        "checkpoints": checkpoints,
        "dead_letters": dead.count,
        "first_errors": [f"line {n}: {reason}" for n, reason in loaded.errors],
        "seconds": round(elapsed, 3),
        "load_seconds": round(load_seconds, 3),
        "learn_seconds": round(learn_seconds, 3),
        "events_per_second": round(learned / learn_seconds, 1) if learn_seconds > 0 and learned else None,
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
