"""Connection-level limits for uvicorn: slow and idle clients cannot hold the server's descriptors.

uvicorn drops idle keep-alive connections (``timeout_keep_alive``), but a client that connects and
then sends its request headers slowly, or never finishes them, is held forever, and so is one that
trickles bytes after its answer; a thousand of them exhaust the process's file descriptors. The
protocol classes built by :func:`guarded_protocol` (one for each of uvicorn's HTTP parsers) add:

* a **connection limit** of ``max_connections`` open connections. A new connection beyond it
  takes the place of the connection that has waited longest for its request headers (the oldest
  half-open one), which is closed: a slow-header attack can then only displace itself, while new
  clients still get in. When no connection is waiting for headers (every one is in a request or an
  idle keep-alive), the new connection is answered with a short ``503`` and closed at once;
* a **header timeout**: the request line and headers must arrive within ``header_timeout`` seconds
  of the connection being made, or of the first byte of a next request on a kept-alive connection,
  else the connection is closed;
* a **header size limit**: more than ``max_header_bytes`` received while waiting for the headers
  closes the connection (httptools has no such limit of its own; h11's is set to the same value).

Reading the *body* is bounded by the application (``Limits.body_timeout``: 408). Counts are kept in
a :class:`ConnectionStats` for ``/metrics``.
"""

from __future__ import annotations

import asyncio
import resource
from dataclasses import dataclass
from typing import Any

#: default header budget: far above what a real client sends
DEFAULT_MAX_HEADER_BYTES = 32 * 1024
DEFAULT_HEADER_TIMEOUT = 10.0
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
         b"content-length: 39\r\n\r\n" + b'{"error": "too many connections open"}\n')


@dataclass
class ConnectionStats:
    refused: int = 0
    evicted: int = 0
    header_timeouts: int = 0
    oversized_headers: int = 0


def default_max_connections(reserve: int = 128, ceiling: int = 1000) -> int:
    """Connections to allow by default: ``ceiling``, but no more than the process's soft limit of
    open files minus ``reserve`` (database, Kafka, log and library descriptors), and at least 16."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return ceiling
    if soft == resource.RLIM_INFINITY:
        return ceiling
    return max(16, min(ceiling, soft - reserve))


def guarded_protocol(base: type, *, max_connections: int, header_timeout: float, max_header_bytes: int,
                     stats: ConnectionStats) -> type:
    """A subclass of uvicorn's HTTP protocol class ``base`` with the limits of the module docstring."""
    if max_connections < 1 or header_timeout <= 0 or max_header_bytes < 1024:
        raise ValueError("max_connections >= 1, header_timeout > 0 and max_header_bytes >= 1024 required")

    #: connections waiting for their request headers, the longest-waiting first (dicts keep order)
    waiting: dict[Any, None] = {}

    class GuardedProtocol(base):
        _header_timer: asyncio.TimerHandle | None = None
        _header_bytes = 0

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:  # self included
                victim = next(iter(waiting), None)
                if victim is None:
                    stats.refused += 1
                    transport.write(_BUSY)
                    transport.close()
                    return
                stats.evicted += 1
                victim._disarm_header_timer()
                victim.transport.close()
            self._arm_header_timer()

        def _arm_header_timer(self) -> None:
            self._header_bytes = 0
            self._header_timer = self.loop.call_later(header_timeout, self._header_timed_out)
            waiting[self] = None

        def _disarm_header_timer(self) -> None:
            waiting.pop(self, None)
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timed_out(self) -> None:
            self._header_timer = None
            waiting.pop(self, None)
            if not self.transport.is_closing():
                stats.header_timeouts += 1
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            cycle = self.cycle
            if self._header_timer is None and (cycle is None or cycle.response_complete):
                self._arm_header_timer()  # the first bytes of a next request on a kept-alive connection
            super().data_received(data)
            if self._header_timer is None:
                return
            if self.cycle is not cycle:  # a request's headers are complete: the application takes over
                self._disarm_header_timer()
                return
            self._header_bytes += len(data)
            if self._header_bytes > max_header_bytes and not self.transport.is_closing():
                stats.oversized_headers += 1
                self._disarm_header_timer()
                self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_timer()
            super().connection_lost(exc)

    GuardedProtocol.__name__ = GuardedProtocol.__qualname__ = f"Guarded{base.__name__}"
    return GuardedProtocol


def protocol_class(http: str) -> type:
    """uvicorn's protocol class for ``--http`` (``auto``: httptools when installed, else h11)."""
    if http in ("auto", "httptools"):
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

            return HttpToolsProtocol
        except ImportError:
            if http == "httptools":
                raise
    from uvicorn.protocols.http.h11_impl import H11Protocol

    return H11Protocol
