"""Checks and conversions for loading a learner's exported state (no pickle: arrays and JSON)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def checked_arrays(kind: str, arrays: Mapping[str, Any],
                   shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """``arrays`` as float arrays, after checking that exactly the names of ``shapes`` are present,
    each with its shape and finite. Raises ValueError naming the first problem; returns nothing
    partial, so a learner stores either all of a state or none of it."""
    missing = set(shapes) - set(arrays)
    if missing:
        raise ValueError(f"{kind}: state lacks arrays {sorted(missing)}")
    checked: dict[str, np.ndarray] = {}
    for name, raw in arrays.items():
        if name not in shapes:
            raise ValueError(f"{kind}: unknown state array {name!r}")
        try:
            arr = np.asarray(raw, dtype=float)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{kind}: state array {name!r} is not numeric: {exc}") from None
        if arr.shape != shapes[name]:
            raise ValueError(f"{kind}: state array {name!r} has shape {arr.shape}, expected {shapes[name]}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{kind}: state array {name!r} holds NaN or inf")
        checked[name] = arr
    return checked


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The generator's state as JSON-able data."""
    state = rng.bit_generator.state
    return {"bit_generator": state["bit_generator"], "state": dict(state["state"]),
            "has_uint32": state.get("has_uint32", 0), "uinteger": state.get("uinteger", 0)}


def restore_rng(rng: np.random.Generator, state: Mapping[str, Any]) -> None:
    rng.bit_generator.state = {"bit_generator": state["bit_generator"], "state": state["state"],
                               "has_uint32": state.get("has_uint32", 0), "uinteger": state.get("uinteger", 0)}
