"""A worker's status file: a small JSON object replaced atomically, for supervisors to poll.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "ready.json")
>>> read_status(path) is None
True
>>> write_status(path, {"partitions": [0, 1]})
>>> read_status(path)
{'partitions': [0, 1]}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_status(path: str | os.PathLike[str], status: dict[str, Any]) -> None:
    """Write ``status`` as JSON to ``path`` (write to a sibling temporary file, then rename: a reader
    never sees half a file)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(status, sort_keys=True))
    os.replace(tmp, target)


def read_status(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The status last written to ``path``, or None when there is none yet (or it is not an object)."""
    try:
        value = json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None
