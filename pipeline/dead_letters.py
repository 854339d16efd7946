"""Where events that cannot be applied go, with the reason: a JSON-lines file for offline runs.

(Live consumption publishes the same records to a dead-letter topic: see ``banditloop.pipeline.producer``.)
"""

from __future__ import annotations

import base64
import codecs
import hashlib
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

#: a dead letter keeps at most this many bytes of its payload, in files and topics alike; a longer
#: payload is cut and the record says so, with the whole payload's length and SHA-256. (Copying,
#: escaping and writing whole megabyte payloads made consumption several times slower; a JSON-escaped
#: record now stays under 400 KB, well within a Kafka message.)
MAX_DEAD_LETTER_PAYLOAD = 64 * 1024


def dead_letter_record(payload: bytes, reason: str, source: str) -> dict[str, Any]:
    """``{reason, source, payload | payload_base64}``: the payload as text when it is valid UTF-8,
    else base64. Over :data:`MAX_DEAD_LETTER_PAYLOAD` bytes only that many are kept (text is cut at
    a character boundary) and the record adds ``payload_truncated: true``, the whole payload's
    ``payload_bytes`` and its ``payload_sha256`` (hex), to recognise it in the source.

    >>> record = dead_letter_record(b"x" * 100_000, "oversized: ...", "log:1")
    >>> len(record["payload"]), record["payload_bytes"], record["payload_sha256"][:12]
    (65536, 100000, 'd69e68988157')
    """
    truncated = len(payload) > MAX_DEAD_LETTER_PAYLOAD
    kept = payload[:MAX_DEAD_LETTER_PAYLOAD] if truncated else payload
    try:  # a cut payload may end inside a character: keep the text up to it
        decoded = codecs.getincrementaldecoder("utf-8")().decode(kept, final=not truncated)
        text: dict[str, Any] = {"payload": decoded}
    except UnicodeDecodeError:
        text = {"payload_base64": base64.b64encode(kept).decode("ascii")}
    record = {"reason": reason, "source": source, **text}
    if truncated:
        record["payload_truncated"] = True
        record["payload_bytes"] = len(payload)
        record["payload_sha256"] = hashlib.sha256(payload).hexdigest()
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
