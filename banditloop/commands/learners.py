"""``banditloop learners``: the learner names and their hyper-parameters."""

from __future__ import annotations

import argparse
import inspect


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("learners", help="list learners and their hyper-parameters (--param KEY=VALUE)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from banditloop.operators.registry import LEARNERS, learner_class

    for name in LEARNERS:
        try:
            cls = learner_class(name)
        except (ImportError, AttributeError) as exc:
            print(f"{name:<14} unavailable: {exc}")
            continue
        params = [f"{p.name}={p.default!r}" for p in inspect.signature(cls.__init__).parameters.values()
                  if p.name not in ("self", "dim") and p.default is not inspect.Parameter.empty]
        doc = (cls.__doc__ or inspect.getmodule(cls).__doc__ or "").strip().splitlines()[0]
        print(f"{name:<14} {doc}\n{'':<14} {' '.join(params)}")
    return 0
