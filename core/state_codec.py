"""Learner states to bytes and back without pickle.

Arrays go into an ``.npz`` archive read back with ``allow_pickle=False`` (numeric dtypes only, so
a crafted archive cannot execute code); everything else (kind, hyper-parameters, arm ids, counters,
random-generator state) is JSON. Both are validated on the way in: names, shapes and finiteness are
checked by the learner's ``from_state``.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class LearnerState:
    """A learner's complete state in plain types: JSON-able fields plus named numpy arrays.

    >>> state = LearnerState(kind="ucb1", params={"c": 1.0}, arms=["a"], retired=[],
    ...                      arrays={"n": np.array([3.0])}, counters={"impressions": 3.0})
    >>> again = decode_state(*encode_state(state))      # .npz bytes + JSON: no pickle
    >>> again.arms, again.arrays["n"].tolist(), again.params
    (['a'], [3.0], {'c': 1.0})
    """

    kind: str
    params: dict[str, Any]
    arms: list[str]
    retired: list[str]
    arrays: dict[str, np.ndarray]
    counters: dict[str, float]
    rng: dict[str, Any] = field(default_factory=dict)


_META_KEYS = ("kind", "params", "arms", "retired", "counters", "rng")


class CorruptState(ValueError):
    """Stored state that cannot be decoded into a learner state."""


def encode_arrays(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    for name, arr in arrays.items():
        if arr.dtype.kind not in "fiub":
            raise ValueError(f"array {name!r} has non-numeric dtype {arr.dtype}")
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stubs type **kwds as the allow_pickle flag
    return buf.getvalue()


#: A stored state may not inflate to more than this many bytes: a compressed archive is checked
#: member by member *before* anything is decompressed (a small row must not cost gigabytes).
MAX_STATE_BYTES = 4 * 1024**3


def decode_arrays(data: bytes, max_bytes: int = MAX_STATE_BYTES) -> dict[str, np.ndarray]:
    """The named arrays of a ``.npz`` archive: no pickle, at most ``max_bytes`` once inflated."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CorruptState(f"state arrays unreadable: {exc}") from exc
    if inflated > max_bytes:
        raise CorruptState(f"state arrays would inflate to {inflated} bytes, more than the {max_bytes} allowed")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except Exception as exc:  # zipfile, ValueError (object arrays), OSError...
        raise CorruptState(f"state arrays unreadable: {exc}") from exc


def state_meta(state: LearnerState) -> dict[str, Any]:
    return {"kind": state.kind, "params": state.params, "arms": state.arms, "retired": state.retired,
            "counters": state.counters, "rng": state.rng}


def encode_state(state: LearnerState) -> tuple[bytes, str]:
    """(array bytes, metadata JSON) for one learner state."""
    return encode_arrays(state.arrays), json.dumps(state_meta(state), sort_keys=True)


def decode_state(arrays: bytes, meta_json: str) -> LearnerState:
    try:
        meta = json.loads(meta_json)
    except (TypeError, ValueError) as exc:
        raise CorruptState(f"state metadata is not JSON: {exc}") from exc
    if not isinstance(meta, dict) or any(k not in meta for k in _META_KEYS[:5]):
        raise CorruptState("state metadata lacks kind/params/arms/retired/counters")
    return LearnerState(kind=meta["kind"], params=meta["params"], arms=list(meta["arms"]),
                        retired=list(meta["retired"]), arrays=decode_arrays(arrays),
                        counters=dict(meta["counters"]), rng=meta.get("rng") or {})
