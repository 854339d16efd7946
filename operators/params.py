"""Hyper-parameters of learners, read from their constructors (river's convention)."""

from __future__ import annotations

import functools
import inspect


@functools.cache
def init_parameters(cls: type) -> tuple[str, ...]:
    """Names of the named ``__init__`` arguments of ``cls`` and its bases, base classes first."""
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in names:
                names.append(p.name)
    return tuple(names)
