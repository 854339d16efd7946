"""What the user did wrong, in one line: the table that turns exceptions into messages.

The command line's error boundary (:func:`banditloop.cli.main`) asks :func:`describe` for every
exception a command raises. Entries are keyed by the exception's qualified class name and looked up
along its MRO, so that this module imports none of the libraries whose errors it explains
(SQLAlchemy, kafka-python, ...): the command line starts without them. An exception with no entry
is not a user error but a bug, and is reported as one (see :func:`banditloop.cli.main`).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path

from banditloop.pipeline.database import masked_url, sqlite_path, url_scheme

Describe = Callable[[BaseException, argparse.Namespace | None], str]

POSTGRES_EXTRA = "pip install 'banditloop[postgres]'"
EXAMPLE_URLS = "sqlite:///banditloop.db or postgresql+psycopg://USER@HOST/DBNAME"


def describe(exc: BaseException, args: argparse.Namespace | None) -> str | None:
    """One line (no newline) saying what was wrong and what to do, or ``None`` for a bug."""
    for cls in type(exc).__mro__:
        handler = TABLE.get(f"{cls.__module__}.{cls.__qualname__}")
        if handler is not None:
            return one_line(handler(exc, args))
    return None


def one_line(text: str) -> str:
    """The first line of ``text`` (the rest of a multi-line message is shown with ``--debug``)."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


# -- where: the database, the broker, the input named on the command line --------------------------
def _db(args: argparse.Namespace | None) -> str:
    from banditloop.pipeline.database import default_db_url

    return (getattr(args, "db", None) if args is not None else None) or default_db_url()


def _bootstrap(args: argparse.Namespace | None) -> str:
    return str(getattr(args, "bootstrap", None) or "the --bootstrap address")


def _first_line(exc: BaseException) -> str:
    return one_line(str(exc)) if str(exc).strip() else type(exc).__name__


# -- the database ---------------------------------------------------------------------------------
def _driver_message(exc: BaseException) -> str:
    """The database driver's own message (SQLAlchemy wraps it as ``exc.orig``), first line."""
    orig = getattr(exc, "orig", None)
    text = str(orig) if orig is not None else str(exc)
    text = re.sub(r"^\([\w.]+\)\s*", "", text.strip())  # "(sqlite3.OperationalError) ..."
    text = re.sub(r"^connection failed:\s*", "", one_line(text))
    return re.sub(r"^connection to server at [^,]+, port \d+ failed:\s*", "", text)


def _db_operational(exc: BaseException, args: argparse.Namespace | None) -> str:
    url = _db(args)
    message = _driver_message(exc)
    path = sqlite_path(url)
    if path is not None:
        folder = Path(path).expanduser().parent
        if not folder.is_dir():
            return f"cannot create the SQLite database {path}: directory {folder} does not exist; create it or " \
                   "choose another --db"
        if Path(path).is_dir():
            return f"cannot open the SQLite database {path}: it is a directory; give a file name in --db"
        return f"SQLite database {path}: {message}"
    lowered = message.lower()
    where = masked_url(url)
    if "does not exist" in lowered and "database" in lowered:
        name = url.rsplit("/", 1)[-1].split("?", 1)[0]
        return f"database {where}: {message}; create it (createdb {name}) or fix --db"
    if "connection refused" in lowered or "could not connect" in lowered or "timeout" in lowered:
        return f"cannot connect to the database {where}: {message}; is the server running, and are host and port " \
               "right?"
    if "password" in lowered or "authentication" in lowered or "role" in lowered:
        return f"the database {where} refused the login: {message}; check the user and password in --db"
    return f"database {where}: {message}"


def _db_bad_url(exc: BaseException, args: argparse.Namespace | None) -> str:
    return f"--db {masked_url(_db(args))!r} is not a database URL; expected e.g. {EXAMPLE_URLS}"


def _db_unknown_dialect(exc: BaseException, args: argparse.Namespace | None) -> str:
    scheme = url_scheme(_db(args))
    if scheme.split("+")[0] in ("postgres", "postgresql", "pg"):
        return f"--db: unknown database type {scheme!r}; PostgreSQL URLs start with postgresql+psycopg:// " \
               f"(psycopg 3: {POSTGRES_EXTRA})"
    return f"--db: unknown database type {scheme!r}; expected e.g. {EXAMPLE_URLS}"


def _missing_module(exc: BaseException, args: argparse.Namespace | None) -> str:
    name = str(getattr(exc, "name", "") or "")
    if name.startswith("psycopg2"):
        return f"--db {url_scheme(_db(args))}:// selects the psycopg2 driver, which is not installed; write " \
               f"postgresql+psycopg://... (psycopg 3: {POSTGRES_EXTRA})"
    if name.startswith("psycopg"):
        return f"PostgreSQL needs the psycopg driver, which is not installed: {POSTGRES_EXTRA}"
    return f"the Python package {name or '?'!r} is missing ({_first_line(exc)}); reinstall banditloop"


def _db_error(exc: BaseException, args: argparse.Namespace | None) -> str:
    return f"database {masked_url(_db(args))}: {_driver_message(exc)}"


# -- Kafka ----------------------------------------------------------------------------------------
def _no_brokers(exc: BaseException, args: argparse.Namespace | None) -> str:
    return f"no Kafka broker answers at {_bootstrap(args)}; start one (banditloop broker) or fix --bootstrap"


def _kafka_timeout(exc: BaseException, args: argparse.Namespace | None) -> str:
    return f"Kafka at {_bootstrap(args)} did not answer in time ({_first_line(exc)}); is the broker up and " \
           "reachable?"


def _kafka_error(exc: BaseException, args: argparse.Namespace | None) -> str:
    return f"Kafka at {_bootstrap(args)}: {type(exc).__name__}: {_first_line(exc)}"


# -- files ----------------------------------------------------------------------------------------
def _is_a_directory(exc: BaseException, args: argparse.Namespace | None) -> str:
    return f"{getattr(exc, 'filename', None) or 'the path'} is a directory; expected a file"


def _not_found(exc: BaseException, args: argparse.Namespace | None) -> str:
    return f"no such file or directory: {getattr(exc, 'filename', None) or _first_line(exc)}"


def _permission(exc: BaseException, args: argparse.Namespace | None) -> str:
    return f"permission denied: {getattr(exc, 'filename', None) or _first_line(exc)}"


def _os_error(exc: BaseException, args: argparse.Namespace | None) -> str:
    filename = getattr(exc, "filename", None)
    reason = getattr(exc, "strerror", None) or _first_line(exc)
    return f"{filename}: {reason}" if filename else str(reason)


def _input_name(args: argparse.Namespace | None) -> str:
    return str(getattr(args, "log", None) or "the input")


def _truncated(exc: BaseException, args: argparse.Namespace | None) -> str:
    return f"{_input_name(args)} ends early ({_first_line(exc)}): a truncated or partly written .gz file?"


def _bad_gzip(exc: BaseException, args: argparse.Namespace | None) -> str:
    return f"{_input_name(args)} is not a readable gzip file ({_first_line(exc)})"


def _message(exc: BaseException, args: argparse.Namespace | None) -> str:
    return _first_line(exc)


TABLE: dict[str, Describe] = {
    # ours: already worded for the user
    "banditloop.commands.common.CommandError": _message,
    "banditloop.pipeline.runner.IncompatibleCheckpoint": _message,
    "banditloop.pipeline.shard_restore.CorruptCheckpoint": _message,
    "banditloop.pipeline.checkpoints.LeaseLost": _message,
    "banditloop.pipeline.logs.StrictModeError": _message,
    "banditloop.pipeline.topics.TopicMismatchError": _message,
    "banditloop.pipeline.producer.ProduceError": _message,
    "banditloop.pipeline.kafka_probe.BrokerError": _message,
    "banditloop.core.state_codec.CorruptState": _message,
    # the database (SQLAlchemy and its drivers)
    "sqlalchemy.exc.ArgumentError": _db_bad_url,
    "sqlalchemy.exc.NoSuchModuleError": _db_unknown_dialect,
    "sqlalchemy.exc.OperationalError": _db_operational,
    "sqlalchemy.exc.DBAPIError": _db_error,
    "builtins.ModuleNotFoundError": _missing_module,
    # Kafka (kafka-python)
    "kafka.errors.NoBrokersAvailable": _no_brokers,
    "kafka.errors.KafkaTimeoutError": _kafka_timeout,
    "kafka.errors.KafkaConnectionError": _no_brokers,
    "kafka.errors.KafkaError": _kafka_error,
    # files
    "gzip.BadGzipFile": _bad_gzip,
    "builtins.EOFError": _truncated,
    "zlib.error": _bad_gzip,
    "builtins.IsADirectoryError": _is_a_directory,
    "builtins.NotADirectoryError": _os_error,
    "builtins.FileNotFoundError": _not_found,
    "builtins.PermissionError": _permission,
    "builtins.FileExistsError": _os_error,
    "builtins.OSError": _os_error,
}
