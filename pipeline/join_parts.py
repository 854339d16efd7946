"""The parts of join states stored in parts (store side; kind ``PARTS`` of
:mod:`banditloop.pipeline.join_state`).

A checkpoint's full snapshot is written as a head, in the checkpoint row, and parts of a few MB, rows
of ``banditloop_join_parts`` keyed by (model, version, part), inserted one at a time in the same
transaction as the checkpoint row, its parameters and offsets: a crash between two parts rolls the
whole checkpoint back, and the previous one stays as it was. Reading a version attaches its parts to
its head (:func:`attach`); retention drops the parts of versions whose join state it drops
(:func:`forget`). Join states stored as one value (every kind but ``PARTS``) have no parts.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, func, insert, literal, select
from sqlalchemy.engine import Connection

from banditloop.pipeline.checkpoint_tables import join_parts_table
from banditloop.pipeline.join_state import PARTS, Parted, read_header

parts_cols = join_parts_table.c


def is_parted(join_state: bytes | None) -> bool:
    """Whether ``join_state`` is the head of a join state stored in parts."""
    if not join_state:
        return False
    header = read_header(join_state)
    return header is not None and header.kind == PARTS


def write(session: Connection, model: str, shard: str, version: int, join_state: bytes | None,
          source_version: int | None) -> bytes | None:
    """Write the parts of ``join_state`` for ``version``; returns what the checkpoint row stores (the head).

    A :class:`Parted` state's parts are built and written one at a time. A head without its parts (a
    stored checkpoint read without them, :meth:`CheckpointStore.latest_per_shard`, saved again) has
    its parts copied from ``source_version`` in the database, without reading them."""
    if not is_parted(join_state):
        return join_state
    assert join_state is not None
    parts = getattr(join_state, "parts", None)
    if parts is None:
        if source_version is None:
            raise ValueError("a join state stored in parts is saved again without its parts")
        copied = session.execute(insert(join_parts_table).from_select(
            ["model", "version", "part", "shard", "data"],
            select(parts_cols.model, literal(version), parts_cols.part, literal(shard), parts_cols.data)
            .where(parts_cols.model == model, parts_cols.version == source_version))).rowcount
        if not copied:
            raise ValueError(f"the parts of the join state of {model!r} version {source_version} are gone")
        return bytes(join_state)
    total = len(join_state)
    iterator = iter(parts())
    try:
        for number, data in enumerate(iterator):
            session.execute(insert(join_parts_table).values(model=model, version=version, part=number, shard=shard,
                                                            data=data))
            total += len(data)
            del data
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()  # (a generator stopped by an error drops the part it was building)
    if isinstance(join_state, Parted):
        join_state.stored_bytes = total
    return bytes(join_state)


def attach(session: Connection, model: str, version: int, join_state: bytes | None) -> bytes | None:
    """``join_state`` as read from ``version``'s row, with its parts when it is stored in parts."""
    if not is_parted(join_state):
        return join_state
    rows = tuple(session.scalars(select(parts_cols.data).where(
        parts_cols.model == model, parts_cols.version == version).order_by(parts_cols.part)))
    out = Parted(join_state)  # type: ignore[arg-type]
    out.parts = lambda: iter(rows)
    return out


def size(session: Connection, model: str, version: int) -> int:
    """The bytes of ``version``'s parts (0 without)."""
    return int(session.scalar(select(func.coalesce(func.sum(func.length(parts_cols.data)), 0)).where(
        parts_cols.model == model, parts_cols.version == version)) or 0)


def forget(session: Connection, model: str, *, shard: str | None = None, upto: int | None = None,
           below: int | None = None, keep: Iterable[int] = ()) -> None:
    """Drop the parts of ``model``'s versions up to ``upto`` (or below ``below``) of ``shard`` (or of
    every shard), except those of the versions in ``keep``."""
    query = delete(join_parts_table).where(parts_cols.model == model)
    if shard is not None:
        query = query.where(parts_cols.shard == shard)
    if upto is not None:
        query = query.where(parts_cols.version <= upto)
    if below is not None:
        query = query.where(parts_cols.version < below)
    kept = list(keep)
    if kept:
        query = query.where(parts_cols.version.not_in(kept))
    session.execute(query)
