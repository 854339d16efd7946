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
    for the same file is restored and the events it already covered are skipped.
    """
    opts = options or ReplayOptions()
    path = Path(path)
    started = time.perf_counter()
    dead = DeadLetterFile(opts.dead_letters)
    loaded = load_log(path, strict=opts.strict,
                      on_invalid=lambda number, raw, reason: dead.raw(raw, reason, f"{path}:{number}"))
    run, start = _start(path, config, model, store, opts.resume, dead)
    run.invalid = loaded.invalid
    events = loaded.events
    source = {"kind": "log", "path": str(path.resolve()), "events": start, "total": len(events)}
    checkpoints = 0
    with CheckpointTimer(opts.checkpoint_interval if store is not None else None) as timer, \
            progress_bar(len(events) - start, desc=f"replay {model}", quiet=opts.quiet) as bar:
        for position in range(start, len(events)):
            run.process(events[position])
            if timer.due():
                run.checkpoint(store, {**source, "events": position + 1})
                checkpoints += 1
            if (position - start) % 4096 == 4095:
                bar.update(4096)
        bar.update(bar.total - bar.n)
    run.join.close()
    if store is not None:
        run.checkpoint(store, {**source, "events": len(events)})
        checkpoints += 1
    dead.close()
    elapsed = time.perf_counter() - started
    counters = run.counters()
    weighting = {}
    if config.ips_clip is not None:  # off-policy learning: how many impressions had no propensity
        weighting = {"ips_clip": config.ips_clip, "unweighted": run.join.sink.unweighted}
    return {
        "command": "replay",
        "log": str(path),
        "model": model,
        "learner": config.learner,
        "version": run.version,
        "lines": loaded.lines,
        "events": len(events),
        "resumed_from_event": start,
        **{k: counters[k] for k in ("impressions", "clicks", "conversions", "invalid", "duplicates",
                                    "unmatched", "late", "rewarded")},
        "reward_sum": run.learner.counters["reward_sum"],
        "arms": len(run.learner.arms),
        "checkpoints": checkpoints,
        "dead_letters": dead.count,
        "first_errors": [f"line {n}: {reason}" for n, reason in loaded.errors],
        "seconds": round(elapsed, 3),
        "events_per_second": round(len(events) / elapsed, 1) if elapsed > 0 else None,
        **weighting,
    }


def _start(path: Path, config: ModelConfig, model: str, store: CheckpointStore | None, resume: bool,
           dead: DeadLetterFile) -> tuple[LearningRun, int]:
    if resume and store is not None:
        cp = store.latest(model)
        if cp is not None and cp.source.get("kind") == "log" and cp.source.get("path") == str(path.resolve()):
            return LearningRun.from_checkpoint(cp, dead_letter=dead.event, expect=config), int(cp.source["events"])
    return LearningRun(config, model, dead_letter=dead.event), 0
