"""The links between checkpoints whose join state is a delta and their bases (store side).

A delta is written only on top of a base that is still stored with its join state (otherwise the
store writes the full snapshot instead), and the chain of every version a shard can resume from
(its newest :data:`~banditloop.pipeline.checkpoints.JOIN_STATE_VERSIONS`) is kept by retention,
however many versions ``--keep`` would otherwise drop. A version is *readable* when its own join
state and every link back to its full snapshot decode; a shard whose newest versions are not falls
back to the newest older one that is (:mod:`banditloop.pipeline.shard_restore`), which is a link
of their chains and therefore kept.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Connection

from banditloop.pipeline import join_parts
from banditloop.pipeline.checkpoint_tables import checkpoints_table, join_links_table
from banditloop.pipeline.join_state import DELTA, read_header

#: no chain is longer than this (a guard against a cycle in a damaged table)
MAX_CHAIN = 100_000


def delta_base(join_state: bytes | None) -> int | None:
    """The base version of a delta join state; None for a full one (or none)."""
    if not join_state:
        return None
    header = read_header(join_state)
    return header.base if header is not None and header.kind == DELTA else None


def base_usable(session: Connection, model: str, shard: str, base: int) -> bool:
    """Whether ``base`` is the shard's newest version and has its join state: a delta may be written on
    it. (A run's base is always the version it last wrote or restored, the newest unless it fell back
    past damaged versions or another writer came in between: then a full snapshot is written.)"""
    # length(), not IS NOT NULL: SQLite reads a whole blob to test it for NULL, but its length from the
    # record header (a 200 MB join state: ~250 ms against 0.2 ms per checkpoint)
    newest = session.execute(select(checkpoints_table.c.version, func.length(checkpoints_table.c.join_state)).where(
        checkpoints_table.c.model == model, checkpoints_table.c.shard == shard)
        .order_by(checkpoints_table.c.version.desc()).limit(1)).first()
    return newest is not None and newest[0] == base and newest[1] is not None


def materialize(session: Connection, model: str, shard: str, base: int, delta: bytes) -> bytes:
    """The full join state that ``delta`` on ``base`` (and its chain) adds up to."""
    from banditloop.pipeline.join import EventJoin

    data = session.scalar(select(checkpoints_table.c.join_state).where(
        checkpoints_table.c.model == model, checkpoints_table.c.shard == shard, checkpoints_table.c.version == base))
    if data is None:
        raise ValueError(f"the join state of {model!r} shard {shard} is a delta on version {base}, which is gone")
    from banditloop.pipeline.join_state import export_parted

    join = EventJoin(sink=None)  # type: ignore[arg-type]  # (nothing is learned: the state is only read)
    join.import_state(delta, (*chain(session, model, shard, base),
                              join_parts.attach(session, model, base, data)))  # type: ignore[arg-type]
    return export_parted(join)  # (this join is not changed again: its parts are written when reached)


def links(session: Connection, model: str, shard: str) -> dict[int, int]:
    """version -> base of every delta of one shard."""
    rows = session.execute(select(join_links_table.c.version, join_links_table.c.base).where(
        join_links_table.c.model == model, join_links_table.c.shard == shard)).all()
    return {int(version): int(base) for version, base in rows}


def needed(link_map: dict[int, int], versions: Iterable[int]) -> set[int]:
    """The older versions the join states of ``versions`` are built on (links of their chains)."""
    out: set[int] = set()
    for version in versions:
        steps = 0
        while version in link_map and steps < MAX_CHAIN:
            version = link_map[version]
            out.add(version)
            steps += 1
    return out


def chain(session: Connection, model: str, shard: str, version: int) -> tuple[bytes, ...]:
    """The join states ``version``'s join state applies on top of, oldest first; :class:`CorruptState`
    when a link is gone or does not match."""
    from banditloop.core.state_codec import CorruptState  # (numpy: not for commands that only list models)

    link_map = links(session, model, shard)
    steps: list[tuple[int, int]] = []  # (version, its base), newest first
    while version in link_map:
        if len(steps) >= MAX_CHAIN:
            raise CorruptState(f"join state chain of version {version} does not end")
        steps.append((version, link_map[version]))
        version = link_map[version]
    if not steps:
        return ()
    c = checkpoints_table.c
    stored = dict(session.execute(select(c.version, c.join_state).where(  # (one query for the whole chain)
        c.model == model, c.shard == shard, c.version.in_([base for _, base in steps]))).all())
    out: list[bytes] = []
    for version, base in steps:
        data = stored.get(base)
        if data is None:
            raise CorruptState(f"the join state of version {version} applies to version {base}, "
                               "whose join state is gone")
        out.append(join_parts.attach(session, model, base, data))  # type: ignore[arg-type]
    out.reverse()
    return tuple(out)


def forget(session: Connection, model: str, versions: Iterable[int] | None = None,
           below: int | None = None) -> None:
    """Drop the link rows of ``versions`` (or of every version below ``below``)."""
    query = delete(join_links_table).where(join_links_table.c.model == model)
    if versions is not None:
        vs = list(versions)
        if not vs:
            return
        query = query.where(join_links_table.c.version.in_(vs))
    if below is not None:
        query = query.where(join_links_table.c.version < below)
    session.execute(query)
