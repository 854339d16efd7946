"""The scoring operator: answers choose/score calls from a model's newest checkpoint.

A model may be stored as several shards (one per Kafka partition group); the scorer serves the
merge of every shard's newest state. Reloading builds a complete new :class:`ServedModel` off to
the side and swaps one reference, so a request sees either the old version or the new one, never a
mix. A checkpoint that cannot be decoded, holds NaN/inf, or does not match the served configuration
is refused with a log line and the previous model keeps serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from banditloop.operators.base import Learner
from banditloop.operators.registry import learner_from_state
from banditloop.pipeline.checkpoints import Checkpoint, CheckpointStore
from banditloop.pipeline.model import ModelConfig, Vectorizer

log = logging.getLogger("banditloop.scorer")

Features = Mapping[str, float | str]


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


class Scorer:
    """In-process scorer for one model. Thread-safe; see the module docstring for reloads.

    This is the whole scoring path; ``banditloop serve`` (:mod:`banditloop.serving.http`) only adds HTTP,
    validation, impression logging and metrics around it. To score inside a Python service without
    HTTP::

        scorer = Scorer("postgresql+psycopg://user@db/banditloop", "ads")
        scorer.reload()                  # newest version (merge of the shards); NoModel until one exists
        scorer.start_auto_reload(1.0)    # pick up new versions in a daemon thread
        result = scorer.choose({"age": 31, "country": "fr"}, ["ad-7", "ad-9", "ad-12"], k=2)
        result.arm, result.propensity, result.ranking, result.scores, result.version

    Log ``result.propensity`` and ``f"{result.model}:{result.version}"`` with the impression so that
    learning and off-policy evaluation know what the policy did. Runnable, on an in-memory database:

    >>> from banditloop.pipeline.checkpoints import CheckpointStore
    >>> from banditloop.pipeline.model import ModelConfig
    >>> from banditloop.pipeline.runner import LearningRun
    >>> from banditloop.core.events import Click, Impression
    >>> store = CheckpointStore("sqlite://")
    >>> run = LearningRun(ModelConfig("linucb", {"alpha": 0.2}), model="ads")
    >>> for i, arm in enumerate(["ad-7", "ad-9", "ad-9"]):
    ...     _ = run.process(Impression(event_id=f"e{i}", ts=float(i), impression_id=f"i{i}", arm=arm))
    >>> _ = run.process(Click(event_id="c2", ts=3.0, impression_id="i2"))
    >>> run.checkpoint(store, {"kind": "example"})
    1
    >>> scorer = Scorer(store, "ads")
    >>> scorer.reload()
    True
    >>> result = scorer.choose({}, ["ad-7", "ad-9"])
    >>> result.arm, result.propensity, result.version
    ('ad-9', 1.0, 1)
    """

    def __init__(self, store: CheckpointStore | str, model: str, *, max_new_arms: int = 10_000,
                 cold_start: ModelConfig | None = None) -> None:
        """``cold_start``: while the model has no checkpoint at all, serve an untrained learner of
        this configuration as version 0 instead of raising :class:`NoModel`, so that impressions
        (which the learners start from) can be logged at all; the first checkpoint replaces it
        whatever its configuration. ``banditloop serve --cold-start`` uses ``random`` (uniform, exact
        1/K propensities): an untrained argmax learner's equal scores tie only up to rounding."""
        self.store = store if isinstance(store, CheckpointStore) else CheckpointStore(store)
        self.model = model
        self.max_new_arms = max_new_arms
        self.cold_start = cold_start
        self._served: ServedModel | None = None
        self._reload_lock = threading.Lock()
        self.reloads = 0
        self.refused = 0
        self.last_error: str | None = None
        self._refused_version: int | None = None  # not retried (nor logged again) until a newer one exists
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- loading --------------------------------------------------------------------------------
    @property
    def served(self) -> ServedModel:
        served = self._served
        if served is None:
            raise NoModel(f"model {self.model!r} has no checkpoint yet")
        return served

    @property
    def current(self) -> ServedModel | None:
        """The model being served, or None before the first checkpoint was loaded."""
        return self._served

    @property
    def version(self) -> int | None:
        return None if self._served is None else self._served.version

    def reload(self) -> bool:
        """Load the newest version if it is newer than the served one; True when swapped."""
        with self._reload_lock:
            newest = self.store.latest_version(self.model)
            if newest is None and self._served is None and self.cold_start is not None:
                config = self.cold_start
                self._served = ServedModel(name=self.model, version=0, config=config, learner=config.new_learner(),
                                           vectorizer=Vectorizer(config), shards=(), created_at=None)
                log.warning("model %r has no checkpoint yet: serving an untrained %s as version 0 until the "
                            "first one", self.model, config.learner)
                return True
            if newest is None or (self._served is not None and newest <= self._served.version):
                return False
            if newest == self._refused_version:
                return False
            try:
                candidate = self._build(newest)
            except SQLAlchemyError:  # the database, not the checkpoint: retried at the next poll
                raise
            except Exception as exc:  # refuse anything unusable, keep serving the old model
                self.refused += 1
                self._refused_version = newest
                self.last_error = f"version {newest}: {exc}"
                log.error("refusing checkpoint of model %r %s", self.model, self.last_error)
                return False
            self._served = candidate
            self.reloads += 1
            log.info("serving model %r version %d (%d shards)", self.model, candidate.version, len(candidate.shards))
            return True

    def _build(self, newest: int) -> ServedModel:
        checkpoints = self.store.latest_per_shard(self.model)
        if not checkpoints:
            raise NoModel("no checkpoints")
        config, learner = merge_checkpoints(checkpoints)
        old = self._served
        if old is not None and old.version > 0 and (
                old.config.learner != config.learner or old.config.features != config.features):
            raise ValueError(f"incompatible with the served model ({old.config.learner} → {config.learner})")
        version = max(cp.version or 0 for cp in checkpoints)
        return ServedModel(name=self.model, version=version, config=config, learner=learner,
                           vectorizer=Vectorizer(config), shards=tuple(cp.shard for cp in checkpoints),
                           created_at=max(cp.created_at for cp in checkpoints if cp.created_at),
                           known_arms=len(learner.arms))

    def start_auto_reload(self, interval: float) -> None:
        """Poll for new versions every ``interval`` seconds in a daemon thread."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.reload()
                except Exception:  # the database may be down: keep serving, try again later
                    log.exception("reload of model %r failed", self.model)

        self._thread = threading.Thread(target=loop, name=f"reload-{self.model}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # -- answering ------------------------------------------------------------------------------
    def choose(self, context: Features, candidates: Sequence[str] | None = None,
               arm_features: Mapping[str, Features] | None = None, k: int = 1) -> ScoreResult:
        served = self.served
        learner, vec = served.learner, served.vectorizer
        x = vec.x(context)
        with served.lock:  # learners keep an RNG and a candidate cache: one request at a time
            if len(learner.arms) > served.known_arms + self.max_new_arms:
                self._forget_unknown_arms(served)
                learner = served.learner
            if candidates is None or learner.retired or not candidates:
                eligible = learner.eligible(candidates)
            else:  # nothing to filter out (the common case): skip the per-candidate membership tests
                eligible = list(candidates)
            shared = vec.shared_for(context, eligible, arm_features)
            decision = learner.choose(x, eligible, shared)
        probs = decision.probabilities
        # the ranking sorts every score: only worth it for slates (it always starts with the arm)
        ranking = (decision.arm,) if k <= 1 else decision.ranking[:k]
        return ScoreResult(
            model=served.name, version=served.version, arm=decision.arm,
            ranking=ranking, scores=decision.scores, propensity=decision.propensity,
            probabilities=None if probs is None else dict(zip(eligible, np.asarray(probs).tolist(), strict=True)))

    def _forget_unknown_arms(self, served: ServedModel) -> None:
        """Arms first seen in requests grow the learner's tables; bound that growth by starting
        again from the checkpointed state (request-only arms carry no statistics anyway)."""
        fresh = learner_from_state(served.learner.export_state())
        keep = served.known_arms
        state = fresh.export_state()
        state.arms = state.arms[:keep]
        state.arrays = {name: arr[:keep] if arr.ndim and arr.shape[0] == len(fresh.arms) else arr
                        for name, arr in state.arrays.items()}
        served.learner = learner_from_state(state)

    def info(self) -> dict[str, Any]:
        served = self._served
        if served is None:
            return {"model": self.model, "version": None, "reloads": self.reloads, "refused": self.refused}
        return {"model": served.name, "version": served.version, "learner": served.config.learner,
                "shards": list(served.shards), "arms": len(served.learner.arms),
                "created_at": None if served.created_at is None else served.created_at.isoformat(),
                "loaded_at": served.loaded_at, "reloads": self.reloads, "refused": self.refused,
                "last_error": self.last_error}
