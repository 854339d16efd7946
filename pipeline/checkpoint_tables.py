"""The database tables behind :mod:`banditloop.pipeline.checkpoints` (SQLAlchemy Core).

Core tables rather than ORM classes: every query here is a plain statement, and not importing
``sqlalchemy.orm`` takes about a quarter off the start-up of ``banditloop models``. The schema is
the one the ORM classes of earlier versions created (same names, types, nullability, index and
constraint), so existing databases are used as they are."""

from __future__ import annotations

import logging

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError

from banditloop.pipeline.names import DEFAULT_SHARD, MAX_NAME_LENGTH, check_name  # noqa: F401 - re-exported

metadata = MetaData()
log = logging.getLogger("banditloop.checkpoints")

#: Per-model version counter. Updating it first in a transaction serialises writers of one model (a
#: row lock in PostgreSQL, the write lock in SQLite), so versions only ever increase even when old
#: rows are pruned concurrently.
models_table = Table(
    "banditloop_models", metadata,
    Column("name", String(200), primary_key=True),
    Column("next_version", Integer, nullable=False),
)

#: One row per checkpoint: a shard's learner state, join state, counters and source at a version.
checkpoints_table = Table(
    "banditloop_checkpoints", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(200), nullable=False, index=True),
    Column("shard", String(200), nullable=False, default=DEFAULT_SHARD),
    Column("version", Integer, nullable=False),
    Column("learner", String(50), nullable=False),
    Column("config", JSON, nullable=False),
    Column("state_arrays", LargeBinary, nullable=False),
    Column("state_meta", Text, nullable=False),
    Column("join_state", LargeBinary, nullable=True),
    Column("counters", JSON, nullable=False),
    Column("source", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("model", "version", name="uq_checkpoint_model_version"),
)

#: Who may write a shard of a model: a fencing epoch. A consume worker *claims* the shards it is
#: assigned (the epoch goes up by one) before it reads their checkpoints, and every checkpoint it
#: writes checks, in the same transaction, that the epochs are still its own. A worker that was
#: paused or cut off while another took its partitions over can then no longer write: its stale state
#: would otherwise roll the served model back in time.
leases_table = Table(
    "banditloop_shard_leases", metadata,
    Column("model", String(200), primary_key=True),
    Column("shard", String(200), primary_key=True),
    Column("epoch", Integer, nullable=False),
    Column("owner", String(200), nullable=False),
    Column("claimed_at", DateTime(timezone=True), nullable=False),
)

#: A checkpoint whose join state is a delta, and the version it applies on top of (its base), for one
#: shard. Versions without a row hold a full join state (or none). Restoring a version follows these
#: links back to a full snapshot; retention keeps every link that the versions a shard can resume
#: from still need (:mod:`banditloop.pipeline.join_links`). An additive table: ``create_all`` adds it
#: to databases written before it existed, which have no deltas.
join_links_table = Table(
    "banditloop_join_links", metadata,
    Column("model", String(200), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("shard", String(200), nullable=False),
    Column("base", Integer, nullable=False),
)

#: The parts of a join state stored in parts (kind ``PARTS`` of :mod:`banditloop.pipeline.join_state`):
#: the checkpoint row holds the head, these rows the open impressions, a few MB each, written in the
#: checkpoint's transaction (:mod:`banditloop.pipeline.join_parts`). An additive table: ``create_all``
#: adds it to databases written before it existed, whose join states are each one value.
join_parts_table = Table(
    "banditloop_join_parts", metadata,
    Column("model", String(200), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("part", Integer, primary_key=True),
    Column("shard", String(200), nullable=False),
    Column("data", LargeBinary, nullable=False),
)

#: the columns of large values (join states): PostgreSQL compresses such values before it stores them
#: out of line, by default with pglz, which costs ~50 ms per MB (a 4.5 MB delta: ~200 ms of a checkpoint
#: that otherwise takes ~50 ms); lz4 compresses them as well (~30%) in a few ms. Where the server has no
#: lz4 (built without it, or older than PostgreSQL 14) they are stored uncompressed instead.
LARGE_VALUES = ((checkpoints_table.name, "join_state"), (join_parts_table.name, "data"))


def tune_postgres(conn: Connection) -> list[str]:
    """Set the compression of :data:`LARGE_VALUES` on a PostgreSQL database (catalog only: values already
    stored stay as they are; it is read first, so only the first store to open a database alters it).
    Returns the statements run. What is stored, read and written is the same either way."""
    done: list[str] = []
    lz4 = int(conn.execute(text("SHOW server_version_num")).scalar_one()) >= 140000
    for table, column in LARGE_VALUES:
        query = ("SELECT a.attstorage, " + ("a.attcompression" if lz4 else "''") + " FROM pg_attribute a "
                 "WHERE a.attrelid = CAST(:t AS regclass) AND a.attname = :c")
        storage, compression = conn.execute(text(query), {"t": table, "c": column}).one()
        if compression == "l" or storage == "e":
            continue
        statement = f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION lz4"
        if lz4:
            try:
                with conn.begin_nested():
                    conn.execute(text(statement))
                done.append(statement)
                continue
            except DBAPIError:  # (a server built without lz4)
                pass
        statement = f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE EXTERNAL"
        conn.execute(text(statement))
        done.append(statement)
    return done


def prepare(engine: Engine) -> None:
    """Create the tables that are missing (and, on PostgreSQL, :func:`tune_postgres`). A failed tuning
    (a role that may not alter the tables, a lock not granted in time) is logged: it is retried by the
    next store that opens the database."""
    try:  # (a new table, e.g. the join links, can be created by two workers starting at once)
        metadata.create_all(engine)
    except (IntegrityError, ProgrammingError):
        metadata.create_all(engine)
    if engine.dialect.name != "postgresql":
        return
    try:
        with engine.begin() as conn:
            tune_postgres(conn)
    except DBAPIError as exc:
        log.warning("could not set the compression of the join-state columns (%s); checkpoints are slower",
                    str(exc).splitlines()[0])
