"""Retention of checkpoint versions (see :mod:`banditloop.pipeline.checkpoints`): the newest ``keep``
versions of each shard stay; only the newest :data:`JOIN_STATE_VERSIONS` keep their join state,
with the older versions their join-state chains are built on (:mod:`banditloop.pipeline.join_links`).
A join state stored in parts loses its parts with it (:mod:`banditloop.pipeline.join_parts`).
"""

from __future__ import annotations

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection

from banditloop.pipeline import join_links, join_parts
from banditloop.pipeline.checkpoint_tables import checkpoints_table

#: the newest versions of a shard that keep their join state: the newest, and one to fall back to
JOIN_STATE_VERSIONS = 2


def prune_model(session: Connection, model: str, keep: int) -> int:
    """Apply the retention policy to ``model`` (see the module docstring); returns rows deleted."""
    deleted = 0
    shards = session.scalars(select(checkpoints_table.c.shard).where(checkpoints_table.c.model == model).distinct())
    for shard in list(shards):
        versions = session.scalars(select(checkpoints_table.c.version)
                                   .where(checkpoints_table.c.model == model, checkpoints_table.c.shard == shard)
                                   .order_by(checkpoints_table.c.version.desc())).all()
        in_shard = (checkpoints_table.c.model == model) & (checkpoints_table.c.shard == shard)
        link_map = join_links.links(session, model, shard)
        # the newest versions can be resumed from; the links of their join-state chains stay
        resumable = versions[:min(JOIN_STATE_VERSIONS, keep) if keep > 0 else JOIN_STATE_VERSIONS]
        links_kept = join_links.needed(link_map, resumable)
        version = checkpoints_table.c.version
        not_link = version.not_in(links_kept) if links_kept else version.is_not(None)
        dropped = -1  # join states of versions up to this one are dropped (with the rows up to ``keep``'s)
        if keep > 0 and len(versions) > keep:
            result = (session.execute(delete(checkpoints_table).where(
                in_shard, checkpoints_table.c.version <= versions[keep], not_link)))
            deleted += result.rowcount
            dropped = versions[keep]
        if len(versions) > JOIN_STATE_VERSIONS:
            session.execute(update(checkpoints_table).where(
                in_shard, checkpoints_table.c.version <= versions[JOIN_STATE_VERSIONS], not_link,
                func.length(checkpoints_table.c.join_state).is_not(None))  # (see join_links.base_usable)
                .values(join_state=None))
            dropped = max(dropped, versions[JOIN_STATE_VERSIONS])
        join_links.forget(session, model, [v for v in link_map if v <= dropped and v not in links_kept])
        if dropped >= 0:
            join_parts.forget(session, model, shard=shard, upto=dropped, keep=links_kept)
    return deleted
