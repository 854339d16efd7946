"""Event logs: one JSON event per line, ``.jsonl`` or ``.jsonl.gz`` (gzip is detected by content)."""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

from banditloop.core.events import TYPE_ORDER, Event, InvalidEvent, decode_event, encode_event

_GZIP_MAGIC = b"\x1f\x8b"


def open_log(path: str | Path, mode: str = "rb") -> IO[bytes]:
    """Open a log for reading (gzip detected by magic bytes) or writing (gzip by ``.gz`` suffix)."""
    path = Path(path)
    if "w" in mode or "a" in mode:
        path.parent.mkdir(parents=True, exist_ok=True)
        return cast(IO[bytes], gzip.open(path, mode) if path.suffix == ".gz" else open(path, mode))  # noqa: SIM115
    with open(path, "rb") as probe:
        gz = probe.read(2) == _GZIP_MAGIC
    return cast(IO[bytes], gzip.open(path, "rb") if gz else open(path, "rb"))  # noqa: SIM115


def iter_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw line) for every non-blank line."""
    with open_log(path) as fh:
        for number, line in enumerate(fh, start=1):
            line = line.strip()
            if line:
                yield number, line


class StrictModeError(RuntimeError):
    pass


@dataclass
class LoadedLog:
    events: list[Event]
    lines: int
    invalid: int
    errors: list[tuple[int, str]] = field(default_factory=list)


def load_log(path: str | Path, *, strict: bool = False,
             on_invalid: Callable[[int, bytes, str], None] | None = None,
             keep_errors: int = 20, on_lines: Callable[[int], None] | None = None) -> LoadedLog:
    """Decode a whole log and sort it into event-time order.

    Ties are broken by event type (an impression before its feedback) and then by line number, so
    the order, and therefore everything learned from it, is deterministic. Invalid lines are counted
    and reported with their line numbers; ``strict`` makes the first one fatal. ``on_lines(n)`` is
    called after every 4096 lines read (n = 4096) and once at the end with the rest (progress bars).
    """
    keyed: list[tuple[float, int, int, Event]] = []
    invalid = 0
    errors: list[tuple[int, str]] = []
    lines = 0
    for number, raw in iter_lines(path):
        lines += 1
        if on_lines is not None and lines % 4096 == 0:
            on_lines(4096)
        try:
            event = decode_event(raw)
        except InvalidEvent as exc:
            if strict:
                raise StrictModeError(f"{path}:{number}: {exc.reason}") from None
            invalid += 1
            if len(errors) < keep_errors:
                errors.append((number, exc.reason))
            if on_invalid is not None:
                on_invalid(number, raw, exc.reason)
            continue
        keyed.append((event.ts, TYPE_ORDER[type(event)], number, event))
    if on_lines is not None:
        on_lines(lines % 4096)
    keyed.sort(key=lambda item: item[:3])
    return LoadedLog(events=[item[3] for item in keyed], lines=lines, invalid=invalid, errors=errors)


def write_log(path: str | Path, events: list[Event]) -> None:
    with open_log(path, "wb") as fh:
        for event in events:
            fh.write(encode_event(event) + b"\n")
