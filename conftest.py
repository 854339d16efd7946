"""Fixtures shared by the whole suite: a throw-away PostgreSQL database.

The machine's PostgreSQL server (127.0.0.1:5432, trust auth) is required in CI: under ``CI=true`` an
unreachable server fails the tests that need it; elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import os
import uuid

import pytest

PG_HOST = os.environ.get("BANDITLOOP_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("BANDITLOOP_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("BANDITLOOP_TEST_PG_USER", "postgres")


def _admin_connect():
    import psycopg

    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True,
                           connect_timeout=5)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """Base URL of the server (no database), or skip/fail when it is unreachable."""
    try:
        with _admin_connect() as conn:
            conn.execute("select 1")
    except Exception as exc:  # psycopg.OperationalError, ImportError
        message = f"PostgreSQL at {PG_HOST}:{PG_PORT} unreachable: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(message)
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}"


@pytest.fixture
def postgres_url(postgres_server: str):
    """A fresh, empty database for one test, dropped afterwards."""
    name = f"banditloop_test_{uuid.uuid4().hex[:12]}"
    with _admin_connect() as conn:
        conn.execute(f'create database "{name}"')
    try:
        yield f"{postgres_server}/{name}"
    finally:
        with _admin_connect() as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')
