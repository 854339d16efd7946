"""The demo's results as one JSON-ready dictionary (also written to ``demo-summary.json``)."""

from __future__ import annotations

import math
from typing import Any

from banditloop.demo.options import DemoOptions
from banditloop.demo.stats import DemoStats


def summarize(options: DemoOptions, model: str, stats: DemoStats, learned: dict[str, int], initial_version: int,
              dropped: int, interrupted: bool, seconds: float) -> dict[str, Any]:
    """The run's figures. ``checkpoint_backlog_at_stop`` is the impressions served that the final
    checkpoints do not hold (0 when the consumer caught up), not a Kafka lag."""
    n = max(stats.ok, 1)
    load_seconds = len(stats.buckets) or 1
    last = tail_ctr(stats, fraction=0.2)
    gap = stats.oracle - stats.random
    return {
        "command": "demo",
        "model": model,
        "learner": options.learner,
        "db": options.db,
        "arms": options.arms,
        "dim": options.dim,
        "seed": options.seed,
        "rate": options.rate,
        "interrupted": interrupted,
        "requests": stats.ok,
        "request_errors": dict(stats.errors),
        "requests_per_second": stats.ok / load_seconds,
        "ctr_served": stats.served / n,
        "ctr_served_realised": stats.clicks / n,
        "ctr_oracle": stats.oracle / n,
        "ctr_random": stats.random / n,
        "ctr_served_last_20pct": last[0],
        "ctr_oracle_last_20pct": last[1],
        "ctr_random_last_20pct": last[2],
        "regret": stats.oracle - stats.served,
        "random_regret": gap,
        "captured_vs_random": (stats.served - stats.random) / gap if gap > 0 else 0.0,
        "captured_vs_random_last_20pct": (last[0] - last[2]) / (last[1] - last[2]) if last[1] > last[2] else 0.0,
        "clicks_sent": stats.feedback_sent.get("click", 0),
        "conversions_sent": stats.feedback_sent.get("conversion", 0),
        "feedback_errors": dict(stats.feedback_errors),
        "feedback_dropped_at_stop": dropped,
        "initial_version": initial_version,
        "final_version": learned.get("version", 0),
        "versions_served": len(stats.versions),
        "first_version_served": stats.versions[0][1] if stats.versions else None,
        "last_version_served": stats.version,
        "reloads_seen": max(0, len(stats.versions) - 1),
        "learned": learned,
        "checkpoint_backlog_at_stop": max(0, stats.ok - learned.get("impressions", 0)),
        "seconds": round(seconds, 3),
    }


def tail_ctr(stats: DemoStats, fraction: float) -> tuple[float, float, float]:
    """(served, oracle, random) expected CTR over the last ``fraction`` of the run."""
    buckets = stats.buckets[-max(1, math.ceil(len(stats.buckets) * fraction)):]
    n = sum(b.n for b in buckets) or 1
    return (sum(b.served for b in buckets) / n, sum(b.oracle for b in buckets) / n,
            sum(b.random for b in buckets) / n)
