"""Versioned checkpoints of models in a SQL database (SQLAlchemy: SQLite by default, PostgreSQL).

A checkpoint row holds, for one model and one shard: the model configuration (learner kind,
hyper-parameters, features, reward, join windows), the learner state (arrays as ``.npz`` without
pickle, metadata as JSON), the join state (a full snapshot, or a delta on an older version of the
shard: :mod:`banditloop.pipeline.join_state`, :mod:`banditloop.pipeline.join_links`), counters, the
source position reached (a log offset, or Kafka offsets per topic-partition) and a created-at time.
Versions increase per model, across shards, so "the newest version of a model" is well defined; a
model served from several shards is the merge of each shard's newest row.

Several rows (one per shard) are written in one transaction by :meth:`CheckpointStore.save_many`:
parameters, join state and offsets become durable together or not at all. A full snapshot of the
join state is written in parts of a few MB, in that transaction (:mod:`banditloop.pipeline.join_parts`).

Retention, applied in the same transaction as every write: the newest ``keep`` versions of each
shard are kept (default :data:`DEFAULT_KEEP`; ``keep=0`` keeps all), and only each shard's newest
:data:`JOIN_STATE_VERSIONS` versions keep their join state (the open impressions, which can be
megabytes), together with the older versions their join-state chains are built on (at most the
compaction interval): other versions keep their parameters, which is all that serving or inspecting
them needs. Resuming (``replay --resume``, a restarted ``consume``) starts from the newest version, or
from the one before it when the newest cannot be read (see :mod:`banditloop.pipeline.shard_restore`).
:meth:`CheckpointStore.prune` applies the same policy on demand (``banditloop models --prune``).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import IntegrityError

from banditloop.pipeline import join_links, join_parts
from banditloop.pipeline.checkpoint_tables import (
    DEFAULT_SHARD,
    checkpoints_table,
    join_links_table,
    models_table,
    prepare,
)
from banditloop.pipeline.database import DEFAULT_DB_URL, DEFAULT_KEEP, default_db_url, sqlite_path
from banditloop.pipeline.leases import LeaseLost, check_fence, claim_shards, shard_leases
from banditloop.pipeline.retention import JOIN_STATE_VERSIONS, prune_model

#: the columns of ``banditloop_checkpoints``
cols = checkpoints_table.c

if TYPE_CHECKING:  # numpy is imported only where states are encoded or decoded (fast `banditloop models`)
    from banditloop.core.state_codec import LearnerState

__all__ = ["DEFAULT_DB_URL", "DEFAULT_KEEP", "DEFAULT_SHARD", "JOIN_STATE_VERSIONS", "POSTGRES_TIMEOUTS",
           "Checkpoint", "checkpoints_table", "CheckpointStore", "LeaseLost", "ModelSummary", "ShardHead",
           "default_db_url"]

#: PostgreSQL session limits, so that no stalled process (a paused worker in the middle of a
#: checkpoint, a stuck query) can hold locks that block the others for long: milliseconds
POSTGRES_TIMEOUTS = {"lock_timeout": 10_000, "statement_timeout": 300_000,
                     "idle_in_transaction_session_timeout": 30_000}


@dataclass
class Checkpoint:
    """One shard's checkpoint, decoded."""

    model: str
    config: dict[str, Any]
    state: LearnerState
    shard: str = DEFAULT_SHARD
    join_state: bytes | None = None
    counters: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    version: int | None = None
    created_at: datetime | None = None
    #: when ``join_state`` is a delta: the join states it applies on top of, oldest first (filled by
    #: :meth:`CheckpointStore.load` and :meth:`CheckpointStore.latest`)
    join_chain: tuple[bytes, ...] = ()
    #: the full join state, written instead of a delta whose base is gone
    full_join_state: Callable[[], bytes] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class ModelSummary:
    model: str
    learner: str
    versions: int
    latest_version: int
    shards: tuple[str, ...]
    created_at: datetime
    counters: dict[str, Any]


@dataclass(frozen=True)
class ShardHead:
    """The newest version of one shard of a model, without its (large) state."""

    shard: str
    version: int
    learner: str
    config: dict[str, Any]
    source: dict[str, Any]
    created_at: datetime


def encode_state(state: LearnerState) -> tuple[bytes, str]:
    """:func:`banditloop.core.state_codec.encode_state`, imported on first use (it needs numpy)."""
    from banditloop.core import state_codec

    return state_codec.encode_state(state)


def decode_state(arrays: bytes, meta: str) -> LearnerState:
    """:func:`banditloop.core.state_codec.decode_state`, imported on first use (it needs numpy)."""
    from banditloop.core import state_codec

    return state_codec.decode_state(arrays, meta)


def _row_to_checkpoint(row: Row[Any], session: Connection | None = None) -> Checkpoint:
    """With ``session``, the join-state chain is read too (:class:`CorruptState` when it is broken)."""
    chain = join_links.chain(session, row.model, row.shard, row.version) if session is not None else ()
    join_state = join_parts.attach(session, row.model, row.version, row.join_state) if session else row.join_state
    return Checkpoint(model=row.model, shard=row.shard, version=row.version, config=row.config,
                      state=decode_state(row.state_arrays, row.state_meta), join_state=join_state,
                      counters=row.counters, source=row.source, created_at=_aware(row.created_at),
                      join_chain=chain)


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

    def __init__(self, url: str | None = None, *, keep: int = DEFAULT_KEEP, engine: Engine | None = None) -> None:
        self.url = url or default_db_url()
        if keep < 0:
            raise ValueError("keep must be >= 0 (0 keeps every version)")
        self.keep = keep
        self._replace: set[str] = set()
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if self.url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
        elif self.url.startswith("postgresql"):
            options = " ".join(f"-c {name}={value}" for name, value in POSTGRES_TIMEOUTS.items())
            kwargs["connect_args"] = {"options": options}
        self.engine = engine or create_engine(self.url, **kwargs)
        prepare(self.engine)

    def replace_on_next_save(self, model: str) -> None:
        """Make the next write of ``model`` delete every earlier row of it, in the same transaction.

        For ``--force``: the model is replaced atomically, so a scorer never merges the new
        version with shards of the model it replaces. Version numbers keep increasing.
        """
        self._replace.add(model)

    def close(self) -> None:
        self.engine.dispose()

    # -- writing --------------------------------------------------------------------------------
    def save(self, checkpoint: Checkpoint) -> int:
        return self.save_many([checkpoint])[0]

    def save_many(self, checkpoints: Sequence[Checkpoint], *, retries: int = 10,
                  fence: Mapping[str, int] | None = None) -> list[int]:
        """Write the checkpoints (usually one per shard of one model) in one transaction.

        Returns their versions. Versions come from the per-model counter row; two writers creating
        the same model's counter at once make one transaction fail, and it is retried. With
        ``fence`` (shard -> epoch from :meth:`claim`), the write happens only while every one of those
        shards is still held at that epoch; otherwise :class:`LeaseLost` and nothing is written.
        """
        if not checkpoints:
            return []
        if fence is not None and len({cp.model for cp in checkpoints}) != 1:
            raise ValueError("a fenced write covers one model")
        for attempt in range(retries):
            try:
                return self._save_once(checkpoints, fence)
            except IntegrityError:
                if attempt == retries - 1:
                    raise
                time.sleep(random.uniform(0.0, 0.01 * 2**attempt))
        raise AssertionError("unreachable")

    def _save_once(self, checkpoints: Sequence[Checkpoint], fence: Mapping[str, int] | None = None) -> list[int]:
        now = datetime.now(UTC)
        versions: list[int] = []
        with self.engine.begin() as session:
            if fence:
                check_fence(session, checkpoints[0].model, fence)
            next_version: dict[str, int] = {}
            for model in sorted({cp.model for cp in checkpoints}):  # fixed order: no lock-order deadlock
                count = sum(1 for cp in checkpoints if cp.model == model)
                next_version[model] = self._allocate(session, model, count)
            for cp in checkpoints:
                version = next_version[cp.model]
                next_version[cp.model] += 1
                arrays, meta = encode_state(cp.state)
                base = self._delta_base(session, cp)
                # (a join state in parts: its parts written one at a time, the row holding its head)
                head = join_parts.write(session, cp.model, cp.shard, version, cp.join_state, cp.version)
                session.execute(insert(checkpoints_table).values(
                    model=cp.model, shard=cp.shard, version=version, learner=cp.state.kind,
                    config=cp.config, state_arrays=arrays, state_meta=meta, join_state=head,
                    counters=_jsonable(cp.counters), source=_jsonable(cp.source), created_at=now))
                if base is not None:
                    session.execute(insert(join_links_table).values(model=cp.model, version=version, shard=cp.shard,
                                                                    base=base))
                versions.append(version)
            for model in next_version:
                first_new = min(v for cp, v in zip(checkpoints, versions, strict=True) if cp.model == model)
                if model in self._replace:
                    session.execute(delete(checkpoints_table).where(cols.model == model,
                                                                cols.version < first_new))
                    join_links.forget(session, model, below=first_new)
                    join_parts.forget(session, model, below=first_new)
                prune_model(session, model, self.keep)
        self._replace.difference_update(cp.model for cp in checkpoints)
        for cp, version in zip(checkpoints, versions, strict=True):
            cp.version, cp.created_at = version, now
        return versions

    def _delta_base(self, session: Connection, cp: Checkpoint) -> int | None:
        """The base of ``cp``'s join state if it is a delta on the shard's newest version; any other delta
        (its base replaced or pruned, or a stored delta saved again) becomes ``cp.full_join_state()``, or
        the full state its chain adds up to."""
        base = join_links.delta_base(cp.join_state)
        if base is None or (cp.model not in self._replace and join_links.base_usable(session, cp.model, cp.shard,
                                                                                      base)):
            return base
        cp.join_state = (cp.full_join_state() if cp.full_join_state is not None else
                         join_links.materialize(session, cp.model, cp.shard, base, cp.join_state or b""))
        return None

    @staticmethod
    def _allocate(session: Connection, model: str, count: int) -> int:
        """Reserve ``count`` consecutive versions of ``model``; returns the first."""
        bumped = session.execute(update(models_table).where(models_table.c.name == model)
                                 .values(next_version=models_table.c.next_version + count)
                                 .returning(models_table.c.next_version)).first()
        if bumped is not None:
            return bumped[0] - count
        first = (session.scalar(select(func.max(cols.version)).where(cols.model == model))
                 or 0) + 1
        # a concurrent creator makes this fail: the caller retries
        session.execute(insert(models_table).values(name=model, next_version=first + count))
        return first

    # -- fencing (see banditloop.pipeline.leases) -------------------------------------------
    def claim(self, model: str, shards: Iterable[str], owner: str) -> dict[str, int]:
        """Take the shards over for ``owner``: each shard's epoch goes up by one. Returns shard -> epoch,
        the fence to pass to :meth:`save_many`. Any write fenced with an older epoch now fails."""
        return claim_shards(self.engine, model, shards, owner)

    def leases(self, model: str) -> dict[str, tuple[int, str]]:
        """shard -> (epoch, owner) of every claimed shard of ``model``."""
        return shard_leases(self.engine, model)

    def prune(self, model: str | None = None, *, keep: int | None = None) -> dict[str, int]:
        """Apply the retention policy now to ``model`` (default: every model), keeping ``keep``
        versions per shard (default: the store's). Returns ``{model: rows deleted}``."""
        keep = self.keep if keep is None else keep
        if keep < 0:
            raise ValueError("keep must be >= 0 (0 keeps every version)")
        with self.engine.begin() as session:
            names = [model] if model is not None else session.scalars(
                select(cols.model).distinct().order_by(cols.model)).all()
            return {name: prune_model(session, name, keep) for name in names}

    def compact(self) -> bool:
        """Give the space of deleted rows back to the file system (SQLite ``VACUUM``; PostgreSQL's
        autovacuum does this on its own). Returns whether anything was run."""
        if sqlite_path(self.url) is None:
            return False
        with self.engine.connect() as conn:
            conn.exec_driver_sql("VACUUM")
        return True

    # -- reading --------------------------------------------------------------------------------
    def latest(self, model: str, shard: str = DEFAULT_SHARD) -> Checkpoint | None:
        with self.engine.connect() as session:
            row = session.execute(select(checkpoints_table)
                                  .where(cols.model == model, cols.shard == shard)
                                  .order_by(cols.version.desc()).limit(1)).first()
            return None if row is None else _row_to_checkpoint(row, session)

    def latest_version(self, model: str) -> int | None:
        """The newest version number of ``model`` (cheap: for hot-reload polling)."""
        with self.engine.connect() as session:
            return session.scalar(select(func.max(cols.version)).where(cols.model == model))

    def latest_per_shard(self, model: str, shards: Iterable[str] | None = None) -> list[Checkpoint]:
        """The newest checkpoint of every shard of ``model`` (or of the given shards)."""
        with self.engine.connect() as session:
            newest = (select(cols.shard, func.max(cols.version).label("v"))
                      .where(cols.model == model).group_by(cols.shard).subquery())
            query = select(checkpoints_table).join(
                newest, (cols.shard == newest.c.shard) & (cols.version == newest.c.v)
            ).where(cols.model == model).order_by(cols.shard)
            if shards is not None:
                query = query.where(cols.shard.in_(list(shards)))
            return [_row_to_checkpoint(row) for row in session.execute(query)]

    def heads(self, model: str) -> list[ShardHead]:
        """The newest version of every shard of ``model`` (empty when the model does not exist)."""
        with self.engine.connect() as session:
            newest = (select(cols.shard, func.max(cols.version).label("v"))
                      .where(cols.model == model).group_by(cols.shard).subquery())
            rows = session.execute(
                select(cols.shard, cols.version, cols.learner, cols.config,
                       cols.source, cols.created_at)
                .join(newest, (cols.shard == newest.c.shard) & (cols.version == newest.c.v))
                .where(cols.model == model).order_by(cols.shard)).all()
            return [ShardHead(shard=r[0], version=r[1], learner=r[2], config=r[3], source=r[4] or {},
                              created_at=_aware(r[5])) for r in rows]

    def model_names(self) -> list[str]:
        with self.engine.connect() as session:
            return list(session.scalars(select(cols.model).distinct().order_by(cols.model)))

    def shard_versions(self, model: str, shard: str) -> list[int]:
        """Stored versions of one shard, newest first (to fall back past an unreadable one)."""
        with self.engine.connect() as session:
            return list(session.scalars(select(cols.version)
                                        .where(cols.model == model, cols.shard == shard)
                                        .order_by(cols.version.desc())))

    def load(self, model: str, shard: str, version: int) -> Checkpoint | None:
        """One stored checkpoint (None when it is gone); :class:`CorruptState` when it cannot be decoded."""
        with self.engine.connect() as session:
            row = session.execute(select(checkpoints_table).where(
                cols.model == model, cols.shard == shard, cols.version == version)).first()
            return None if row is None else _row_to_checkpoint(row, session)

    def versions(self, model: str) -> list[tuple[int, str, datetime]]:
        with self.engine.connect() as session:
            rows = session.execute(select(cols.version, cols.shard, cols.created_at)
                                   .where(cols.model == model).order_by(cols.version))
            return [(v, s, _aware(c)) for v, s, c in rows]

    def models(self) -> list[ModelSummary]:
        summaries = []
        with self.engine.connect() as session:
            names = session.scalars(select(cols.model).distinct().order_by(cols.model)).all()
            for name in names:
                rows = session.execute(select(cols.version, cols.shard, cols.learner,
                                              cols.created_at)
                                       .where(cols.model == name)
                                       .order_by(cols.version)).all()
                latest_by_shard: dict[str, int] = {}
                for version, shard, _, _ in rows:
                    latest_by_shard[shard] = version
                counters: dict[str, Any] = {}
                for cp_counters in session.scalars(select(cols.counters).where(
                        cols.model == name, cols.version.in_(list(latest_by_shard.values())))):
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
