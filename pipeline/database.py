"""The checkpoint database's URL: its default, and how to show it without the password.

Kept free of SQLAlchemy so that the command line can name the default database (``--help``) and
report a bad URL without importing the database layer.
"""

from __future__ import annotations

import os
import re

DEFAULT_DB_URL = "sqlite:///banditloop.db"
#: checkpoint versions kept per shard unless a store is told otherwise (``--keep``)
DEFAULT_KEEP = 20

_PASSWORD = re.compile(r"^(?P<head>[^:/?#]+://[^:/@]*):[^@/]*@")


def default_db_url() -> str:
    """``$BANDITLOOP_DB`` or an SQLite file in the current directory."""
    return os.environ.get("BANDITLOOP_DB") or DEFAULT_DB_URL


def masked_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***`` (for messages and logs)."""
    return _PASSWORD.sub(r"\g<head>:***@", url)


def url_scheme(url: str) -> str:
    """The part before ``://`` (``postgresql+psycopg``), or ``""`` when there is none."""
    scheme, sep, _ = url.partition("://")
    return scheme if sep else ""


def sqlite_path(url: str) -> str | None:
    """The file of an ``sqlite:///PATH`` URL; ``None`` for other databases and in-memory SQLite."""
    if not url_scheme(url).startswith("sqlite"):
        return None
    path = url.split("://", 1)[1]
    path = path[1:] if path.startswith("/") else path  # sqlite:///rel.db -> rel.db, sqlite:////abs -> /abs
    path = path.split("?", 1)[0]
    return path if path and path != ":memory:" else None
