"""A log of any size in event-time order, in bounded memory (``banditloop replay``).

The order is the one :func:`banditloop.pipeline.logs.load_log` gives, ``(ts, type order, line number)``,
but the log is never held whole. Two passes over the file:

1. **Keys.** Only ``type`` and ``ts`` of each line are decoded (a few percent of a full decode), and a
   reorder buffer (a heap that emits its smallest key once it holds ``capacity``) is simulated over
   them for a few capacities up to the budget's. Logs written in event-time order, or nearly, as
   ``simulate``, ``consume --log`` and collectors write them, pass with a small buffer.
2. **Events.** Every line is decoded and validated once (:func:`~banditloop.core.events.decode_log_event`):

   * *stream*: through a reorder buffer of the smallest capacity that passed; the output is exactly
     the sorted order, which pass 1 proved (a line whose key decodes but whose event is invalid keeps
     its place in the buffer as a placeholder, so both passes see the same keys);
   * *external* (no capacity within the budget sorts it): sorted runs of ``capacity`` events are
     spilled to temporary files as msgpack blocks and merged with :func:`heapq.merge` (stable: the line
     number is part of the key). The files are removed when the ``with`` block ends, also on errors
     and Ctrl-C.

The budget (``memory_budget`` bytes, default :data:`DEFAULT_MEMORY_BUDGET`) bounds the decoded events
held for sorting, estimated at :func:`bytes_per_event` each; the join's own state (open impressions,
bounded by its windows) comes on top.
"""

from __future__ import annotations

import heapq
import struct
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import msgspec

from banditloop.core.events import (
    MAX_EVENT_BYTES,
    MAX_TS,
    TYPE_ORDER,
    Event,
    InvalidEvent,
    decode_log_event,
    parse_ts,
)
from banditloop.pipeline.logs import StrictModeError, open_log

#: default budget for the events held while sorting (``replay --memory-budget``)
DEFAULT_MEMORY_BUDGET = 128 * 1024 * 1024
#: reorder-buffer capacities tried in pass 1 (each capped by the budget's, which is always tried)
_CAPACITIES = (1024, 16384, 131072)
_ORDER = {"impression": 0, "click": 1, "conversion": 2}
_TYPE_ORDER = {cls: order for cls, order in TYPE_ORDER.items()}
Key = tuple[float, int, int]


class _Key(msgspec.Struct, gc=False):
    type: str
    ts: float | str


_key_decoder = msgspec.json.Decoder(_Key)
_block_encoder = msgspec.msgpack.Encoder()
_block_decoder = msgspec.msgpack.Decoder(list[tuple[float, int, int, Event]])
_LENGTH = struct.Struct("<Q")


def line_chunks(path: Path, size: int = 1 << 20) -> Iterator[tuple[int, list[bytes]]]:
    """The lines of a log (gzip detected) a chunk at a time: (number of the first, raw lines), numbered
    and split as iterating over the file would (blank lines included, not yet stripped)."""
    number = 1
    rest = b""
    with open_log(path) as fh:
        while chunk := fh.read(size):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            yield number, lines
            number += len(lines)
    if rest:
        yield number, [rest]


def line_key(raw: bytes, number: int) -> Key | None:
    """The sort key of a line, or ``None`` when the line cannot be an event (then it is invalid)."""
    if len(raw) > MAX_EVENT_BYTES:
        return None
    try:
        head = _key_decoder.decode(raw)
        order = _ORDER[head.type]
        ts = head.ts if isinstance(head.ts, float) else parse_ts(head.ts)
    except (msgspec.DecodeError, KeyError, InvalidEvent):
        return None
    if not 0.0 <= ts <= MAX_TS:
        return None
    return (ts, order, number)


def bytes_per_event(mean_line_bytes: float) -> int:
    """Estimated memory of one decoded event held for sorting (its line ≈ 2.5× once decoded)."""
    return int(2.5 * mean_line_bytes) + 256


class SortedLog:
    """The events of a log in event-time order (iterate once), with what decoding found.

    ``events`` (valid events) and ``invalid`` are final once iteration ends; before that ``estimate``
    (lines whose type and time decode) bounds ``events`` from above.
    """

    def __init__(self, path: Path, workdir: Path | None, memory_budget: int, strict: bool,
                 on_invalid: Callable[[int, bytes, str], None] | None, keep_errors: int,
                 on_lines: Callable[[int], None] | None) -> None:
        self.path = path
        self.workdir = workdir
        self.memory_budget = memory_budget
        self.strict = strict
        self.on_invalid = on_invalid
        self.keep_errors = keep_errors
        self.on_lines = on_lines
        self.lines = 0
        self.invalid = 0
        self.events = 0
        self.estimate = 0
        self.errors: list[tuple[int, str]] = []
        self.mode = "sorted"
        self.capacity = 0
        self.runs = 0
        self._files: list[IO[bytes]] = []
        self._scan()

    # -- pass 1 ---------------------------------------------------------------------------------
    def _scan(self) -> None:
        """Keys of every line: which reorder buffer (if any) within the budget sorts this log."""
        size = 0
        keys = lines = 0
        last: Key | None = None
        recent: deque[Key] = deque(maxlen=_CAPACITIES[-1] + 1)  # the largest capacity simulated, and one
        sims: dict[int, tuple[list[Key], list[Key | None]]] | None = None  # capacity: (held, [last emitted])
        on_lines, strict = self.on_lines, self.strict
        for number, raw in self._lines():
            lines += 1
            size += len(raw)
            if on_lines is not None and lines % 4096 == 0:
                on_lines(4096)
            if strict:
                try:
                    decode_log_event(raw)
                except InvalidEvent as exc:
                    self.lines = lines
                    raise StrictModeError(f"{self.path}:{number}: {exc.reason}") from None
            key = line_key(raw, number)
            if key is None:
                continue
            keys += 1
            if sims is None:
                if last is None or key >= last:  # sorted so far: a buffer would hold the newest keys
                    last = key
                    recent.append(key)
                    continue
                sims = {}
                for c in self._capacities(size / lines):
                    newest = list(recent)
                    held = newest[-c:]
                    heapq.heapify(held)
                    sims[c] = (held, [newest[-c - 1] if len(newest) > c else None])
                recent.clear()
            for c, (held, emitted) in list(sims.items()):
                if len(held) < c:
                    heapq.heappush(held, key)
                    continue
                out = heapq.heappushpop(held, key)
                if emitted[0] is not None and out < emitted[0]:
                    del sims[c]  # this capacity does not sort the log
                    continue
                emitted[0] = out
        self.lines = lines
        if on_lines is not None:
            on_lines(lines % 4096)
        self.estimate = keys
        if sims is not None:
            # what the buffer still holds comes out last, smallest first: not before what it emitted
            passing = sorted(c for c, (held, emitted) in sims.items()
                             if not held or emitted[0] is None or held[0] >= emitted[0])
            if passing:
                self.mode, self.capacity = "stream", passing[0]
            else:
                self.mode, self.capacity = "external", self._budget_capacity(size / max(self.lines, 1))

    def _capacities(self, mean_line: float) -> list[int]:
        """Reorder-buffer capacities to simulate: the budget's (for external runs: the last) caps each."""
        return sorted({min(c, self._budget_capacity(mean_line)) for c in _CAPACITIES})

    def _budget_capacity(self, mean_line: float) -> int:
        return max(16, self.memory_budget // bytes_per_event(mean_line))

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        """(line number, stripped line) of every non-blank line, as ``iter_lines`` but read in chunks."""
        for first, lines in line_chunks(self.path):
            for number, raw in enumerate(lines, first):
                raw = raw.strip()
                if raw:
                    yield number, raw

    def _refused(self, number: int, raw: bytes, exc: InvalidEvent) -> None:
        """Count a line that does not decode, keep its reason (the first ``keep_errors``), dead-letter it."""
        self.invalid += 1
        if len(self.errors) < self.keep_errors:
            self.errors.append((number, exc.reason))
        if self.on_invalid is not None:
            self.on_invalid(number, raw, exc.reason)

    # -- pass 2 ---------------------------------------------------------------------------------
    def _in_file_order(self) -> Iterator[Event]:
        """Pass 2 for a log already in event-time order (pass 1 proved it): no buffer, no keys."""
        last_ts, last_order = -1.0, 0
        order_of = _TYPE_ORDER
        for first, lines in line_chunks(self.path):
            for number, raw in enumerate(lines, first):
                raw = raw.strip()
                if not raw:
                    continue
                try:
                    event = decode_log_event(raw)
                except InvalidEvent as exc:
                    self._refused(number, raw, exc)
                    continue
                ts, order = event.ts, order_of[event.__class__]
                if ts < last_ts or (ts == last_ts and order < last_order):
                    raise RuntimeError(f"{self.path} changed while it was being replayed")
                last_ts, last_order = ts, order
                self.events += 1
                yield event

    def _decoded(self) -> Iterator[tuple[float, int, int, Event | None]]:
        """Every line with a key, decoded, in file order (invalid ones as ``None`` placeholders)."""
        for number, raw in self._lines():
            try:
                event = decode_log_event(raw)
            except InvalidEvent as exc:
                self._refused(number, raw, exc)
                key = line_key(raw, number)
                if key is not None:
                    yield (*key, None)
                continue
            yield (event.ts, _TYPE_ORDER[event.__class__], number, event)

    def __iter__(self) -> Iterator[Event]:
        if self.mode == "sorted":
            yield from self._in_file_order()
            return
        if self.mode == "external":
            merged: Iterator[tuple[float, int, int, Event | None]] = self._merge(self._spill())
        else:
            merged = self._reorder(self._decoded(), self.capacity)
        last: tuple[float, int, int] = (-1.0, 0, 0)
        for item in merged:
            if item[:3] < last:
                raise RuntimeError(f"{self.path} changed while it was being replayed")
            last = item[:3]
            event = item[3]
            if event is not None:
                self.events += 1
                yield event

    @staticmethod
    def _reorder(items: Iterator[Any], capacity: int) -> Iterator[Any]:
        if capacity == 0:
            yield from items
            return
        held: list[Any] = []
        for item in items:
            if len(held) < capacity:
                heapq.heappush(held, item)
            else:
                yield heapq.heappushpop(held, item)
        while held:
            yield heapq.heappop(held)

    def _spill(self) -> list[IO[bytes]]:
        """Sorted runs of ``capacity`` events in temporary files, msgpack blocks each."""
        assert self.workdir is not None
        runs_expected = max(1, -(-self.estimate // self.capacity))
        block = max(16, min(4096, self.capacity // runs_expected))
        run: list[tuple[float, int, int, Event]] = []
        files = self._files
        for item in self._decoded():
            if item[3] is not None:
                run.append(item)  # type: ignore[arg-type]
            if len(run) >= self.capacity:
                files.append(self._write_run(run, block))
                run = []
        if run:
            files.append(self._write_run(run, block))
        self.runs = len(files)
        return files

    def _write_run(self, run: list[tuple[float, int, int, Event]], block: int) -> IO[bytes]:
        run.sort()  # line numbers are unique: events are never compared
        fh = tempfile.TemporaryFile(dir=self.workdir)  # noqa: SIM115 (closed by close())
        for start in range(0, len(run), block):
            payload = _block_encoder.encode(run[start:start + block])
            fh.write(_LENGTH.pack(len(payload)))
            fh.write(payload)
        fh.flush()
        fh.seek(0)
        return fh

    @staticmethod
    def _read_run(fh: IO[bytes]) -> Iterator[tuple[float, int, int, Event]]:
        while head := fh.read(_LENGTH.size):
            (length,) = _LENGTH.unpack(head)
            yield from _block_decoder.decode(fh.read(length))

    def _merge(self, files: list[IO[bytes]]) -> Iterator[tuple[float, int, int, Event | None]]:
        return heapq.merge(*(self._read_run(fh) for fh in files))

    def close(self) -> None:
        for fh in self._files:
            fh.close()
        self._files.clear()


@contextmanager
def sorted_log(path: str | Path, *, memory_budget: int = DEFAULT_MEMORY_BUDGET, strict: bool = False,
               on_invalid: Callable[[int, bytes, str], None] | None = None, keep_errors: int = 20,
               on_lines: Callable[[int], None] | None = None, tmpdir: str | Path | None = None) -> Iterator[SortedLog]:
    """The log at ``path`` in event-time order within ``memory_budget`` bytes (see the module docstring).

    ``strict`` makes the first invalid line fatal before any event is returned; ``on_invalid(number,
    raw, reason)`` is called for each invalid line; ``on_lines`` as for ``load_log`` (pass 1).

    >>> import tempfile, pathlib
    >>> log = pathlib.Path(tempfile.mkdtemp()) / "log.jsonl"
    >>> _ = log.write_text('{"type":"click","event_id":"c","ts":2,"impression_id":"i"}\\n'
    ...                    '{"type":"impression","event_id":"e","ts":2,"impression_id":"i","arm":"a"}\\n')
    >>> with sorted_log(log) as events:
    ...     [type(e).__name__ for e in events], events.mode
    (['Impression', 'Click'], 'stream')
    """
    if memory_budget < 1:
        raise ValueError("memory_budget must be >= 1 byte")
    with tempfile.TemporaryDirectory(prefix="banditloop-sort-", dir=tmpdir) as work:
        log = SortedLog(Path(path), Path(work), memory_budget, strict, on_invalid, keep_errors, on_lines)
        try:
            yield log
        finally:
            log.close()
