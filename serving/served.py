"""What the scorer serves: one merged snapshot of a model's shards, and the answer to a request.

Kept apart from :mod:`banditloop.serving.scorer` (which reloads, admits new arms and answers) so the
snapshot and its merge can be used without the scorer, e.g. by ``evaluate``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from banditloop.core.state_codec import LearnerState
from banditloop.operators.base import Learner
from banditloop.operators.registry import learner_from_state
from banditloop.pipeline.checkpoints import Checkpoint
from banditloop.pipeline.model import ModelConfig, Vectorizer
from banditloop.serving.values import Predictions


class NoModel(LookupError):
    """The model has no (usable) checkpoint yet."""


@dataclass(frozen=True)
class ScoreResult:
    """The answer to one request: the model version that gave it, the chosen arm (the first of
    ``ranking`` for slates), every candidate's score, the chosen arm's propensity and, for
    randomised policies, every candidate's probability (see :class:`Scorer` for a whole example).

    >>> r = ScoreResult(model="ads", version=3, arm="a", ranking=("a",), scores={"a": 0.4, "b": 0.1},
    ...                 propensity=0.9)
    >>> f"{r.model}:{r.version}", r.arm          # the policy tag to log with the impression
    ('ads:3', 'a')
    """

    model: str
    version: int
    arm: str
    ranking: tuple[str, ...]
    scores: dict[str, float]
    propensity: float
    #: probability of each candidate being chosen first, when the policy is randomised
    probabilities: dict[str, float] | None = None
    #: pCTR, pCVR, expected value of the chosen arm (:mod:`banditloop.serving.values`)
    predictions: Predictions | None = None


@dataclass
class ServedModel:
    """One immutable-in-spirit snapshot: a learner merged from the shards, with its metadata."""

    name: str
    version: int
    config: ModelConfig
    learner: Learner
    vectorizer: Vectorizer
    shards: tuple[str, ...]
    created_at: datetime | None
    loaded_at: float = field(default_factory=time.time)
    known_arms: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: the learner's state as loaded (checkpointed arms only), to start again from (see ``Scorer``)
    base_state: LearnerState | None = None
    #: a learner rebuilt from ``base_state`` ahead of time, swapped in when ``learner`` has taken in
    #: ``max_new_arms`` arms from requests (prepared by the reload thread, off the request path)
    spare: Learner | None = None


def merge_checkpoints(checkpoints: Sequence[Checkpoint]) -> tuple[ModelConfig, Learner]:
    """The merged learner of several shards' checkpoints (all of one model configuration)."""
    if not checkpoints:
        raise NoModel("no checkpoints")
    configs = {repr(sorted(cp.config.items())) for cp in checkpoints}
    if len(configs) != 1:
        raise ValueError("shards were checkpointed with different model configurations")
    config = ModelConfig.from_dict(checkpoints[0].config)
    learner = learner_from_state(checkpoints[0].state)
    for cp in checkpoints[1:]:
        learner = learner.merge(learner_from_state(cp.state))
    return config, learner
