"""Waiting for the children to be ready, on what they report themselves: the scorer's ``/healthz``
answer and the consumer's ready file (``banditloop consume --ready-file``), not their logs."""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from banditloop.demo.http_client import HttpClient
from banditloop.demo.options import DemoError
from banditloop.demo.processes import Child
from banditloop.pipeline.status import read_status

log = logging.getLogger("banditloop.demo")


def wait_healthy(client: HttpClient, child: Child, timeout: float, stop: threading.Event) -> dict[str, Any]:
    """Until ``/healthz`` says a model is served and Kafka is connected; returns its answer."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline and not stop.is_set():
        if not child.alive():
            raise DemoError(f"the scorer exited with code {child.proc.returncode} while starting "
                            f"(log {child.log_path}):\n{child.log_tail()}")
        try:
            status, data = client.request("GET", "/healthz")
            info = json.loads(data)
            if status == 200 and info.get("kafka"):
                return info
            last = f"HTTP {status}: {info}"
        except (OSError, http.client.HTTPException, ValueError) as exc:
            last = repr(exc)
        stop.wait(0.2)
    if stop.is_set():
        raise KeyboardInterrupt
    raise DemoError(f"the scorer was not ready within {timeout:.0f} s ({last}); log {child.log_path}")


def wait_assigned(child: Child, ready_file: Path, timeout: float, stop: threading.Event) -> dict[str, Any] | None:
    """Until the consumer's ready file says it has been assigned partitions; returns that status
    (``pid``, ``group``, ``partitions``, ``restored``, ``assignments``), or None after ``timeout``.

    Only a status written by this child counts (its ``pid``), so a file left by an earlier run in
    the same directory cannot pass for it. Best effort: not required for correctness (impressions
    wait in Kafka and the consumer reads from the beginning), but without it the first seconds of a
    short demo are served by the untrained model while the consumer is still joining its group,
    which only flattens the start of the curves.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        if not child.alive():
            raise DemoError(f"the consumer exited with code {child.proc.returncode} while starting "
                            f"(log {child.log_path}):\n{child.log_tail()}")
        status = read_status(ready_file)
        if status is not None and status.get("pid") == child.pid and status.get("partitions"):
            return status
        stop.wait(0.1)
    if stop.is_set():
        raise KeyboardInterrupt
    log.warning("the consumer has not reported its partitions after %.0f s; starting anyway", timeout)
    return None
