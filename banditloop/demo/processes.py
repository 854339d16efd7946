"""The demo's child processes: each ``banditloop`` sub-command in its own process group, the signals
that stop them, and the environment they run in."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from banditloop.pipeline.broker import pdeathsig_preexec

log = logging.getLogger("banditloop.demo")


class Child:
    """A ``banditloop`` sub-command in its own session (process group), output to log files.

    Its own session: a terminal's Ctrl-C goes to the foreground process group only, so the children
    never see it and stop when (and in the order) the demo decides. On Linux the child also gets
    ``PR_SET_PDEATHSIG`` (SIGKILL): if the demo itself is SIGKILLed, nothing is left behind.
    """

    def __init__(self, name: str, argv: list[str], log_path: Path, stdout_path: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self.stdout_path = stdout_path
        with open(log_path, "wb") as err, open(stdout_path or os.devnull, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "banditloop.cli", *argv], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env=env, start_new_session=True, preexec_fn=pdeathsig_preexec(), close_fds=True)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float, sig: int = signal.SIGTERM) -> int | None:
        """Signal the group, wait up to ``timeout``, then SIGKILL whatever is left. Returns the exit code."""
        if self.proc.poll() is None:
            killpg(self.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s: killing it", self.name, timeout)
                killpg(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        killpg(self.pid, signal.SIGKILL)  # anything the child may have left in its group
        return self.proc.returncode

    def group_gone(self) -> bool:
        """No process is left in the child's process group."""
        return not group_exists(self.pid)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stdout_json(self) -> dict[str, Any] | None:
        """The JSON summary the child printed (``--json``), if it did."""
        if self.stdout_path is None:
            return None
        try:
            lines = self.stdout_path.read_text().strip().splitlines()
            return json.loads(lines[-1]) if lines else None
        except (OSError, ValueError):
            return None


def killpg(pgid: int, sig: int) -> None:
    """``os.killpg``, quiet when the group is already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_exists(pgid: int) -> bool:
    """Some process of the group ``pgid`` is still alive."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def child_env() -> dict[str, str]:
    """The environment of the children: ours without ``$BANDITLOOP_*``, which would otherwise change
    their options behind the demo's back (the bootstrap checkpoint must match the consumer's config)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("BANDITLOOP_")}


class Signals:
    """SIGINT/SIGTERM/SIGHUP while the demo runs. The first asks for an orderly stop (results are
    still written; during start-up there are none yet, so it aborts); the second kills the
    children's process groups at once and raises :class:`KeyboardInterrupt` (no results, exit status
    130); later ones only repeat the kill. Previous handlers are restored."""

    def __init__(self, stop: threading.Event, kill: Callable[[], None]) -> None:
        self.stop = stop
        self.kill = kill
        self.received: list[int] = []
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.received.append(signum)
        if len(self.received) == 1:
            self.stop.set()
            return
        self.kill()
        if len(self.received) == 2:
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
