"""Trained models are not overwritten by accident.

``--model`` defaults to the learner's name, so without a check ``replay empty.jsonl --learner
diag-linucb`` would write a new, untrained version of a trained ``diag-linucb`` model, which a
running scorer would then hot-swap in. The rule, for every command that writes checkpoints:
writing into an existing model is allowed when it continues the same thing (the same source: the
same log file, simulation seed or Kafka topics, with the same learner and configuration); anything
else is refused with one line unless the user says ``--resume`` (continue the stored model with this
input) or ``--force`` (replace it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from banditloop.commands.common import CommandError

if TYPE_CHECKING:
    from banditloop.pipeline.checkpoints import CheckpointStore, ShardHead
    from banditloop.pipeline.model import ModelConfig


def describe_source(source: dict[str, Any]) -> str:
    kind = source.get("kind")
    if kind == "log":
        return f"replay of {source.get('path')}"
    if kind == "simulation":
        return f"simulate --seed {source.get('seed')}"
    if kind == "kafka":
        return "consume (Kafka)"
    return f"an unknown source ({kind})"


def same_config(stored: dict[str, Any], config: ModelConfig) -> bool:
    """Whether a stored configuration is ``config`` (compared as a checkpoint would be restored)."""
    from banditloop.pipeline.model import ModelConfig

    try:
        return ModelConfig.from_dict(stored).to_dict() == config.to_dict()
    except (KeyError, TypeError, ValueError):
        return False


def check_target(store: CheckpointStore, model: str, config: ModelConfig, source: dict[str, Any], *,
                 resume: bool = False, force: bool = False, resume_flag: bool = True) -> list[ShardHead]:
    """Refuse to write ``model`` from ``source`` unless that is safe or asked for (see the module docstring).

    ``source`` is the identity of the input (``{"kind": "log", "path": ...}``, ``{"kind":
    "simulation", "seed": ...}``); ``resume_flag`` says whether the command offers ``--resume``.
    With ``force`` the store is told to replace the model with the next write. Returns the model's
    newest version per shard (empty for a new model).
    """
    heads = store.heads(model)
    if not heads:
        return heads
    if force:
        store.replace_on_next_save(model)
        return heads
    newest = max(heads, key=lambda h: h.version)
    what = (f"model {model!r} (version {newest.version}, learner {newest.learner}) was written by "
            f"{describe_source(newest.source)}")
    sharded = any(h.shard != "main" for h in heads) or newest.source.get("kind") == "kafka"
    same_learner = all(h.learner == config.learner for h in heads)
    matches = same_learner and all(same_config(h.config, config) for h in heads)
    if resume:
        if sharded:
            raise CommandError(f"{what}; it cannot be resumed from here: choose another --model, or --force to "
                               "replace it")
        if not matches:
            raise CommandError(f"{what} with another learner or configuration; give the same options to resume "
                               "it, another --model, or --force to replace it")
        return heads
    if matches and _same_source(newest.source, source):
        return heads
    if not same_learner:
        why = f"{what}; this run would overwrite it with learner {config.learner}"
    elif not matches:
        why = f"{what} with another configuration (features, reward, windows or --param)"
    else:
        why = f"{what}; this run learns from {_describe_input(source)}"
    offer = "--resume to continue it with this input, " if resume_flag and not sharded else ""
    raise CommandError(f"{why}: choose another --model, {offer}or --force to replace it")


def _describe_input(source: dict[str, Any]) -> str:
    if source.get("kind") == "log":
        return str(source.get("path"))
    if source.get("kind") == "simulation":
        return f"a simulation with --seed {source.get('seed')}"
    return describe_source(source)


def _same_source(stored: dict[str, Any], new: dict[str, Any]) -> bool:
    keys = {"log": ("kind", "path"), "simulation": ("kind", "seed")}.get(str(new.get("kind")), ("kind",))
    return all(stored.get(k) == new.get(k) for k in keys)
