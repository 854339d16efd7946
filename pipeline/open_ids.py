"""The ids of the join's open impressions as fixed-width rows of one byte arena (see ``open_store``)."""

from __future__ import annotations

import numpy as np

_MAX_WIDTH = 64


class IdArena:
    """Strings of at most ``width`` UTF-8 bytes as fixed-width rows of a bytearray (NUL-padded);
    longer ones (or ending in NUL) in a dict by slot. The width grows (rows re-laid) up to 64 bytes.

    >>> ids = IdArena()
    >>> ids.put(0, "imp-1"); ids.put(2, "x" * 40); ids.put(1, "é" * 100)
    >>> ids.get(0), len(ids.get(2)), ids.width, len(ids.long)
    ('imp-1', 40, 40, 1)
    """

    def __init__(self) -> None:
        self.width = 16
        self.data = bytearray()
        self.long: dict[int, str] = {}

    def put(self, slot: int, text: str) -> None:
        raw = text.encode()
        w, data = self.width, self.data
        if len(raw) <= w and not raw.endswith(b"\0"):  # the usual case
            start = slot * w
            if start == len(data):
                data += raw.ljust(w, b"\0")
            else:
                if start > len(data):
                    data.extend(bytes(start - len(data)))
                data[start:start + w] = raw.ljust(w, b"\0")
            if self.long:
                self.long.pop(slot, None)
            return
        if len(raw) <= _MAX_WIDTH and not raw.endswith(b"\0"):
            self._widen(min(_MAX_WIDTH, max(len(raw), 2 * w)))
            self.put(slot, text)
            return
        end = (slot + 1) * w
        if len(data) < end:
            data.extend(bytes(end - len(data)))
        self.long[slot] = text
        data[slot * w:end] = bytes(w)

    def equals(self, slot: int, text: str) -> bool:
        """Whether ``slot`` holds ``text`` (without decoding the row)."""
        if self.long and slot in self.long:
            return self.long[slot] == text
        raw = text.encode()
        w, n = self.width, len(raw)
        start = slot * w
        return n <= w and self.data.startswith(raw, start) and (n == w or self.data[start + n] == 0)

    def get(self, slot: int) -> str:
        if self.long and slot in self.long:
            return self.long[slot]
        w = self.width
        return self.data[slot * w:(slot + 1) * w].rstrip(b"\0").decode()

    def many(self, slots: np.ndarray) -> list[str]:
        """:meth:`get` of many slots."""
        w = self.width
        rows = np.frombuffer(self.data, dtype=f"S{w}")[slots].tolist() if self.data else []
        out = [r.decode() for r in rows]
        if self.long:
            for i, s in enumerate(slots.tolist()):
                if s in self.long:
                    out[i] = self.long[s]
        return out

    def drop(self, slot: int) -> None:
        if self.long:
            self.long.pop(slot, None)

    def _widen(self, width: int) -> None:
        old, w = self.data, self.width
        rows = np.frombuffer(bytes(old), dtype=np.uint8).reshape(-1, w) if old else np.zeros((0, w), np.uint8)
        wide = np.zeros((rows.shape[0], width), dtype=np.uint8)
        wide[:, :w] = rows
        self.data = bytearray(wide.tobytes())
        self.width = width
