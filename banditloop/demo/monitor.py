"""The demo's model in the checkpoint database: what the consumer has durably learned, sampled once a
second while the run lasts, and the tidying after it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from banditloop.demo.stats import DemoStats
from banditloop.pipeline.checkpoints import CheckpointStore

log = logging.getLogger("banditloop.demo")

#: the learned counters summed over the shards
COUNTERS = ("impressions", "clicks", "conversions", "rewarded", "unmatched", "late", "duplicates", "ignored")


def learned_totals(store: CheckpointStore, model: str, counters: Iterable[str] = COUNTERS) -> dict[str, int]:
    """``counters`` summed over the newest checkpoint of each shard of ``model``, with the newest
    ``version`` and the number of ``shards``."""
    totals: dict[str, int] = {"version": 0, "shards": 0}
    for cp in store.latest_per_shard(model):
        totals["version"] = max(totals["version"], cp.version or 0)
        totals["shards"] += 1
        for key in counters:
            totals[key] = totals.get(key, 0) + int(cp.counters.get(key, 0))
    return totals


class CheckpointMonitor:
    """Reads the model's newest checkpoint per shard once a second: what the consumer has learned
    (durably), hence the checkpoint backlog behind what the users were served
    (:class:`~banditloop.demo.stats.MonitorSample`). ``elapsed`` is the load's clock."""

    def __init__(self, db: str, model: str, stats: DemoStats, elapsed: Callable[[], float]) -> None:
        self.store = CheckpointStore(db)
        self.model = model
        self.stats = stats
        self.elapsed = elapsed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checkpoint-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.sample()

    def sample(self) -> dict[str, int] | None:
        """Read the checkpoints now and record the sample; None when the database did not answer."""
        try:
            learned = learned_totals(self.store, self.model)
        except Exception:  # the database is busy or briefly locked: try again next second
            log.debug("checkpoint poll failed", exc_info=True)
            return None
        self.stats.record_learned(self.elapsed(), learned)
        return learned

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.store.close()


def final_learned(db: str, model: str) -> dict[str, int]:
    """The learned counters of ``model`` once the consumer has stopped."""
    store = CheckpointStore(db)
    try:
        return learned_totals(store, model)
    finally:
        store.close()


def compact_model(db: str, model: str) -> int | None:
    """Keep only the final checkpoint of each shard of ``model``; returns its (new) newest version.

    The consumer keeps its 20 newest versions per shard, a few MB per demo run that nobody needs
    once the run is over (their Kafka offsets refer to a broker that no longer exists). Saving the
    final shards again through a store with ``keep=1`` prunes the older versions with the store's
    own pruning, in one transaction; the final model stays available to ``models`` and ``serve``.
    An SQLite file is then vacuumed, or it would keep its size.
    """
    store = CheckpointStore(db, keep=1)
    try:
        final = store.latest_per_shard(model)
        kept = max(store.save_many(final)) if final else None
        if store.engine.dialect.name == "sqlite":  # SQLite keeps the freed pages in the file until VACUUM
            with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM")
        return kept
    finally:
        store.close()
