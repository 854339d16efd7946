"""Shared pieces of the benchmark scripts: the simulated stream, adapters for our learners and the
peers (river, MABWiser, Vowpal Wabbit), time-boxed measurement and table printing.

Every contender is driven through the same two calls, ``choose(t) -> column`` and
``learn(t, column, reward)``, where ``t`` indexes a pre-drawn :class:`~banditloop.simulators.stream.Stream` and
``column`` is a candidate position. What each contender receives is pre-built outside the timed
region in its native input format (a numpy vector for ours, a dict for river, a 1×d matrix for
MABWiser, the text of the shared ADF line for VW), so the figures compare the libraries, not our
glue. Scripts set single-threaded BLAS before importing numpy (see ``single_thread``).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS")


def single_thread() -> None:
    """Pin BLAS to one thread (must run before numpy is imported) and make the repo importable."""
    for var in THREAD_VARS:
        os.environ.setdefault(var, "1")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


single_thread()

import numpy as np  # noqa: E402

from banditloop.operators.base import Learner  # noqa: E402
from banditloop.simulators.config import WorldConfig  # noqa: E402
from banditloop.simulators.stream import Stream, draw_stream  # noqa: E402


# -- contenders ---------------------------------------------------------------------------------
class Contender:
    """A policy driven event at a time over a stream: ``choose`` then ``learn``."""

    name: str = "?"

    def choose(self, t: int) -> int:
        raise NotImplementedError

    def learn(self, t: int, column: int, reward: float) -> None:
        raise NotImplementedError


class Ours(Contender):
    """One of our learners; contexts are the stream's vectors with a leading bias of 1."""

    def __init__(self, name: str, learner: Learner, stream: Stream, X: np.ndarray | None = None) -> None:
        self.name = name
        self.learner = learner
        self.X = stream.with_bias() if X is None else X
        self.arms = [stream.arms[j] for j in stream.candidates[0]]
        self.column = {a: j for j, a in enumerate(self.arms)}
        self._arm = ""

    def choose(self, t: int) -> int:
        self._arm = self.learner.choose(self.X[t], self.arms).arm
        return self.column[self._arm]

    def learn(self, t: int, column: int, reward: float) -> None:
        self.learner.learn_one(self.arms[column], self.X[t], reward)


class OursFeaturizing(Ours):
    """Like :class:`Ours`, but the vector is built per event from the raw context dict with
    :class:`banditloop.core.features.Featurizer` (bias + the named numeric fields), as the pipeline does."""

    def __init__(self, name: str, learner: Learner, stream: Stream) -> None:
        from banditloop.core.features import FeatureSpec, Featurizer, dense_names

        super().__init__(name, learner, stream)
        d = stream.X.shape[1]
        self.featurizer = Featurizer(FeatureSpec(dim=d + 1, numeric=dense_names("x", d)))
        names = dense_names("x", d)
        self.contexts = [dict(zip(names, row, strict=True)) for row in stream.X.tolist()]
        self._x = None

    def choose(self, t: int) -> int:
        self._x = x = self.featurizer.transform(self.contexts[t])
        self._arm = self.learner.choose(x, self.arms).arm
        return self.column[self._arm]

    def learn(self, t: int, column: int, reward: float) -> None:
        self.learner.learn_one(self.arms[column], self._x, reward)


class RiverLinUCB(Contender):
    """``river.bandit.LinUCBDisjoint``: ``pull(arms, context)`` then ``update(arm, context, reward)``."""

    name = "river LinUCBDisjoint"

    def __init__(self, stream: Stream, seed: int = 0, alpha: float = 1.0) -> None:
        from river.bandit import LinUCBDisjoint

        self.policy = LinUCBDisjoint(alpha=alpha, beta=1.0, seed=seed)
        self.arms = [stream.arms[j] for j in stream.candidates[0]]
        self.column = {a: j for j, a in enumerate(self.arms)}
        names = ["bias"] + [f"x{i}" for i in range(stream.X.shape[1])]
        self.contexts = [dict(zip(names, row, strict=True)) for row in stream.with_bias().tolist()]

    def choose(self, t: int) -> int:
        return self.column[self.policy.pull(self.arms, self.contexts[t])]

    def learn(self, t: int, column: int, reward: float) -> None:
        self.policy.update(self.arms[column], self.contexts[t], reward)


class MabwiserLinUCB(Contender):
    """MABWiser ``LearningPolicy.LinUCB``: ``fit`` once on a warm-up of uniformly random choices,
    then ``predict`` and ``partial_fit`` per event (how it is used event at a time). ``bias=True``
    feeds it the contexts with the leading 1 that ours and river get (MABWiser's LinUCB has no
    intercept of its own)."""

    name = "MABWiser LinUCB"

    def __init__(self, stream: Stream, seed: int = 0, warmup: int = 200, alpha: float = 1.0,
                 bias: bool = False) -> None:
        from mabwiser.mab import MAB, LearningPolicy

        self.arms = [stream.arms[j] for j in stream.candidates[0]]
        self.column = {a: j for j, a in enumerate(self.arms)}
        self.X = stream.with_bias() if bias else stream.X
        self.rows = [self.X[t: t + 1] for t in range(stream.steps)]
        self.mab = MAB(list(self.arms), LearningPolicy.LinUCB(alpha=alpha), seed=seed)
        rng = np.random.default_rng([seed, 0xAB])
        n = min(warmup, stream.steps)
        cols = rng.integers(len(self.arms), size=n)
        self.mab.fit([self.arms[c] for c in cols], stream.rewards[np.arange(n), cols], self.X[:n])

    def choose(self, t: int) -> int:
        return self.column[self.mab.predict(self.rows[t])]

    def learn(self, t: int, column: int, reward: float) -> None:
        self.mab.partial_fit([self.arms[column]], [reward], self.rows[t])


class VWAdf(Contender):
    """Vowpal Wabbit ``--cb_explore_adf`` (ε-greedy, ε=0.05, shared×action interactions) through
    ``vowpalwabbit.Workspace``: ``predict`` a multi-line ADF example, sample the returned pmf, then
    ``learn`` the example with the label ``0:cost:probability`` on the chosen action (cost = -reward)."""

    name = "vowpalwabbit cb_explore_adf"
    ARGS = "--cb_explore_adf --epsilon 0.05 -q sa --quiet"

    def __init__(self, stream: Stream, seed: int = 0, format_per_event: bool = False,
                 args: str | None = None) -> None:
        from vowpalwabbit import Workspace

        if args is not None:
            self.name = f"vowpalwabbit {args.replace('--quiet', '').strip()}"
        self.vw = Workspace((args or self.ARGS) + f" --random_seed {seed}", quiet=True)
        self.arms = [stream.arms[j] for j in stream.candidates[0]]
        self.actions = [f"|a arm={a}" for a in self.arms]
        names = [f"x{i}" for i in range(stream.X.shape[1])]
        self.contexts = [dict(zip(names, row, strict=True)) for row in stream.X.tolist()]
        self.format_per_event = format_per_event
        self.shared = [] if format_per_event else [self._format(c) for c in self.contexts]
        self.rng = np.random.default_rng([seed, 0x77])
        self._pmf: list[float] = []
        self._line = ""
        if format_per_event:
            self.name += " incl. formatting the context"

    @staticmethod
    def _format(context: dict[str, float]) -> str:
        return "shared |s " + " ".join(f"{k}:{v:.4f}" for k, v in context.items())

    def choose(self, t: int) -> int:
        self._line = self._format(self.contexts[t]) if self.format_per_event else self.shared[t]
        pmf = self.vw.predict([self._line, *self.actions])
        self._pmf = pmf
        u = self.rng.random() * sum(pmf)
        acc = 0.0
        for j, p in enumerate(pmf):
            acc += p
            if u < acc:
                return j
        return len(pmf) - 1

    def learn(self, t: int, column: int, reward: float) -> None:
        lines = [self._line, *self.actions]
        lines[1 + column] = f"0:{-reward}:{self._pmf[column]} {self.actions[column]}"
        self.vw.learn(lines)

    def close(self) -> None:
        self.vw.finish()


# -- measurement --------------------------------------------------------------------------------
@dataclass
class Run:
    name: str
    events: int
    seconds: float
    reward: float
    regret: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")


def closed_loop(contender: Contender, stream: Stream, max_events: int | None = None,
                budget: float | None = None, start: int = 0) -> Run:
    """Choose and learn event at a time (immediate feedback), cycling over the stream if needed.

    Stops after ``max_events`` or once ``budget`` seconds have passed (checked every 256 events),
    whichever comes first. Reward and pseudo-regret (best expected minus chosen expected) are summed.
    """
    T = stream.steps
    rewards, expected = stream.rewards, stream.expected
    oracle = stream.oracle_expected()
    choose, learn = contender.choose, contender.learn
    limit = max_events if max_events is not None else 1 << 62
    total = regret = 0.0
    n = 0
    clock = time.perf_counter
    t0 = clock()
    deadline = t0 + budget if budget is not None else float("inf")
    while n < limit:
        stop = min(limit, n + 256)
        while n < stop:
            t = (start + n) % T
            j = choose(t)
            r = float(rewards[t, j])
            learn(t, j, r)
            total += r
            regret += oracle[t] - expected[t, j]
            n += 1
        if clock() >= deadline:
            break
    return Run(contender.name, n, clock() - t0, total, float(regret))


def timed(fn: Callable[[], int], budget: float = 2.0, min_repeats: int = 1) -> tuple[int, float]:
    """Call ``fn`` (returns events processed) until ``budget`` seconds have passed; (events, seconds)."""
    clock = time.perf_counter
    events, t0 = 0, clock()
    repeats = 0
    while repeats < min_repeats or clock() - t0 < budget:
        events += fn()
        repeats += 1
    return events, clock() - t0


def world_stream(arms: int, dim: int, seed: int, steps: int, **kw) -> Stream:
    return draw_stream(WorldConfig(arms=arms, dim=dim, seed=seed, **kw), steps)


# -- output -------------------------------------------------------------------------------------
def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths,
                                                                                          strict=True)))
    out = [line, "-" * len(line)]
    for r in cells:
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths,
                                                                                                strict=True))))
    return "\n".join(out)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,d}"
    return str(value)


def machine() -> dict:
    return {"python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count(),
            "machine": platform.machine()}


def emit_json(name: str, payload: dict) -> None:
    """One JSON line, prefixed so it can be grepped out of the printed output."""
    print("JSON " + json.dumps({"benchmark": name, **payload, "machine": machine()}, sort_keys=True))
