"""The interface every learner implements, and the per-arm bookkeeping they share.

Learners work on featurized vectors (:mod:`banditloop.core.features`), ``x`` and for hybrid models a
shared vector per arm; hyper-parameters are constructor arguments, as in river and scikit-learn:

* ``choose(x, candidates)`` returns a :class:`Decision`: the chosen arm, a score per candidate and
  the probability (propensity) with which this policy picks that arm for this input.
* ``learn_impression`` when an impression is seen, ``learn_reward`` (an increment) when feedback
  arrives, ``learn_close`` when its window closes; ``learn_one`` is all three, ``learn_batch`` over rows.
* ``export_state()`` / ``from_state()`` move the whole state as plain arrays (no pickle), and
  ``merge(other)`` combines two states learned on disjoint event streams.

Most state is per arm (``_arm_arrays``), some global (``_global_arrays``, e.g. hybrid LinUCB's shared
sums): both are exported, validated, imported alike, and summed on merge if in ``additive_arrays``.
Arms are strings, added on first sight; ``retire_arm`` keeps their statistics but never chooses them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from banditloop.core.state_codec import LearnerState
from banditloop.operators.candidate_cache import cache_put
from banditloop.operators.decision import Decision
from banditloop.operators.params import init_parameters
from banditloop.operators.policies import SampledPolicy
from banditloop.operators.state_io import checked_arrays, restore_rng, rng_state

Shared = Mapping[str, np.ndarray] | None

#: relative score difference under which two arms count as tied (see ``Learner._pick``)
TIE_TOLERANCE = 1e-12


class Learner(ABC):
    """Base class: arm table, growable per-arm arrays, counters, state export and merge.

    States travel as plain arrays and merge across shards:

    >>> from banditloop.operators.ucb1 import UCB1
    >>> left, right = UCB1(), UCB1()
    >>> left.learn_one("a", None, 1.0); right.learn_one("b", None, 0.0)
    >>> both = left.merge(right)
    >>> sorted(both.arms), UCB1.from_state(both.export_state()).counters["impressions"]
    (['a', 'b'], 2.0)
    """

    kind: ClassVar[str]
    #: rewards are clipped to [0, 1] by the pipeline before reaching Bernoulli learners
    binary_reward: ClassVar[bool] = False
    #: ``merge`` is exact (sums of sufficient statistics) rather than an approximation
    exact_merge: ClassVar[bool] = True
    #: scoring needs a second, shared (context × arm) feature vector per candidate
    shared_features: ClassVar[bool] = False
    #: the state is sums of products of two of (x, shared z, reward): scaling them by √w weights an update
    #: by w exactly, so off-policy learning can weight updates by inverse propensities (``--ips-weight``)
    weighted_updates: ClassVar[bool] = False
    #: names of per-arm or global arrays that are plain sums (merged by addition); others need
    #: ``_merge_arrays``
    additive_arrays: ClassVar[tuple[str, ...]] = ()
    #: names of per-arm or global caches derived from the state (inverses, θ): never exported, rebuilt on load
    derived_arrays: ClassVar[tuple[str, ...]] = ()

    def __init__(self, dim: int, seed: int = 0) -> None:
        if dim < 1:
            raise ValueError("dim must be >= 1")
        self.dim = int(dim)
        self.seed = int(seed)
        self.rng = np.random.default_rng(seed)
        self.arms: list[str] = []
        self.arm_index: dict[str, int] = {}
        self.retired: set[str] = set()
        self.counters: dict[str, float] = {"impressions": 0.0, "rewards": 0.0, "reward_sum": 0.0}
        self._capacity = 0
        self._arrays: dict[str, np.ndarray] = {}
        self._candidate_cache: dict[tuple[str, ...], np.ndarray] = {}
        self._index_cache: dict[tuple[str, ...], np.ndarray | slice] = {}
        self._globals: dict[str, np.ndarray] = {}
        for name, (shape, init) in self._global_arrays().items():
            if name in self._arm_arrays():
                raise TypeError(f"{type(self).__name__}: array {name!r} is both per-arm and global")
            arr = np.zeros(shape)
            arr[...] = init
            self._globals[name] = arr
        self._allocate(8)

    # -- hyper-parameters -------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """Constructor arguments (JSON-able) that rebuild an equivalent empty learner.

        Read from the ``__init__`` signatures of the class and its bases, as river does: every
        constructor argument is stored as an attribute of the same name."""
        return {name: getattr(self, name) for name in init_parameters(type(self))}

    # -- per-arm storage ----------------------------------------------------------------------
    @abstractmethod
    def _arm_arrays(self) -> dict[str, tuple[tuple[int, ...], float | np.ndarray]]:
        """Per-arm arrays: name -> (shape per arm, initial value: a scalar or an array of that shape)."""

    def _global_arrays(self) -> dict[str, tuple[tuple[int, ...], float | np.ndarray]]:
        """Arrays that belong to no arm: name -> (shape, initial value). Kept in ``self._globals``;
        exported, validated, imported and merged like the per-arm ones. Default: none."""
        return {}

    def _allocate(self, capacity: int) -> None:
        for name, (shape, init) in self._arm_arrays().items():
            new = np.zeros((capacity, *shape))
            if np.any(init):
                new[:] = init
            old = self._arrays.get(name)
            if old is not None:
                new[: self._capacity] = old[: self._capacity]
            self._arrays[name] = new
        self._capacity = capacity
        self._on_resize()

    def reserve(self, arms: int) -> None:
        """Room for ``arms`` arms in every table: adding them never reallocates (doubling copies all)."""
        if arms > self._capacity:
            self._allocate(arms)

    def _on_resize(self) -> None:
        """Hook for subclasses that keep views into ``self._arrays``."""

    def add_arm(self, arm: str) -> int:
        arm = str(arm)
        index = self.arm_index.get(arm)
        if index is not None:
            return index
        index = len(self.arms)
        if index >= self._capacity:
            self._allocate(max(8, 2 * self._capacity))
        self.arms.append(arm)
        self.arm_index[arm] = index
        self._candidate_cache.clear()
        return index

    def retire_arm(self, arm: str) -> None:
        self.retired.add(str(arm))
        self._candidate_cache.clear()

    def active_arms(self) -> list[str]:
        return [a for a in self.arms if a not in self.retired]

    def _rows(self, candidates: Sequence[str]) -> np.ndarray:
        """Row indexes of the candidates (adding unseen arms), cached per candidate tuple."""
        key = tuple(candidates)
        rows = self._candidate_cache.get(key)
        if rows is None:
            rows = np.fromiter((self.add_arm(a) for a in key), dtype=np.intp, count=len(key))
            cache_put(self._candidate_cache, key, rows)
        return rows

    def _row_index(self, candidates: Sequence[str]) -> np.ndarray | slice:
        """Like :meth:`_rows`, but a ``slice`` when the candidates are consecutive rows in order (all
        arms, the common case): indexing per-arm arrays with a slice gives views instead of copies,
        which is most of the cost of scoring a few arms. Cached; an arm's row never changes."""
        key = tuple(candidates)
        index = self._index_cache.get(key)
        if index is None:
            rows = self._rows(key)
            start = int(rows[0]) if rows.size else 0
            if rows.size and np.array_equal(rows, np.arange(start, start + rows.size)):
                index = slice(start, start + rows.size)
            else:
                index = rows
            cache_put(self._index_cache, key, index)
        return index

    def rows_of(self, arms: Sequence[str]) -> np.ndarray:
        """Row index of each arm in ``arms`` (adding unseen arms), for the vectorised batch paths."""
        index = self.arm_index
        add = self.add_arm
        return np.fromiter((index[a] if a in index else add(a) for a in arms), dtype=np.intp, count=len(arms))

    def eligible(self, candidates: Sequence[str] | None) -> list[str]:
        if candidates is None:
            eligible = self.active_arms()
        else:
            eligible = [c for c in candidates if c not in self.retired]
        if not eligible:
            raise ValueError("no eligible candidates (all retired, or none given)")
        return eligible

    # -- decisions ----------------------------------------------------------------------------
    @abstractmethod
    def score(self, x: np.ndarray, candidates: Sequence[str], shared: Shared = None) -> np.ndarray:
        """One score per candidate: the index the policy maximises (a draw, for sampling policies)."""

    def propensities(self, x: np.ndarray, candidates: Sequence[str], scores: np.ndarray,
                     shared: Shared = None) -> np.ndarray:
        """Probability of each candidate being chosen; default: argmax with uniform tie-breaking."""
        best = scores == scores.max()
        return best / best.sum()

    def _pick(self, x: np.ndarray, candidates: Sequence[str], scores: np.ndarray,
              shared: Shared) -> tuple[int, float, np.ndarray | None]:
        """Index of the chosen candidate and its propensity. Default: argmax, ties broken uniformly
        at random. Scores within ``TIE_TOLERANCE`` (relative) of the top are ties: arms with the same
        statistics (fresh arms) get scores that differ in the last bits through batched BLAS
        arithmetic, and rounding must not decide which one is explored. Randomised policies override
        this together with :meth:`propensities`."""
        best = int(scores.argmax())
        top = scores[best]
        ties = (scores >= top - TIE_TOLERANCE * max(1.0, abs(top))).nonzero()[0]
        if ties.size == 1:
            return best, 1.0, None
        return int(ties[self.rng.integers(ties.size)]), 1.0 / ties.size, None

    def choose(self, x: np.ndarray, candidates: Sequence[str] | None = None, shared: Shared = None) -> Decision:
        eligible = self.eligible(candidates) if (candidates is None or self.retired) else candidates
        if not eligible:
            raise ValueError("no candidates given")
        scores = self.score(x, eligible, shared)
        pick, propensity, probs = self._pick(x, eligible, scores, shared)
        return Decision(eligible[pick], propensity, eligible, scores, probs)

    # -- learning -----------------------------------------------------------------------------
    @abstractmethod
    def learn_impression(self, arm: str, x: np.ndarray, shared: np.ndarray | None = None) -> None:
        """Count an impression of ``arm`` in context ``x`` whose reward is not known yet (0 so far)."""

    @abstractmethod
    def learn_reward(self, arm: str, x: np.ndarray, reward: float, shared: np.ndarray | None = None) -> None:
        """Add ``reward`` (an increment) to an impression already counted with ``learn_impression``."""

    # -- pending feedback (see README "Delayed feedback") ---------------------------------------
    #: ``True`` when the learner learns something when an impression's feedback window closes
    #: (``learn_close``); the join's sink skips the call (and its featurizing) otherwise
    learns_at_close: bool = False
    #: ``learn_close`` ignores ``x`` and ``shared`` (context-free learners): the sink passes ``None``
    #: instead of featurizing the impression's context again
    close_without_context: ClassVar[bool] = False
    #: learns feedback delays and pending impressions' elapsed times (``banditloop.pipeline.event_time``)
    learns_event_times: ClassVar[bool] = False

    def learn_close(self, arm: str, x: np.ndarray | None, reward: float, shared: np.ndarray | None = None) -> None:
        """The feedback window of an impression of ``arm`` closed; ``reward`` is its final reward (the sum
        of the increments given to ``learn_reward``). Learners that do not treat a pending impression
        as a 0 (``learns_at_close``) learn the missing part here, e.g. Beta TS its failure. Default:
        nothing, the impression was learned as a 0 when it was seen."""

    def learn_one(self, arm: str, x: np.ndarray, reward: float, shared: np.ndarray | None = None) -> None:
        """Impression, reward and the closing of its window at once (the outcome is known)."""
        if not math.isfinite(reward):
            raise ValueError(f"reward must be finite, got {reward!r}")
        self.learn_impression(arm, x, shared)
        if reward:
            self.learn_reward(arm, x, reward, shared)
        if self.learns_at_close:
            self.learn_close(arm, x, reward, shared)

    def learn_batch(self, arms: Sequence[str], X: np.ndarray, rewards: np.ndarray,
                    shared: np.ndarray | None = None) -> None:
        """``learn_one`` over rows; subclasses vectorise it. Must equal the sequential result."""
        for i, arm in enumerate(arms):
            self.learn_one(arm, X[i], float(rewards[i]), None if shared is None else shared[i])

    def _count(self, impressions: float = 0.0, reward: float = 0.0, rewarded: float = 0.0) -> None:
        c = self.counters
        c["impressions"] += impressions
        c["reward_sum"] += reward
        c["rewards"] += rewarded

    # -- state --------------------------------------------------------------------------------
    def _state_arrays(self) -> dict[str, np.ndarray]:
        n = len(self.arms)
        out = {name: arr[:n].copy() for name, arr in self._arrays.items() if name not in self.derived_arrays}
        out.update({name: arr.copy() for name, arr in self._globals.items() if name not in self.derived_arrays})
        return out

    def _load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Validate every array (known name, shape, finite) before storing any, then rebuild caches."""
        shapes = {name: arr.shape for name, arr in self._globals.items() if name not in self.derived_arrays}
        shapes.update({name: (len(self.arms), *arr.shape[1:]) for name, arr in self._arrays.items()
                       if name not in self.derived_arrays})
        for name, arr in checked_arrays(self.kind, arrays, shapes).items():
            if name in self._globals:
                self._globals[name][...] = arr
            else:
                self._arrays[name][: len(self.arms)] = arr
        self._on_load()

    def _on_load(self) -> None:
        """Hook: rebuild caches derived from the arrays (inverses, θ) after import or merge."""

    def export_state(self) -> LearnerState:
        return LearnerState(kind=self.kind, params=self.params(), arms=list(self.arms),
                            retired=sorted(self.retired), arrays=self._state_arrays(),
                            counters=dict(self.counters), rng=rng_state(self.rng))

    @classmethod
    def from_state(cls, state: LearnerState) -> Learner:
        if state.kind != cls.kind:
            raise ValueError(f"state is for {state.kind!r}, not {cls.kind!r}")
        for key, value in state.params.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{cls.kind}: hyper-parameter {key!r} is not finite")
        try:
            learner = cls(**state.params)
        except TypeError as exc:  # unknown or missing constructor arguments
            raise ValueError(f"{cls.kind}: state has bad hyper-parameters: {exc}") from None
        for arm in state.arms:
            learner.add_arm(arm)
        learner.retired = set(state.retired)
        learner._load_arrays(state.arrays)
        for key, value in state.counters.items():
            if not math.isfinite(float(value)):
                raise ValueError(f"{cls.kind}: counter {key!r} is not finite")
        learner.counters.update({key: float(value) for key, value in state.counters.items()})
        if state.rng:
            restore_rng(learner.rng, state.rng)
        return learner

    def merge(self, other: Learner) -> Learner:
        """A learner holding both states. Additive arrays are summed per arm id; subclasses with
        other arrays override :meth:`_merge_arrays`. Neither input is modified."""
        if other.kind != self.kind or other.dim != self.dim:
            raise ValueError("can only merge learners of the same kind and dimension")
        mine = {k: v for k, v in self.params().items() if k != "seed"}
        theirs_params = {k: v for k, v in other.params().items() if k != "seed"}
        if mine != theirs_params:
            raise ValueError(f"cannot merge {self.kind} learners with different hyper-parameters: "
                             f"{mine} vs {theirs_params}")
        merged = type(self).from_state(self.export_state())
        for arm in other.arms:
            merged.add_arm(arm)
        rows = np.array([merged.arm_index[a] for a in other.arms], dtype=np.intp)
        theirs = other._state_arrays()
        merged._merge_arrays(rows, theirs, other)
        merged.retired |= other.retired
        for key, value in other.counters.items():
            merged.counters[key] = merged.counters.get(key, 0.0) + value
        merged._on_load()
        return merged

    def _merge_arrays(self, rows: np.ndarray, theirs: Mapping[str, np.ndarray], other: Learner) -> None:
        for name in (*self._arrays, *self._globals):
            if name in self.derived_arrays:
                continue
            if name not in self.additive_arrays:
                raise NotImplementedError(f"{self.kind}: array {name!r} is not additive; override _merge_arrays")
            if name in self._globals:
                self._globals[name] += theirs[name]
            else:
                self._arrays[name][rows] += theirs[name]

    DEFAULT_PROBABILITY_DRAWS: ClassVar[int] = 256  # for action_probabilities of sampled policies

    def action_probabilities(self, x: np.ndarray, candidates: Sequence[str], shared: Shared = None,
                             draws: int | None = None) -> np.ndarray:
        """Probability that :meth:`choose` picks each of ``candidates`` for this input, in candidate order.

        Retired candidates get 0. Exact for argmax (ties split as ``_pick`` splits them), ε-greedy and
        softmax; for Thompson sampling a Monte Carlo estimate over ``draws`` joint draws plus the scoring
        draw (default ``propensity_draws``, or 256 when that is 0; standard error ≤ ``0.5/sqrt(draws+1)``).

        >>> from banditloop.operators.epsilon_greedy import EpsilonGreedy
        >>> lrn = EpsilonGreedy(epsilon=0.2)
        >>> lrn.learn_one("a", None, 1.0)
        >>> lrn.action_probabilities(None, ["a", "b"]).round(3).tolist()
        [0.9, 0.1]
        """
        cands = list(candidates)
        if not cands:
            raise ValueError("no candidates given")
        keep = np.array([c not in self.retired for c in cands], dtype=bool)
        if not keep.any():
            raise ValueError("no eligible candidates (all retired, or none given)")
        eligible = cands if keep.all() else [c for c, k in zip(cands, keep, strict=True) if k]
        scores = self.score(x, eligible, shared)
        if isinstance(self, SampledPolicy):
            n = int(draws) if draws is not None else (self.propensity_draws or self.DEFAULT_PROBABILITY_DRAWS)
            if n < 1:
                raise ValueError("draws must be >= 1")
            probs = self.sampled_probabilities(x, eligible, scores, n)
        elif type(self)._pick is Learner._pick:  # argmax with tolerance ties, exactly as _pick
            top = scores.max()
            ties = scores >= top - TIE_TOLERANCE * max(1.0, abs(float(top)))
            probs = ties / ties.sum()
        else:
            probs = np.asarray(self.propensities(x, eligible, scores, shared), dtype=float)
        if keep.all():
            return probs
        out = np.zeros(len(cands))
        out[keep] = probs
        return out
