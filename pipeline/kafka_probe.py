"""Is a Kafka broker there? Free ports, a port check and a raw ``Metadata`` round trip (no client
library needed), used to start the development broker and to wait for any broker."""

from __future__ import annotations

import errno
import socket
import struct
import subprocess
import time

LOOPBACK = "127.0.0.1"
_METADATA_API_KEY = 3


class BrokerError(RuntimeError):
    """The broker binary is missing, failed to start, or did not become ready in time."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago (the kernel picks it; tiny race with other processes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ensure_port_free(host: str, port: int) -> None:
    """Raise :class:`BrokerError` if ``host:port`` cannot be listened on (in use, or not an address here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the broker does: TIME_WAIT is no conflict
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise BrokerError(f"{host}:{port} is already in use (another broker?); stop it or choose another "
                                  "--port (0 picks a free one)") from None
            raise BrokerError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _metadata_roundtrip(host: str, port: int, timeout: float) -> None:
    """Send a Kafka Metadata v0 request (all topics) and check the response's correlation id."""
    correlation_id = 0x42A
    client_id = b"banditloop-ready-probe"
    # Request header v1: api_key, api_version, correlation_id, client_id; body: topics = [] (all).
    body = struct.pack(">hhih", _METADATA_API_KEY, 0, correlation_id, len(client_id)) + client_id
    body += struct.pack(">i", 0)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(body)) + body)
        header = _recv_exact(sock, 8)
        size, got_id = struct.unpack(">ii", header)
        if got_id != correlation_id or size < 8:
            raise OSError(f"unexpected metadata response (size={size}, correlation_id={got_id})")
        _recv_exact(sock, size - 4)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks: list[bytes] = []
    while n > 0:
        chunk = sock.recv(min(n, 65536))
        if not chunk:
            raise OSError("connection closed mid-response")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def wait_for_kafka(bootstrap: str, timeout: float = 30.0, *, process: subprocess.Popen[bytes] | None = None) -> None:
    """Block until ``bootstrap`` (``host:port``) answers a Kafka Metadata request.

    Raises :class:`BrokerError` after ``timeout`` seconds, or as soon as ``process`` (if given)
    has exited.
    """
    host, _, port_s = bootstrap.rpartition(":")
    port = int(port_s)
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    delay = 0.02
    while True:
        if process is not None and process.poll() is not None:
            raise BrokerError(f"broker exited with code {process.returncode} before it was ready")
        try:
            _metadata_roundtrip(host, port, timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            return
        except OSError as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise BrokerError(f"no Kafka broker answering on {bootstrap} after {timeout:.0f}s: {last_error}")
        time.sleep(delay)
        delay = min(delay * 2, 0.25)
