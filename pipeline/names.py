"""Model and shard names as the checkpoint tables store them, without importing SQLAlchemy.

:mod:`banditloop.pipeline.runner` checks names before any work is done, and a run that writes no
checkpoint (``simulate --no-checkpoint``) must not pay SQLAlchemy's import (~0.3 s) for that;
:mod:`banditloop.pipeline.checkpoint_tables` re-exports these names.

>>> check_name("model", "linucb")
'linucb'
>>> check_name("shard", "")
Traceback (most recent call last):
...
ValueError: shard name must be 1 to 200 printable characters, got '' (0 characters)
"""

from __future__ import annotations

DEFAULT_SHARD = "main"
#: model and shard names are stored in columns of this width
MAX_NAME_LENGTH = 200


def check_name(kind: str, name: str) -> str:
    """``name`` if it fits a model or shard column; else ValueError (before any work is done, not
    when the first checkpoint is written)."""
    if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise ValueError(f"{kind} name must be 1 to {MAX_NAME_LENGTH} printable characters, got {name[:40]!r}"
                         f"{'...' if len(name) > 40 else ''} ({len(name)} characters)")
    return name
