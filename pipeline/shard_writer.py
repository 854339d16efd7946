"""Making a consume worker's shards durable: leases claimed, checkpoints written fenced."""

from __future__ import annotations

import time
from collections.abc import Sequence

from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.pipeline.shard import Shard


class ShardWriter:
    """Claims the leases of the shards a worker is assigned and writes their checkpoints in one
    transaction, fenced by those leases (:meth:`CheckpointStore.save_many`), so that a worker that
    lost its partitions while paused cannot write stale state over the new owner's. Counts
    checkpoints, failed attempts and lost leases; ``last_seconds`` is the last write's duration."""

    def __init__(self, store: CheckpointStore, model: str, owner: str) -> None:
        self.store = store
        self.model = model
        self.owner = owner
        #: shard name -> fencing epoch claimed for it
        self.epochs: dict[str, int] = {}
        self.checkpoints = 0
        self.failures = 0
        self.leases_lost = 0
        self.last_seconds: float | None = None

    def claim(self, shards: Sequence[str]) -> None:
        """Take ``shards`` over (before reading their checkpoints: see :class:`leases_table`)."""
        self.epochs.update(self.store.claim(self.model, shards, self.owner))

    def release(self, shards: Sequence[str]) -> None:
        for name in shards:
            self.epochs.pop(name, None)

    def save(self, shards: Sequence[Shard]) -> None:
        """One fenced transaction for ``shards``; on success they are clean and carry their versions.
        Raises :class:`LeaseLost` (nothing written) or the database's error."""
        started = time.perf_counter()
        snapshots = [s.run.snapshot(s.source()) for s in shards]
        self.store.save_many(snapshots, fence={cp.shard: self.epochs[cp.shard] for cp in snapshots})
        for shard, cp in zip(shards, snapshots, strict=True):
            shard.run.saved(cp)
            shard.dirty = False
        self.checkpoints += 1
        self.last_seconds = time.perf_counter() - started
