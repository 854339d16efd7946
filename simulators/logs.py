"""Event logs from the simulated world: JSON lines sorted by event time, as a producer would emit them.

A log is what an off-line learner or an off-policy evaluator sees: impressions with the logging
policy's propensities, and clicks and conversions that arrive later (the configured delays), all
interleaved in event-time order. Ties are broken as the pipeline processes them (an impression
before its feedback, see :data:`banditloop.core.events.TYPE_ORDER`), then by generation order.

Events are written as they become due, keeping only the pending feedback in memory, so logs of
millions of events need no more memory than the feedback in flight.
"""

from __future__ import annotations

import gzip
import heapq
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import numpy as np

from banditloop.core.events import TYPE_ORDER, encode_event
from banditloop.simulators.config import WorldConfig
from banditloop.simulators.world import Request, World

#: logging policies: uniform random (the default; propensity 1/m), the oracle (deterministic,
#: propensity 1) and ε-greedy around the oracle (ε = 0.1: known, non-uniform propensities)
LOG_POLICIES = ("random", "oracle", "egreedy")
EGREEDY_EPSILON = 0.1


@dataclass(frozen=True)
class LogSummary:
    path: Path
    steps: int
    impressions: int
    clicks: int
    conversions: int
    #: sum over impressions of the logged arm's expected reward, and of the best candidate's
    expected_reward: float
    oracle_expected_reward: float

    @property
    def events(self) -> int:
        return self.impressions + self.clicks + self.conversions


def _log_choice(policy: str, req: Request, rng: np.random.Generator) -> tuple[str, float]:
    m = len(req.candidates)
    if policy == "random":
        return req.candidates[int(rng.integers(m))], 1.0 / m
    best = req.oracle_arm
    if policy == "oracle":
        return best, 1.0
    # ε-greedy: explore uniformly with probability ε, else the oracle's arm
    arm = req.candidates[int(rng.integers(m))] if rng.random() < EGREEDY_EPSILON else best
    return arm, (1.0 - EGREEDY_EPSILON) * (arm == best) + EGREEDY_EPSILON / m


def _open(path: Path) -> IO[bytes]:
    return cast(IO[bytes], gzip.open(path, "wb", compresslevel=5) if path.suffix == ".gz" else open(path, "wb"))


#: a custom logging policy: ``(request, rng) -> (arm, propensity)``
LogPolicy = Callable[[Request, np.random.Generator], tuple[str, float]]


def generate_log(config: WorldConfig, policy: str | LogPolicy = "random", steps: int = 10_000,
                 path: str | Path = "events.jsonl") -> LogSummary:
    """Run ``policy`` on a :class:`World` for ``steps`` requests and write every event to ``path``.

    ``policy`` is one of :data:`LOG_POLICIES` or a callable ``(request, rng) -> (arm, propensity)``
    (logged under its ``__name__``). ``path`` ending in ``.gz`` is gzip-compressed. The policy's
    randomness comes from its own generator (seeded from ``config.seed``), so the world's draws are
    those of any other run on the same seed.
    """
    if callable(policy):
        choose, name = policy, getattr(policy, "__name__", "custom")
    elif policy in LOG_POLICIES:
        def choose(req: Request, rng: np.random.Generator) -> tuple[str, float]:
            return _log_choice(policy, req, rng)
        name = policy
    else:
        raise ValueError(f"unknown logging policy {policy!r}; choose from {', '.join(LOG_POLICIES)}")
    path = Path(path)
    world = World(config)
    rng = np.random.default_rng([config.seed, 0x106])
    pending: list[tuple[float, int, int, bytes]] = []
    seq = 0
    impressions = clicks = conversions = 0
    expected = oracle = 0.0
    with _open(path) as out:
        for _ in range(steps):
            req = world.next_request()
            while pending and pending[0][0] < req.ts:
                out.write(heapq.heappop(pending)[3] + b"\n")
            arm, propensity = choose(req, rng)
            outcome = world.respond(req, arm, propensity=propensity, policy=name)
            for event in outcome.events:
                seq += 1
                heapq.heappush(pending, (event.ts, TYPE_ORDER[type(event)], seq, encode_event(event)))
            impressions += 1
            clicks += outcome.click is not None
            conversions += outcome.conversion is not None
            expected += outcome.expected_reward
            oracle += outcome.oracle_expected_reward
        while pending:
            out.write(heapq.heappop(pending)[3] + b"\n")
    return LogSummary(path=path, steps=steps, impressions=impressions, clicks=clicks, conversions=conversions,
                      expected_reward=expected, oracle_expected_reward=oracle)


def read_log(path: str | Path) -> list[bytes]:
    """The raw lines of a log (``.gz`` or plain), without trailing newlines."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return [line.rstrip(b"\n") for line in f if line.strip()]


__all__ = ["generate_log", "read_log", "LogSummary", "LOG_POLICIES"]
