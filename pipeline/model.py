"""A model's configuration and the adapter that feeds joined events into its learner.

A :class:`ModelConfig` is everything needed to rebuild a model from nothing: the learner and its
hyper-parameters, the featurization, the reward and the join windows. It is stored with every
checkpoint, so a scorer or a restarted worker featurizes exactly as the learner did.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from banditloop.core.features import FeatureSpec, Featurizer
from banditloop.core.reward import RewardSpec
from banditloop.operators.base import Learner
from banditloop.operators.event_times import window_defaults
from banditloop.operators.registry import learner_class, learners_with, make_learner
from banditloop.pipeline.join import JoinConfig, OpenImpression
from banditloop.pipeline.open_store import OpenRef, OpenStore


@dataclass(frozen=True)
class ModelConfig:
    """A learner, its hyper-parameters, the featurization, reward and join windows: everything that
    rebuilds the model from nothing (stored as JSON with every checkpoint).

    >>> config = ModelConfig("linucb", {"alpha": 0.2}, features=FeatureSpec(dim=8, numeric=("age",)))
    >>> ModelConfig.from_dict(config.to_dict()) == config
    True
    >>> config.new_learner().params()["alpha"]
    0.2
    """

    learner: str
    learner_params: dict[str, Any] = field(default_factory=dict)
    features: FeatureSpec = field(default_factory=FeatureSpec)
    shared_features: FeatureSpec | None = None
    reward: RewardSpec = field(default_factory=RewardSpec)
    join: JoinConfig = field(default_factory=JoinConfig)
    #: off-policy learning: weight every update by min(1/(K·propensity), ips_clip) (None: unweighted)
    ips_clip: float | None = None

    def __post_init__(self) -> None:
        learner_class(self.learner)  # fails early on an unknown name
        if self.ips_clip is not None:
            if not self.ips_clip >= 1.0:
                raise ValueError("the inverse-propensity weight cap must be >= 1")
            if not learner_class(self.learner).weighted_updates:
                raise ValueError(f"inverse-propensity weighting needs a learner with weighted updates "
                                 f"({', '.join(learners_with('weighted_updates'))}), not {self.learner}")
        if self.uses_shared_features and self.shared_features is None:
            object.__setattr__(self, "shared_features", FeatureSpec(dim=self.features.dim))

    @property
    def uses_shared_features(self) -> bool:
        """The learner scores with a shared (context × arm) feature vector per candidate."""
        return learner_class(self.learner).shared_features

    def new_learner(self) -> Learner:
        params = dict(self.learner_params)
        if self.uses_shared_features and self.shared_features is not None:
            params.setdefault("shared_dim", self.shared_features.dim)
        if learner_class(self.learner).learns_event_times:  # dfm, esmm: times relative to the join's window
            for key, value in window_defaults(self.join.close_after(self.reward.kind)).items():
                params.setdefault(key, value)
        return make_learner(self.learner, self.features.dim, **params)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "learner": self.learner,
            "learner_params": dict(self.learner_params),
            "features": self.features.to_dict(),
            "shared_features": None if self.shared_features is None else self.shared_features.to_dict(),
            "reward": self.reward.to_dict(),
            "join": self.join.to_dict(),
        }
        if self.ips_clip is not None:  # absent when off, so older stored configurations compare equal
            out["ips_clip"] = self.ips_clip
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        shared = data.get("shared_features")
        return cls(
            learner=data["learner"],
            learner_params=dict(data.get("learner_params", {})),
            features=FeatureSpec.from_dict(data["features"]),
            shared_features=None if shared is None else FeatureSpec.from_dict(shared),
            reward=RewardSpec.from_dict(data.get("reward", {})),
            join=JoinConfig(**data.get("join", {})),
            ips_clip=data.get("ips_clip"),
        )


class Vectorizer:
    """Context (+ arm features) → the vectors a learner consumes, per the model's feature specs."""

    def __init__(self, config: ModelConfig) -> None:
        self.context = Featurizer(config.features)
        self.shared = None if config.shared_features is None else Featurizer(config.shared_features)

    def x(self, context: Mapping[str, float | str]) -> np.ndarray:
        values = self.context.values(context)  # as transform(), checked before it becomes an array
        # a finite sum proves every value finite; otherwise look at each (a sum can overflow)
        if not math.isfinite(sum(values)) and not all(map(math.isfinite, values)):
            raise ValueError("featurized context is not finite")
        return np.array(values)

    def x_many(self, contexts: Sequence[Mapping[str, float | str]]) -> np.ndarray:
        """:meth:`x` of each context, stacked (bit for bit, see ``Featurizer.matrix``)."""
        X = self.context.matrix(contexts)
        if not np.isfinite(X).all():
            raise ValueError("featurized context is not finite")
        return X

    def z(self, context: Mapping[str, float | str],
          arm_features: Mapping[str, float | str] | None) -> np.ndarray | None:
        if self.shared is None:
            return None
        return self.shared.cross(context, arm_features or {})

    def shared_for(self, context: Mapping[str, float | str], candidates: list[str],
                   arm_features: Mapping[str, Mapping[str, float | str]] | None) -> dict[str, np.ndarray] | None:
        if self.shared is None:
            return None
        arm_features = arm_features or {}
        return {arm: self.shared.cross(context, arm_features.get(arm, {})) for arm in candidates}


#: the context of an open impression whose vectors are stored (the join keeps no context then)
_NO_CONTEXT: dict[str, float | str] = {}


class _Arm:
    """All that a context-free learner reads of an impression in a queued call: its arm (one per arm)."""

    __slots__ = ("arm",)

    def __init__(self, arm: str) -> None:
        self.arm = arm


class LearnerSink:
    """Feeds the join's output into a learner: impressions at once, reward increments later, and the
    closing of each feedback window (only to learners that learn then, ``learns_at_close``).

    With ``ips_clip`` set (off-policy learning), every update of an impression is weighted by
    ``w = min(1 / (K · propensity), ips_clip)`` (``K`` = its number of candidates, 1 if not logged, so
    a uniformly random log gets weight 1): the context, shared vector and reward increment are scaled by
    ``√w``, which multiplies every sufficient statistic of a learner with ``weighted_updates`` by ``w``
    exactly. Impressions without a propensity get weight 1 and are counted in ``unweighted``.

    With ``batch`` > 0 (replay) the calls are queued and applied ``batch`` at a time by :meth:`flush`:
    the contexts featurized as one matrix, then the learner's updates in the order of the calls, with
    the same arguments, so the learner ends bit for bit where it would have. Whoever reads the learner
    (checkpoints, summaries) flushes first (``LearningRun.snapshot`` does).
    """

    def __init__(self, learner: Learner, vectorizer: Vectorizer, ips_clip: float | None = None,
                 batch: int = 0) -> None:
        self.learner = learner
        self.vectorizer = vectorizer
        self.ips_clip = ips_clip
        self.batch = batch
        self.unweighted = 0
        #: where the join keeps its open impressions (set by the join): vectors computed later are stored there
        self.store: OpenStore | None = None
        #: queued calls: (0 impression | 1 reward | 2 close, impression, delta or final reward)
        self._queue: list[tuple[int, OpenImpression, float]] = []
        self._arms: dict[str, _Arm] = {}

    @property
    def wants_close(self) -> bool:
        """Whether :meth:`on_close` does anything (the join builds no impression for it otherwise)."""
        return bool(self.learner.learns_at_close)

    @property
    def wants_context(self) -> bool:
        """Whether the learner reads an impression's context (the join keeps none otherwise)."""
        return not self.learner.close_without_context

    @property
    def arm_only(self) -> bool:
        """Whether the sink reads nothing of an impression but its arm (and at the close its final
        reward): a context-free learner, unweighted. The join then calls :meth:`impression_arm` and
        :meth:`close_arms` instead of building an impression for each call (the same learning)."""
        return type(self) is LearnerSink and bool(self.learner.close_without_context) and self.ips_clip is None

    def impression_arm(self, arm: str) -> None:
        """:meth:`on_impression` of an impression of ``arm`` (an ``arm_only`` sink)."""
        if self.batch:
            ref = self._arms.get(arm)
            if ref is None:
                ref = self._arms[arm] = _Arm(arm)
            queue = self._queue  # (_queued, inlined: once per impression)
            queue.append((0, ref, 0.0))  # type: ignore[arg-type]
            if len(queue) >= self.batch:
                self.flush()
            return
        self.learner.learn_impression(arm, None, None)  # type: ignore[arg-type]

    def close_arms(self, arms: Sequence[str], applied: Sequence[float]) -> None:
        """:meth:`on_close` of impressions of ``arms`` with final rewards ``applied``, in this order
        (an ``arm_only`` sink)."""
        learner = self.learner
        if not learner.learns_at_close:
            return
        if not self.batch:
            for arm, value in zip(arms, applied, strict=True):
                learner.learn_close(arm, None, value, None)
            return
        refs = self._arms
        for arm, value in zip(arms, applied, strict=True):
            ref = refs.get(arm)
            if ref is None:
                ref = refs[arm] = _Arm(arm)
            self._queued(2, ref, value)  # type: ignore[arg-type]

    def _queued(self, kind: int, imp: OpenImpression, value: float) -> None:
        queue = self._queue
        queue.append((kind, imp, value))
        if len(queue) >= self.batch:
            self.flush()

    def flush(self) -> None:
        """Apply the queued calls (see the class docstring)."""
        queue = self._queue
        if not queue:
            return
        self._queue = []
        learner = self.learner
        context_free = learner.close_without_context  # such learners read no context at all
        rows: dict[int, int] = {}
        imps: list[OpenImpression] = []
        if not context_free:
            for _, imp, _ in queue:
                if id(imp) not in rows:
                    rows[id(imp)] = len(imps)
                    imps.append(imp)
        X = self._matrix(imps) if imps else None
        sequence = getattr(learner, "learn_sequence", None)
        if sequence is not None and self.vectorizer.shared is None:
            kinds = np.fromiter((op[0] for op in queue), dtype=np.int8, count=len(queue))
            values = np.fromiter((op[2] for op in queue), dtype=float, count=len(queue))
            Xq = None if X is None else X[[rows[id(imp)] for _, imp, _ in queue]]  # one row per call
            if self.ips_clip is not None:
                scale = np.fromiter((self._scale(imp) for _, imp, _ in queue), dtype=float, count=len(queue))
                values = values * scale
                Xq = None if Xq is None else Xq * scale[:, None]
            arm_rows = learner.rows_of([imp.arm for _, imp, _ in queue])
            if sequence(kinds, arm_rows, Xq, values):
                return
        self._apply(queue, X, rows)

    def _apply(self, queue: list[tuple[int, OpenImpression, float]], X: np.ndarray | None,
               rows: dict[int, int]) -> None:
        """The queued calls one by one, each context a row of ``X`` (rows by ``id`` of the impression)."""
        learner = self.learner
        v = self.vectorizer
        shared = v.shared is not None
        ips = self.ips_clip is not None
        for kind, imp, value in queue:
            if X is None:  # a context-free learner (weighted updates need a context: never with ips_clip)
                x = z = None
            else:
                x = X[rows[id(imp)]]
                z = (None if imp.z is None else np.frombuffer(imp.z)) if imp.x is not None else (
                    v.z(imp.context, imp.arm_features) if shared else None)
            if ips and X is not None:
                s = self._scale(imp)
                x, z, value = (None if x is None else x * s), (None if z is None else z * s), value * s
            if kind == 0:
                learner.learn_impression(imp.arm, x, z)  # type: ignore[arg-type]
            elif kind == 1:
                learner.learn_reward(imp.arm, x, value, z)  # type: ignore[arg-type]
            else:
                learner.learn_close(imp.arm, x, value, z)

    def _matrix(self, imps: Sequence[OpenImpression]) -> np.ndarray:
        """The context vectors of ``imps``, one row each: as stored (``imp.x``), else featurized as one
        matrix, and then stored, with the shared vector, so the join can drop the context (as
        :meth:`on_impression` does event at a time)."""
        fresh = [i for i, imp in enumerate(imps) if imp.x is None]
        Xf = self.vectorizer.x_many([imps[i].context for i in fresh]) if fresh else None
        if Xf is not None and len(fresh) == len(imps):
            X = Xf
        else:
            stored = next(imp.x for imp in imps if imp.x is not None)
            X = np.empty((len(imps), len(stored) // 8 if Xf is None else Xf.shape[1]))
            for i, imp in enumerate(imps):
                if imp.x is not None:
                    X[i] = np.frombuffer(imp.x)
            if Xf is not None:
                X[fresh] = Xf
        if Xf is not None and X.dtype == np.float64 and self.vectorizer.shared is None and type(self) is LearnerSink:
            # only the store keeps the vectors: the queued calls read their rows of X, and what the join
            # hands to the sink later is built from the store (an impression still in hand is featurized again)
            refs = [imps[i] for i in fresh]
            if self.store is not None and all(isinstance(imp, OpenRef) for imp in refs):
                self.store.put_matrix([imp.slot for imp in refs], [imp.gen for imp in refs],  # type: ignore[attr-defined]
                                      X if len(fresh) == len(imps) else X[fresh])
                return X
        if Xf is not None and X.dtype == np.float64:
            v, store = self.vectorizer, self.store
            rows, slots, gens = [], [], []  # stored in the join's store at once (no shared vectors)
            for i in fresh:
                imp = imps[i]
                z = v.z(imp.context, imp.arm_features)
                imp.x, imp.z = X[i].tobytes(), None if z is None else z.tobytes()
                imp.context, imp.arm_features = _NO_CONTEXT, None
                if store is not None and isinstance(imp, OpenRef):
                    if z is None:
                        rows.append(i)
                        slots.append(imp.slot)
                        gens.append(imp.gen)
                    else:
                        store.put_vectors(imp.slot, imp.gen, imp.x, imp.z)
            if rows:
                assert store is not None
                store.put_matrix(slots, gens, X[rows])
        return X

    def _scale(self, imp: OpenImpression) -> float:
        if imp.propensity is None or self.ips_clip is None:
            return 1.0
        return math.sqrt(min(1.0 / (max(imp.candidates, 1) * imp.propensity), self.ips_clip))

    def _vectors(self, imp: OpenImpression) -> tuple[np.ndarray, np.ndarray | None]:
        """x, z of an impression: as stored at its opening (the join then keeps no context), else featurized."""
        if imp.x is not None:
            return np.frombuffer(imp.x).copy(), None if imp.z is None else np.frombuffer(imp.z).copy()
        v = self.vectorizer
        return v.x(imp.context), v.z(imp.context, imp.arm_features)

    def on_impression(self, imp: OpenImpression) -> None:
        if self.batch:
            if self.ips_clip is not None and imp.propensity is None:
                self.unweighted += 1
            queue = self._queue  # (_queued, inlined: once per impression)
            queue.append((0, imp, 0.0))
            if len(queue) >= self.batch:
                self.flush()
            return
        v = self.vectorizer
        x, z = v.x(imp.context), v.z(imp.context, imp.arm_features)
        if self.learner.close_without_context:  # reads no context: nothing to keep (as in flush)
            pass
        elif x.dtype == np.float64 and (z is None or z.dtype == np.float64):  # exact bytes: learning is unchanged
            imp.x, imp.z = x.tobytes(), None if z is None else z.tobytes()
        if self.ips_clip is not None:
            if imp.propensity is None:
                self.unweighted += 1
            s = self._scale(imp)
            x, z = x * s, (None if z is None else z * s)
        self.learner.learn_impression(imp.arm, x, z)

    def on_reward(self, imp: OpenImpression, delta: float) -> None:
        if self.batch:
            self._queued(1, imp, delta)
            return
        x, z = self._vectors(imp)
        if self.ips_clip is not None:
            s = self._scale(imp)
            x, z, delta = x * s, (None if z is None else z * s), delta * s
        self.learner.learn_reward(imp.arm, x, delta, z)

    def on_close(self, imp: OpenImpression) -> None:
        learner = self.learner
        if not learner.learns_at_close:
            return
        if self.batch:
            self._queued(2, imp, imp.applied)
            return
        if learner.close_without_context:
            learner.learn_close(imp.arm, None, imp.applied, None)
            return
        (x, z), applied = self._vectors(imp), imp.applied
        if self.ips_clip is not None:
            s = self._scale(imp)
            x, z, applied = x * s, (None if z is None else z * s), applied * s
        learner.learn_close(imp.arm, x, applied, z)
