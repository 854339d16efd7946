"""Versioned checkpoints of models in a SQL database (SQLAlchemy: SQLite by default, PostgreSQL).

A checkpoint row holds, for one model and one shard: the model configuration (learner kind,
hyper-parameters, features, reward, join windows), the learner state (arrays as ``.npz`` without
pickle, metadata as JSON), the join state (JSON), counters, the source position reached (a log
offset, or Kafka offsets per topic-partition) and a created-at time. Versions increase per model,
across shards, so "the newest version of a model" is well defined; a model served from several
shards is the merge of each shard's newest row.

Several rows (one per shard) are written in one transaction by :meth:`CheckpointStore.save_many`:
parameters, join state and offsets become durable together or not at all.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from banditloop.core.state_codec import decode_state, encode_state
from banditloop.operators.base import LearnerState

DEFAULT_DB_URL = "sqlite:///banditloop.db"
DEFAULT_SHARD = "main"


def default_db_url() -> str:
    """``$BANDITLOOP_DB`` or an SQLite file in the current directory."""
    return os.environ.get("BANDITLOOP_DB", DEFAULT_DB_URL)


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


@dataclass
class Checkpoint:
    """One shard's checkpoint, decoded: the model configuration (``ModelConfig.to_dict()``), the
    learner state, the join state, counters and the source position it covers."""

    model: str
    config: dict[str, Any]
    state: LearnerState
    shard: str = DEFAULT_SHARD
    join_state: bytes | None = None
    counters: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    version: int | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class ModelSummary:
    model: str
    learner: str
    versions: int
    latest_version: int
    shards: tuple[str, ...]
    created_at: datetime
    counters: dict[str, Any]


def _row_to_checkpoint(row: CheckpointRow) -> Checkpoint:
    return Checkpoint(model=row.model, shard=row.shard, version=row.version, config=row.config,
                      state=decode_state(row.state_arrays, row.state_meta), join_state=row.join_state,
                      counters=row.counters, source=row.source, created_at=_aware(row.created_at))


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


class CheckpointStore:
    """Reads and writes checkpoints; safe to share between threads (one engine, short sessions).

    ``url`` is a SQLAlchemy URL (``sqlite:///banditloop.db``, ``postgresql+psycopg://...``); versions
    increase per model; the newest ``keep`` versions of each shard are kept.

    >>> from banditloop.operators.ucb1 import UCB1
    >>> store = CheckpointStore("sqlite://")                      # in memory
    >>> store.save(Checkpoint(model="m", config={}, state=UCB1().export_state()))
    1
    >>> store.latest("m").version, store.latest_version("m")
    (1, 1)
    """

    def __init__(self, url: str | None = None, *, keep: int = 20, engine: Engine | None = None) -> None:
        self.url = url or default_db_url()
        self.keep = keep
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if self.url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
        self.engine = engine or create_engine(self.url, **kwargs)
        Base.metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # -- writing --------------------------------------------------------------------------------
    def save(self, checkpoint: Checkpoint) -> int:
        return self.save_many([checkpoint])[0]

    def save_many(self, checkpoints: Sequence[Checkpoint], *, retries: int = 10) -> list[int]:
        """Write the checkpoints (usually one per shard of one model) in one transaction.

        Returns their versions. Versions come from the per-model counter row; two writers creating
        the same model's counter at once make one transaction fail, and it is retried.
        """
        if not checkpoints:
            return []
        for attempt in range(retries):
            try:
                return self._save_once(checkpoints)
            except IntegrityError:
                if attempt == retries - 1:
                    raise
                time.sleep(random.uniform(0.0, 0.01 * 2**attempt))
        raise AssertionError("unreachable")

    def _save_once(self, checkpoints: Sequence[Checkpoint]) -> list[int]:
        now = datetime.now(UTC)
        versions: list[int] = []
        with Session(self.engine) as session, session.begin():
            next_version: dict[str, int] = {}
            for model in sorted({cp.model for cp in checkpoints}):  # fixed order: no lock-order deadlock
                count = sum(1 for cp in checkpoints if cp.model == model)
                next_version[model] = self._allocate(session, model, count)
            for cp in checkpoints:
                version = next_version[cp.model]
                next_version[cp.model] += 1
                arrays, meta = encode_state(cp.state)
                session.add(CheckpointRow(
                    model=cp.model, shard=cp.shard, version=version, learner=cp.state.kind,
                    config=cp.config, state_arrays=arrays, state_meta=meta, join_state=cp.join_state,
                    counters=_jsonable(cp.counters), source=_jsonable(cp.source), created_at=now))
                versions.append(version)
            session.flush()
            for model in next_version:
                self._prune(session, model)
        for cp, version in zip(checkpoints, versions, strict=True):
            cp.version, cp.created_at = version, now
        return versions

    @staticmethod
    def _allocate(session: Session, model: str, count: int) -> int:
        """Reserve ``count`` consecutive versions of ``model``; returns the first."""
        bumped = session.execute(update(ModelRow).where(ModelRow.name == model)
                                 .values(next_version=ModelRow.next_version + count)
                                 .returning(ModelRow.next_version)).first()
        if bumped is not None:
            return bumped[0] - count
        first = (session.scalar(select(func.max(CheckpointRow.version)).where(CheckpointRow.model == model))
                 or 0) + 1
        session.add(ModelRow(name=model, next_version=first + count))
        session.flush()  # a concurrent creator makes this fail: the caller retries
        return first

    def _prune(self, session: Session, model: str) -> None:
        """Keep the newest ``keep`` rows of each shard of ``model``."""
        if self.keep <= 0:
            return
        shards = session.scalars(select(CheckpointRow.shard).where(CheckpointRow.model == model).distinct())
        for shard in list(shards):
            ids = session.scalars(select(CheckpointRow.id)
                                  .where(CheckpointRow.model == model, CheckpointRow.shard == shard)
                                  .order_by(CheckpointRow.version.desc()).offset(self.keep)).all()
            if ids:
                session.execute(delete(CheckpointRow).where(CheckpointRow.id.in_(ids)))

    # -- reading --------------------------------------------------------------------------------
    def latest(self, model: str, shard: str = DEFAULT_SHARD) -> Checkpoint | None:
        with Session(self.engine) as session:
            row = session.scalars(select(CheckpointRow)
                                  .where(CheckpointRow.model == model, CheckpointRow.shard == shard)
                                  .order_by(CheckpointRow.version.desc()).limit(1)).first()
            return None if row is None else _row_to_checkpoint(row)

    def latest_version(self, model: str) -> int | None:
        """The newest version number of ``model`` (cheap: for hot-reload polling)."""
        with Session(self.engine) as session:
            return session.scalar(select(func.max(CheckpointRow.version)).where(CheckpointRow.model == model))

    def latest_per_shard(self, model: str, shards: Iterable[str] | None = None) -> list[Checkpoint]:
        """The newest checkpoint of every shard of ``model`` (or of the given shards)."""
        with Session(self.engine) as session:
            newest = (select(CheckpointRow.shard, func.max(CheckpointRow.version).label("v"))
                      .where(CheckpointRow.model == model).group_by(CheckpointRow.shard).subquery())
            query = select(CheckpointRow).join(
                newest, (CheckpointRow.shard == newest.c.shard) & (CheckpointRow.version == newest.c.v)
            ).where(CheckpointRow.model == model).order_by(CheckpointRow.shard)
            if shards is not None:
                query = query.where(CheckpointRow.shard.in_(list(shards)))
            return [_row_to_checkpoint(row) for row in session.scalars(query)]

    def versions(self, model: str) -> list[tuple[int, str, datetime]]:
        with Session(self.engine) as session:
            rows = session.execute(select(CheckpointRow.version, CheckpointRow.shard, CheckpointRow.created_at)
                                   .where(CheckpointRow.model == model).order_by(CheckpointRow.version))
            return [(v, s, _aware(c)) for v, s, c in rows]

    def models(self) -> list[ModelSummary]:
        summaries = []
        with Session(self.engine) as session:
            names = session.scalars(select(CheckpointRow.model).distinct().order_by(CheckpointRow.model)).all()
            for name in names:
                rows = session.execute(select(CheckpointRow.version, CheckpointRow.shard, CheckpointRow.learner,
                                              CheckpointRow.created_at)
                                       .where(CheckpointRow.model == name)
                                       .order_by(CheckpointRow.version)).all()
                latest_by_shard: dict[str, int] = {}
                for version, shard, _, _ in rows:
                    latest_by_shard[shard] = version
                counters: dict[str, Any] = {}
                for cp_counters in session.scalars(select(CheckpointRow.counters).where(
                        CheckpointRow.model == name, CheckpointRow.version.in_(list(latest_by_shard.values())))):
                    for key, value in (cp_counters or {}).items():
                        if isinstance(value, int | float):
                            counters[key] = counters.get(key, 0) + value
                last = rows[-1]
                summaries.append(ModelSummary(model=name, learner=last[2], versions=len(rows),
                                              latest_version=last[0], shards=tuple(sorted(latest_by_shard)),
                                              created_at=_aware(last[3]), counters=counters))
        return summaries


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    """Round-trip through JSON so that numpy scalars and tuples are stored as plain values."""
    return json.loads(json.dumps(data, default=_default))


def _default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, set | tuple):
        return list(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
