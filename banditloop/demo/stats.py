"""What the simulated users saw, second by second: expected rewards of the served arm, the oracle's
and uniform random's (the world knows them, so regret is exact), plus counters and the checkpoint
backlog sampled by the monitor."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

#: the rolling window (seconds) of the "recent CTR" figures
RECENT_WINDOW = 5


@dataclass
class Bucket:
    """One second of the run (by time since the load started)."""

    n: int = 0
    served: float = 0.0
    oracle: float = 0.0
    random: float = 0.0
    clicks: int = 0


@dataclass(frozen=True)
class MonitorSample:
    """One look at the model's checkpoints.

    ``backlog`` is the *checkpoint backlog*: impressions the users were served that no checkpoint holds
    yet (served minus learned-and-checkpointed). It is not the consumer's Kafka lag (messages behind the
    partitions' high watermarks, which the consumer logs): it also counts impressions the consumer has
    read and learned but not yet checkpointed, and those still on their way through the scorer's producer.
    """

    t: float
    learned: int
    backlog: int
    version: int


class DemoStats:
    """Per-second sums of expected rewards (served, oracle, random) and counters; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.buckets: list[Bucket] = []
        self.ok = 0
        self.errors: Counter[str] = Counter()
        self.feedback_sent: Counter[str] = Counter()
        self.feedback_errors: Counter[str] = Counter()
        self.served = self.oracle = self.random = 0.0
        self.clicks = 0
        #: (seconds since start, version) when a newer model version was first served
        self.versions: list[tuple[float, int]] = []
        #: the monitor's samples, once a second
        self.monitor: list[MonitorSample] = []
        self.learned: dict[str, int] = {}

    def record(self, t: float, served: float, oracle: float, random: float, clicked: bool, version: int) -> None:
        """One answered request ``t`` seconds into the load: expected rewards and the version served."""
        with self.lock:
            second = int(t)
            while len(self.buckets) <= second:
                self.buckets.append(Bucket())
            b = self.buckets[second]
            b.n += 1
            b.served += served
            b.oracle += oracle
            b.random += random
            b.clicks += clicked
            self.ok += 1
            self.served += served
            self.oracle += oracle
            self.random += random
            self.clicks += clicked
            if not self.versions or version > self.versions[-1][1]:
                self.versions.append((t, version))

    def record_learned(self, t: float, learned: dict[str, int]) -> MonitorSample:
        """The checkpoints' counters seen ``t`` seconds into the load."""
        with self.lock:
            impressions = learned.get("impressions", 0)
            sample = MonitorSample(t, impressions, max(0, self.ok - impressions), learned.get("version", 0))
            self.learned = learned
            self.monitor.append(sample)
        return sample

    @property
    def version(self) -> int | None:
        return self.versions[-1][1] if self.versions else None

    def recent(self, seconds: int = RECENT_WINDOW) -> tuple[float, float, float, float] | None:
        """(served, oracle, random, realised) CTR over the last ``seconds`` buckets, None before any."""
        with self.lock:
            window = self.buckets[-seconds:]
            n = sum(b.n for b in window)
            if not n:
                return None
            return (sum(b.served for b in window) / n, sum(b.oracle for b in window) / n,
                    sum(b.random for b in window) / n, sum(b.clicks for b in window) / n)

    def backlog(self) -> int | None:
        """The latest checkpoint backlog (see :class:`MonitorSample`), None before the first sample."""
        return self.monitor[-1].backlog if self.monitor else None
