"""Where events that cannot be applied go, with the reason: a JSON-lines file for offline runs.

(Live consumption publishes the same records to a dead-letter topic: see ``banditloop.pipeline.producer``.)
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

#: where unusable input goes: ``sink(payload, reason, source)`` with the raw bytes (an event that the
#: join refuses is re-encoded), a human-readable reason (its text up to the first ``:`` is the
#: category counted in summaries) and where it came from (``file:line``, ``topic/partition/offset``,
#: ``join/<shard>``). The one dead-letter callback type of the pipeline.
DeadLetterSink = Callable[[bytes, str, str], None]

#: payloads longer than this are cut (and flagged) in dead-letter records, in files and topics alike
MAX_DEAD_LETTER_PAYLOAD = 256 * 1024


def dead_letter_record(payload: bytes, reason: str, source: str) -> dict[str, Any]:
    """``{reason, source, payload | payload_base64}``: the payload as text when it is valid UTF-8,
    else base64; over :data:`MAX_DEAD_LETTER_PAYLOAD` bytes it is cut and flagged with
    ``payload_truncated: true`` and the original ``payload_bytes``."""
    kept = payload[:MAX_DEAD_LETTER_PAYLOAD]
    try:
        text: dict[str, Any] = {"payload": kept.decode("utf-8")}
    except UnicodeDecodeError:
        text = {"payload_base64": base64.b64encode(kept).decode("ascii")}
    record = {"reason": reason, "source": source, **text}
    if len(payload) > MAX_DEAD_LETTER_PAYLOAD:
        record["payload_truncated"] = True
        record["payload_bytes"] = len(payload)
    return record


class DeadLetterFile:
    """Appends dead letters to a JSON-lines file, opened on the first one; counts reasons."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)
        self._fh: IO[str] | None = None
        self.reasons: Counter[str] = Counter()

    def raw(self, payload: bytes, reason: str, source: str) -> None:
        self.reasons[reason.split(":", 1)[0]] += 1
        if self.path is None:
            return
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._fh.write(json.dumps(dead_letter_record(payload, reason, source)) + "\n")

    @property
    def count(self) -> int:
        return sum(self.reasons.values())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
