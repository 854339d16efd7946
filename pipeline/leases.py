"""Shard leases: fencing epochs that keep a stale worker from writing over a newer owner's state.

A consume worker claims the shards it is assigned (:func:`claim_shards`, the epoch goes up by one)
*before* it reads their checkpoints, and every checkpoint it writes is fenced: in the same
transaction, :func:`check_fence` verifies that each shard is still at the epoch the worker claimed,
locking the lease rows so that a concurrent claim waits for the write to finish. A worker that was
paused (or cut off) while the group gave its partitions to another can then no longer roll the
served model back in time: its write raises :class:`LeaseLost` and nothing is written.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from banditloop.pipeline.checkpoint_tables import leases_table


class LeaseLost(RuntimeError):
    """A checkpoint was refused: another worker has claimed these shards since this one did."""

    def __init__(self, model: str, shards: Sequence[str]) -> None:
        self.model = model
        self.shards = list(shards)
        super().__init__(f"model {model!r}: shards {', '.join(self.shards)} were claimed by another worker")


def claim_shards(engine: Engine, model: str, shards: Iterable[str], owner: str, *, retries: int = 10) -> dict[str, int]:
    """Take ``shards`` of ``model`` over for ``owner``; returns shard -> new epoch."""
    wanted = sorted(set(shards))  # sorted: concurrent claimers lock rows in the same order
    if not wanted:
        return {}
    for attempt in range(retries):
        try:
            return _claim_once(engine, model, wanted, owner)
        except IntegrityError:  # two first claims of a shard at once: retry, the row exists now
            if attempt == retries - 1:
                raise
            time.sleep(random.uniform(0.0, 0.01 * 2**attempt))
    raise AssertionError("unreachable")


def _claim_once(engine: Engine, model: str, shards: list[str], owner: str) -> dict[str, int]:
    now = datetime.now(UTC)
    epochs: dict[str, int] = {}
    with engine.begin() as session:
        for shard in shards:
            key = (leases_table.c.model == model) & (leases_table.c.shard == shard)
            epoch = session.scalar(select(leases_table.c.epoch).where(key).with_for_update())
            if epoch is None:
                epoch = 1
                session.execute(insert(leases_table).values(model=model, shard=shard, epoch=epoch, owner=owner,
                                                            claimed_at=now))
            else:
                epoch += 1
                session.execute(update(leases_table).where(key).values(epoch=epoch, owner=owner, claimed_at=now))
            epochs[shard] = epoch
    return epochs


def check_fence(session: Connection, model: str, fence: Mapping[str, int]) -> None:
    """Inside a write's transaction: :class:`LeaseLost` unless every shard is still at its epoch."""
    rows = session.execute(select(leases_table.c.shard, leases_table.c.epoch)
                           .where(leases_table.c.model == model, leases_table.c.shard.in_(sorted(fence)))
                           .order_by(leases_table.c.shard).with_for_update())
    held = {shard: epoch for shard, epoch in rows}
    lost = [shard for shard, epoch in sorted(fence.items()) if held.get(shard) != epoch]
    if lost:
        raise LeaseLost(model, lost)


def shard_leases(engine: Engine, model: str) -> dict[str, tuple[int, str]]:
    """shard -> (epoch, owner) of every claimed shard of ``model``."""
    with engine.connect() as session:
        c = leases_table.c
        rows = session.execute(select(c.shard, c.epoch, c.owner).where(c.model == model))
        return {shard: (epoch, owner) for shard, epoch, owner in rows}
