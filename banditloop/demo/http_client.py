"""JSON over HTTP with the standard library: keep-alive connections, one per calling thread."""

from __future__ import annotations

import http.client
import threading


class HttpClient:
    """A tiny JSON-over-HTTP client: one persistent connection per calling thread."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """``(status, body)`` of one request; raises OSError or HTTPException when there is no answer."""
        for attempt in range(2):
            conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                self._local.conn = conn
                with self._lock:
                    self._all.append(conn)
            try:
                headers = {"Content-Type": "application/json"} if body is not None else {}
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()  # a connection left mid-request cannot be reused
                self._local.conn = None
                with self._lock:
                    self._all.remove(conn)
                # the server closed an idle keep-alive connection before reading: safe to resend once
                stale = isinstance(exc, http.client.RemoteDisconnected | BrokenPipeError | ConnectionResetError)
                if attempt or not stale:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
