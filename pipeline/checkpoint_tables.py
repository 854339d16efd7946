"""The database tables behind :mod:`banditloop.pipeline.checkpoints` (SQLAlchemy ORM)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

DEFAULT_SHARD = "main"
#: model and shard names are stored in columns of this width
MAX_NAME_LENGTH = 200


def check_name(kind: str, name: str) -> str:
    """``name`` if it fits a model or shard column; else ValueError (before any work is done, not
    when the first checkpoint is written)."""
    if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise ValueError(f"{kind} name must be 1 to {MAX_NAME_LENGTH} printable characters, got {name[:40]!r}"
                         f"{'...' if len(name) > 40 else ''} ({len(name)} characters)")
    return name


class Base(DeclarativeBase):
    pass


class ModelRow(Base):
    """Per-model version counter. Updating it first in a transaction serialises writers of one
    model (a row lock in PostgreSQL, the write lock in SQLite), so versions only ever increase even
    when old rows are pruned concurrently."""

    __tablename__ = "banditloop_models"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    next_version: Mapped[int] = mapped_column(Integer)


class CheckpointRow(Base):
    __tablename__ = "banditloop_checkpoints"
    __table_args__ = (UniqueConstraint("model", "version", name="uq_checkpoint_model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(200), index=True)
    shard: Mapped[str] = mapped_column(String(200), default=DEFAULT_SHARD)
    version: Mapped[int] = mapped_column(Integer)
    learner: Mapped[str] = mapped_column(String(50))
    config: Mapped[dict] = mapped_column(JSON)
    state_arrays: Mapped[bytes] = mapped_column(LargeBinary)
    state_meta: Mapped[str] = mapped_column(Text)
    join_state: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    counters: Mapped[dict] = mapped_column(JSON)
    source: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LeaseRow(Base):
    """Who may write a shard of a model: a fencing epoch. A consume worker *claims* the shards it is
    assigned (the epoch goes up by one) before it reads their checkpoints, and every checkpoint it
    writes checks, in the same transaction, that the epochs are still its own. A worker that was
    paused or cut off while another took its partitions over can then no longer write: its stale
    state would otherwise roll the served model back in time."""

    __tablename__ = "banditloop_shard_leases"

    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    shard: Mapped[str] = mapped_column(String(200), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer)
    owner: Mapped[str] = mapped_column(String(200))
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class JoinLinkRow(Base):
    """A checkpoint whose join state is a delta, and the version it applies on top of (its base),
    for one shard. Versions without a row hold a full join state (or none). Restoring a version
    follows these links back to a full snapshot; retention keeps every link that the versions a
    shard can resume from still need (:mod:`banditloop.pipeline.join_links`). An additive table:
    ``create_all`` adds it to databases written before it existed, which have no deltas."""

    __tablename__ = "banditloop_join_links"

    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    shard: Mapped[str] = mapped_column(String(200))
    base: Mapped[int] = mapped_column(Integer)
