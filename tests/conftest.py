"""Shared pytest fixtures.

``kafka_bootstrap`` (session): ``"127.0.0.1:PORT"`` of one memory-only Tansu broker
(:class:`banditloop.pipeline.broker.DevBroker`) started on a free port for the whole session and stopped at
the end. Tests share it, so each should use its own topic names and consumer group ids. Set
``BANDITLOOP_KAFKA_BOOTSTRAP=host:port`` to use an already running broker instead. Without the
bundled binary the Kafka tests are skipped, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from banditloop.pipeline.broker import BrokerError, DevBroker, find_tansu_binary


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of the session's Kafka broker (see module docstring)."""
    external = os.environ.get("BANDITLOOP_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    try:
        find_tansu_binary()
    except BrokerError as exc:
        if os.environ.get("CI", "").lower() == "true":
            raise
        pytest.skip(f"no Tansu broker binary: {exc}")
    with DevBroker() as broker:
        yield broker.bootstrap
