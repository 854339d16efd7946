"""Target policies for off-policy evaluation: a learner's probability of every candidate.

A target is a learner plus the model configuration that featurizes its inputs: a frozen learner
(fresh from the registry, or a checkpoint: the merge of the model's newest shards, as the scorer
serves it) or, for progressive evaluation, a learner that keeps learning while the log goes by.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from banditloop.operators.base import Learner
from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.pipeline.model import ModelConfig, Vectorizer
from banditloop.serving.served import merge_checkpoints


@dataclass
class TargetPolicy:
    """``probabilities(context, candidates, arm_features)``: the learner's ``action_probabilities``
    on the featurized context, in candidate order (0 for arms the learner retired).

    >>> from banditloop.pipeline.model import ModelConfig
    >>> target = TargetPolicy.fresh(ModelConfig(learner="random"))
    >>> target.probabilities({"x": 1.0}, ["a", "b"]).tolist()
    [0.5, 0.5]
    """

    learner: Learner
    config: ModelConfig
    label: str
    draws: int | None = None

    def __post_init__(self) -> None:
        self.vectorizer = Vectorizer(self.config)

    @classmethod
    def fresh(cls, config: ModelConfig, label: str | None = None, draws: int | None = None) -> TargetPolicy:
        """A new (empty) learner of ``config``."""
        return cls(config.new_learner(), config, label or config.learner, draws)

    @classmethod
    def from_store(cls, store: CheckpointStore, model: str, draws: int | None = None) -> TargetPolicy:
        """The merge of ``model``'s newest checkpoint of every shard; ``LookupError`` when it has none."""
        checkpoints = store.latest_per_shard(model)
        if not checkpoints:
            raise LookupError(f"no checkpoint of model {model!r}")
        config, learner = merge_checkpoints(checkpoints)
        version = max(cp.version or 0 for cp in checkpoints)
        return cls(learner, config, f"{model}:{version}", draws)

    def probabilities(self, context: Mapping[str, float | str], candidates: Sequence[str],
                      arm_features: Mapping[str, Mapping[str, float | str]] | None = None,
                      x: np.ndarray | None = None) -> np.ndarray:
        v = self.vectorizer
        if x is None:
            x = v.x(context)
        shared = v.shared_for(context, list(candidates), arm_features)
        return self.learner.action_probabilities(x, candidates, shared, draws=self.draws)
