"""The scoring operator: answers choose/score calls from a model's newest checkpoint.

A model may be stored as several shards (one per Kafka partition group); the scorer serves the
merge of every shard's newest state. Reloading builds a complete new :class:`ServedModel` off to
the side and swaps one reference, so a request sees either the old version or the new one, never a
mix. A checkpoint that cannot be decoded, holds NaN/inf or values beyond what a learner can compute
with (:func:`~banditloop.serving.guards.check_usable`), or does not match the served configuration is
refused with a log line and the previous model keeps serving.

Requests cannot grow the served model without bound: arms first seen in requests (never
checkpointed) are limited per request and per second (:class:`~banditloop.serving.guards.NewArmsRefused`),
and once ``max_new_arms`` of them are in the learner's tables it is reset to the checkpointed arms.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from banditloop.operators.base import Learner
from banditloop.operators.registry import learner_from_state
from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.pipeline.model import ModelConfig, Vectorizer
from banditloop.serving.guards import NewArmsRefused, TokenBucket, check_usable
from banditloop.serving.served import NoModel, ScoreResult, ServedModel, merge_checkpoints
from banditloop.serving.values import predictions, rank_by_value

log = logging.getLogger("banditloop.scorer")

Features = Mapping[str, float | str]


class WouldBlock(Exception):
    """``choose(..., blocking=False)`` could not answer at once: another request holds the model, or
    this one names never-seen arms (whose admission may cost milliseconds)."""


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

    def __init__(self, store: CheckpointStore | str, model: str, *, max_new_arms: int = 1000,
                 max_new_arms_per_request: int | None = None, max_new_arms_per_second: float | None = None,
                 feature_cache_bytes: int | None = None, cold_start: ModelConfig | None = None) -> None:
        """``cold_start``: while the model has no checkpoint at all, serve an untrained learner of
        this configuration as version 0 instead of raising :class:`NoModel`, so that impressions
        (which the learners start from) can be logged at all; the first checkpoint replaces it
        whatever its configuration. ``banditloop serve --cold-start`` uses ``random`` (uniform, exact
        1/K propensities): an untrained argmax learner's equal scores tie only up to rounding.

        New arms (ids the served learner has not seen yet): each one adds rows to the learner's
        tables (for LinUCB two d×d matrices, 16 KiB at d = 32). At most ``max_new_arms`` are kept
        beyond the checkpointed ones before the learner is reset to its checkpointed state (they carry
        no statistics: the scorer does not learn); a request bringing more than
        ``max_new_arms_per_request`` (default and at most ``max_new_arms``) is refused, and so is one
        that would take more than ``max_new_arms_per_second`` on average (a token bucket holding up to
        one request's worth; None: no rate limit). ``feature_cache_bytes``: the budget of each
        featurizer's hashing cache (default :data:`banditloop.core.features.DEFAULT_CACHE_BYTES`)."""
        if max_new_arms < 1:
            raise ValueError("max_new_arms must be >= 1")
        per_request = max_new_arms if max_new_arms_per_request is None else max_new_arms_per_request
        if not 1 <= per_request <= max_new_arms:
            raise ValueError("max_new_arms_per_request must be in [1, max_new_arms]")
        if max_new_arms_per_second is not None and max_new_arms_per_second <= 0:
            raise ValueError("max_new_arms_per_second must be > 0")
        if feature_cache_bytes is not None and feature_cache_bytes < 0:
            raise ValueError("feature_cache_bytes must be >= 0")
        self.store = store if isinstance(store, CheckpointStore) else CheckpointStore(store)
        self.model = model
        self.max_new_arms = max_new_arms
        self.max_new_arms_per_request = per_request
        self.new_arm_budget = None if max_new_arms_per_second is None else TokenBucket(
            max_new_arms_per_second, max(max_new_arms_per_second, per_request))
        self.feature_cache_bytes = feature_cache_bytes
        self.new_arms_refused = 0  # requests refused by either new-arm limit
        self.arm_resets = 0
        self.cold_start = cold_start
        self._wake = threading.Event()  # asks the reload thread for a spare learner now
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
                learner = config.new_learner()
                self._served = ServedModel(name=self.model, version=0, config=config, learner=learner,
                                           vectorizer=self._vectorizer(config), shards=(), created_at=None,
                                           base_state=learner.export_state())
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
        vectorizer = self._vectorizer(config)
        base = check_usable(learner, vectorizer)
        self._reserve(learner)
        spare = self._reserve(learner_from_state(base))
        return ServedModel(name=self.model, version=version, config=config, learner=learner,
                           vectorizer=vectorizer, shards=tuple(cp.shard for cp in checkpoints),
                           created_at=max(cp.created_at for cp in checkpoints if cp.created_at),
                           known_arms=len(learner.arms), base_state=base, spare=spare)

    def _reserve(self, learner: Learner) -> Learner:
        """Grow the learner's tables once to hold ``max_new_arms`` more arms, so that arms first seen
        in requests are added without reallocating (the doubling growth of ``add_arm`` copies and
        re-initialises every table, tens of milliseconds for thousands of LinUCB arms)."""
        learner.reserve(len(learner.arms) + self.max_new_arms)
        return learner

    def _prepare_spare(self) -> None:
        """Build the next spare learner of the served model, if it has none (reload thread)."""
        served = self._served
        if served is None or served.spare is not None or served.base_state is None:
            return
        spare = self._reserve(learner_from_state(served.base_state))
        with served.lock:
            if served.spare is None:
                served.spare = spare

    def _vectorizer(self, config: ModelConfig) -> Vectorizer:
        vec = Vectorizer(config)
        if self.feature_cache_bytes is not None:
            for featurizer in (vec.context, vec.shared):
                if featurizer is not None:
                    featurizer.set_cache_bytes(self.feature_cache_bytes)
        return vec

    def start_auto_reload(self, interval: float) -> None:
        """Poll for new versions every ``interval`` seconds in a daemon thread."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.is_set():
                self._wake.wait(interval)
                self._wake.clear()
                if self._stop.is_set():
                    break
                try:
                    self.reload()
                except Exception:  # the database may be down: keep serving, try again later
                    log.exception("reload of model %r failed", self.model)
                try:
                    self._prepare_spare()
                except Exception:
                    log.exception("preparing a spare learner of model %r failed", self.model)

        self._thread = threading.Thread(target=loop, name=f"reload-{self.model}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # -- answering ------------------------------------------------------------------------------
    def choose(self, context: Features, candidates: Sequence[str] | None = None,
               arm_features: Mapping[str, Features] | None = None, k: int = 1, *, blocking: bool = True,
               values: Mapping[str, float] | None = None, rank_by: str = "model") -> ScoreResult:
        """The decision for one request. With ``blocking=False``, raise :class:`WouldBlock` (having
        changed nothing) instead of waiting for another request or admitting never-seen arms.
        ``values`` (per candidate, default 1) and ``rank_by``: see :mod:`banditloop.serving.values`."""
        served = self.served
        vec = served.vectorizer
        # learners keep an RNG and a candidate cache, featurizers an LRU cache: one request at a time
        if not served.lock.acquire(blocking):
            raise WouldBlock("another request holds the model")
        try:
            learner = served.learner
            if candidates is not None and not all(map(learner.arm_index.__contains__, candidates)):
                if not blocking:
                    raise WouldBlock("never-seen arms")
                learner = self._admit_new_arms(served, candidates)
            x = vec.x(context)
            if candidates is None or learner.retired or not candidates:
                eligible = learner.eligible(candidates)
            else:  # nothing to filter out (the common case): skip the per-candidate membership tests
                eligible = list(candidates)
            kind = served.config.reward.kind
            if rank_by == "expected_value":
                decision = rank_by_value(learner, kind, x, eligible, values)
            else:
                decision = learner.choose(x, eligible, vec.shared_for(context, eligible, arm_features))
            predicted = predictions(learner, kind, decision.arm, x, (values or {}).get(decision.arm, 1.0))
        finally:
            served.lock.release()
        probs = decision.probabilities
        # the ranking sorts every score: only worth it for slates (it always starts with the arm)
        ranking = (decision.arm,) if k <= 1 else decision.ranking[:k]
        return ScoreResult(
            model=served.name, version=served.version, arm=decision.arm,
            ranking=ranking, scores=decision.scores, propensity=decision.propensity,
            probabilities=None if probs is None else dict(zip(eligible, np.asarray(probs).tolist(), strict=True)),
            predictions=predicted)

    def _admit_new_arms(self, served: ServedModel, candidates: Sequence[str]) -> Learner:
        """Check the request's never-seen arms against the limits (raising :class:`NewArmsRefused`),
        resetting the learner first when they would take it past ``max_new_arms``; called with
        ``served.lock`` held. Returns the learner to score with."""
        learner = served.learner
        index = learner.arm_index
        new = sum(1 for c in candidates if c not in index)
        if new > self.max_new_arms_per_request:
            self.new_arms_refused += 1
            raise NewArmsRefused(f"candidates: {new} arms the model has never seen, at most "
                                 f"{self.max_new_arms_per_request} per request", rate_limited=False)
        if self.new_arm_budget is not None and not self.new_arm_budget.take(new):
            self.new_arms_refused += 1
            wait = self.new_arm_budget.wait_for(new)
            raise NewArmsRefused(f"candidates: {new} arms the model has never seen; this service takes "
                                 f"{self.new_arm_budget.rate:g} new arms per second (retry in {wait:.1f} s)",
                                 rate_limited=True, retry_after=wait)
        if len(learner.arms) + new > served.known_arms + self.max_new_arms:
            self._forget_unknown_arms(served)
            learner = served.learner
        return learner

    def _forget_unknown_arms(self, served: ServedModel) -> None:
        """Arms first seen in requests grow the learner's tables; bound that growth by starting
        again from the checkpointed arms (request-only arms carry no statistics anyway). Called with
        ``served.lock`` held. The spare learner prepared by the reload thread makes this a swap; without
        one (no auto-reload, or two resets within one reload interval) it is rebuilt here, at the cost of
        loading the checkpointed model. The random state carries over, so no draws are replayed."""
        fresh = served.spare
        served.spare = None
        if fresh is None:
            assert served.base_state is not None
            fresh = self._reserve(learner_from_state(served.base_state))
        fresh.rng.bit_generator.state = served.learner.rng.bit_generator.state
        served.learner = fresh
        self.arm_resets += 1
        self._wake.set()  # the reload thread prepares the next spare

    def info(self) -> dict[str, Any]:
        served = self._served
        if served is None:
            return {"model": self.model, "version": None, "reloads": self.reloads, "refused": self.refused}
        return {"model": served.name, "version": served.version, "learner": served.config.learner,
                "shards": list(served.shards), "arms": len(served.learner.arms),
                "created_at": None if served.created_at is None else served.created_at.isoformat(),
                "loaded_at": served.loaded_at, "reloads": self.reloads, "refused": self.refused,
                "last_error": self.last_error, "new_arms_refused": self.new_arms_refused,
                "arm_resets": self.arm_resets}
