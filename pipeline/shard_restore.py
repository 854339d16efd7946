"""Bring a consume worker's shard back from the database: the newest checkpoint that can be used.

A checkpoint that cannot be decoded (a damaged row, an array that is not finite, a join state that
does not parse) is *skipped, loudly*: the shard falls back to the newest older version that restores,
and re-reads the topics from that version's offsets, so exactly-once still holds (the state and the
offsets of one version belong together). When a shard has stored versions and none of them can be
restored, :class:`CorruptCheckpoint` stops the worker with a clear error: consuming without the
state would silently discard the shard's history. (Falling back needs the topics to still hold the
older offsets: keep Kafka's retention longer than the checkpoints you keep.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from banditloop.core.state_codec import CorruptState
from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.pipeline.dead_letters import DeadLetterSink
from banditloop.pipeline.model import ModelConfig
from banditloop.pipeline.runner import IncompatibleCheckpoint, LearningRun

log = logging.getLogger("banditloop.consume")


class CorruptCheckpoint(RuntimeError):
    """No stored version of a shard can be restored."""


@dataclass
class Restored:
    """A shard's learning run, the next offset and newest event time per input it resumes from, the
    version it came from (None for a new shard) and the newer versions that were skipped, with why."""

    run: LearningRun
    offsets: dict[str, int] = field(default_factory=dict)
    max_ts: dict[str, float] = field(default_factory=dict)
    version: int | None = None
    skipped: list[str] = field(default_factory=list)


def restore_shard(store: CheckpointStore, config: ModelConfig, model: str, shard: str,
                  dead_letter: DeadLetterSink | None = None) -> Restored:
    """The shard's newest usable checkpoint (see the module docstring), or a new, empty run.

    :class:`IncompatibleCheckpoint` (another configuration, or rows not written by ``consume``) is a
    user error and is raised at once rather than skipped."""
    skipped: list[str] = []
    for version in store.shard_versions(model, shard):
        try:
            cp = store.load(model, shard, version)
            if cp is None:  # pruned since it was listed
                continue
            if cp.source.get("kind") != "kafka":
                raise IncompatibleCheckpoint(f"model {model!r} shard {shard} was not written by consume; "
                                             "use another --model name")
            if cp.join_state is None:
                raise CorruptState("its join state was not kept (only the newest versions keep it)")
            run = LearningRun.from_checkpoint(cp, dead_letter=dead_letter, expect=config)
            offsets = {str(k): int(v) for k, v in _mapping(cp.source.get("offsets")).items()}
            max_ts = {str(k): float(v) for k, v in _mapping(cp.source.get("max_ts")).items()}
        except IncompatibleCheckpoint:
            raise
        except (CorruptState, ValueError, TypeError, KeyError) as exc:
            reason = f"version {version}: {type(exc).__name__}: {exc}"
            log.error("model %r shard %s cannot be restored from %s; trying an older version", model, shard, reason)
            skipped.append(reason)
            continue
        if skipped:
            log.warning("model %r shard %s restored from version %d after skipping %d unusable newer version(s); "
                        "re-reading the topics from its offsets", model, shard, version, len(skipped))
        return Restored(run=run, offsets=offsets, max_ts=max_ts, version=version, skipped=skipped)
    if skipped:
        raise CorruptCheckpoint(f"model {model!r} shard {shard}: none of its {len(skipped)} stored versions can be "
                                f"restored (newest {skipped[0]}); repair or delete them, or use another --model")
    return Restored(run=LearningRun(config, model, shard=shard, dead_letter=dead_letter))


def _mapping(value: Any) -> dict[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value
