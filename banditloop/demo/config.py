"""The consumer's configuration: one :class:`~banditloop.pipeline.model.ModelConfig`, built here from
the demo's options, written into the bootstrap checkpoint and rendered as ``banditloop consume`` flags.

The demo writes version 1 of its model itself (see :func:`bootstrap_checkpoint`), and the consumer
then restores it, so both must hold the same configuration. It is built once, with the pipeline's own
constructors (as ``banditloop consume`` builds it from its flags), and the consumer's command line is
derived from it by :func:`consume_argv`; a test parses that command line with the real parser and
checks that it yields an equal config.
"""

from __future__ import annotations

import inspect
import json
import math
from typing import Any

from banditloop.core.features import FeatureSpec, dense_names
from banditloop.core.reward import RewardSpec
from banditloop.demo.options import DEFAULT_PARAMS, SHARED_DIM, DemoError, DemoOptions
from banditloop.operators.registry import learner_class
from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.pipeline.consumer import shard_name
from banditloop.pipeline.join import JoinConfig
from banditloop.pipeline.model import ModelConfig
from banditloop.pipeline.runner import LearningRun
from banditloop.simulators.world import WorldConfig


def join_windows(world: WorldConfig) -> JoinConfig:
    """Join windows scaled to the demo's delays, as the delays are scaled to demo time.

    With the production defaults (clicks within an hour, conversions within a week) every
    impression of the run would stay in the join state, which is checkpointed every second: the
    checkpoints would grow by ~100 kB per second. Windows of ~15 mean delays lose nothing in
    practice (an exponential delay exceeds 15 means with probability e^-15) and bound the state.
    """
    click = float(max(10, math.ceil(15 * world.click_delay_mean)))
    conversion = float(max(30, math.ceil(12 * (world.click_delay_mean + world.conversion_delay_mean))))
    return JoinConfig(click_window=click, conversion_window=conversion, allowed_lateness=10.0)


def learner_params(options: DemoOptions) -> dict[str, Any]:
    """The demo's defaults (:data:`DEFAULT_PARAMS`) that the learner accepts, overridden by the options'."""
    accepted = inspect.signature(learner_class(options.learner).__init__).parameters
    defaults = {k: v for k, v in DEFAULT_PARAMS.get(options.learner, {}).items() if k in accepted}
    return {**defaults, **options.params}


def model_config(options: DemoOptions, world: WorldConfig) -> ModelConfig:
    """The consumer's model: the world's ``dim`` dense fields in their own slots after the bias, click
    reward, the demo's join windows. Bad hyper-parameters raise :class:`DemoError` here, before anything
    is started."""
    try:
        shared = FeatureSpec(dim=SHARED_DIM) if learner_class(options.learner).shared_features else None
        config = ModelConfig(
            learner=options.learner, learner_params=learner_params(options),
            features=FeatureSpec(dim=options.dim + 1, numeric=dense_names("x", options.dim)),
            shared_features=shared, reward=RewardSpec(), join=join_windows(world))
        config.new_learner()
    except TypeError as exc:
        cls = learner_class(options.learner)
        raise DemoError(f"bad --param for {options.learner} ({cls.__name__}): {exc}") from None
    except ValueError as exc:
        raise DemoError(str(exc)) from None
    return config


def model_flags(config: ModelConfig) -> list[str]:
    """``config`` as the model and feature flags of ``banditloop consume``.

    Raises ValueError for a setting that the command line cannot express (rather than leaving it
    out, which would start the consumer with another model than the bootstrap checkpoint holds).
    """
    defaults_join, default_spec = JoinConfig(), FeatureSpec()
    if config.join.clock_skew != defaults_join.clock_skew:
        raise ValueError("the command line cannot set the join's clock_skew")
    if config.features.bias != default_spec.bias:
        raise ValueError("the command line cannot turn the bias feature off")
    if any("," in name for name in config.features.numeric):
        raise ValueError("numeric field names cannot contain ','")
    flags = ["--learner", config.learner, "--dim", str(config.features.dim),
             "--numeric", ",".join(config.features.numeric)]
    for a, b in config.features.interactions:
        if ":" in a:
            raise ValueError(f"interaction field names cannot contain ':' ({a!r})")
        flags += ["--interaction", f"{a}:{b}"]
    shared = config.shared_features
    if shared is not None:
        if not config.uses_shared_features or shared != FeatureSpec(dim=shared.dim):
            raise ValueError("the command line sets only the dimension of shared features "
                             "(of a learner that takes them)")
        flags += ["--shared-dim", str(shared.dim)]
    flags += ["--reward", config.reward.kind, "--conversion-weight", repr(float(config.reward.weight)),
              "--click-window", repr(float(config.join.click_window)),
              "--conversion-window", repr(float(config.join.conversion_window)),
              "--allowed-lateness", repr(float(config.join.allowed_lateness))]
    for key, value in config.learner_params.items():
        flags += ["--param", f"{key}={json.dumps(value)}"]
    return flags


def consume_argv(config: ModelConfig, *, model: str, bootstrap: str, group: str, db: str,
                 checkpoint_interval: float, ready_file: str, log_interval: float = 5.0) -> list[str]:
    """The ``banditloop consume`` command line that learns ``model`` with exactly ``config``."""
    return ["consume", "--bootstrap", bootstrap, "--group", group, "--model", model, *model_flags(config),
            "--checkpoint-interval", repr(float(checkpoint_interval)), "--log-interval", repr(float(log_interval)),
            "--ready-file", ready_file, "--db", db, "--json"]


def bootstrap_checkpoint(db: str, model: str, config: ModelConfig, partitions: int) -> int:
    """Write version 1 of ``model``: an untrained shard per partition, as the consumer would have
    written it before reading anything. Returns the newest version.

    The scorer serves nothing until its model has a checkpoint, and the consumer writes one only
    after it has learned from impressions, which only a serving scorer produces. This breaks the
    cycle: the shards (``p0``, ``p1``, ... as :func:`~banditloop.pipeline.consumer.shard_name` names
    them) carry the consumer's config and a Kafka source with no offsets, so the consumer restores
    them like any checkpoint of its own and reads its partitions from the beginning, exactly as a
    fresh start would; its checkpoints then continue the version sequence.
    """
    store = CheckpointStore(db)
    try:
        if store.latest_version(model) is not None:
            raise DemoError(f"model {model!r} already exists in {db}; pick another --model")
        snapshots = [LearningRun(config, model, shard=shard_name(p)).snapshot(
            {"kind": "kafka", "partition": p, "offsets": {}, "max_ts": {}}) for p in range(partitions)]
        return max(store.save_many(snapshots))
    finally:
        store.close()
