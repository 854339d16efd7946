"""``banditloop learners``: the learner names and their hyper-parameters.

The learners are described from their source (class docstring and ``__init__`` signature, read
with :mod:`ast`) rather than imported: importing them all pulls in numpy, scipy and river, seconds
of start-up for a listing. A learner whose source cannot be read that way is imported instead.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
from dataclasses import asdict, dataclass
from typing import Any

HELP = "list learners and their hyper-parameters (--param KEY=VALUE)"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("learners", help=HELP,
                              description="Every learner's CLI name (--learner), what it is, and its "
                                          "hyper-parameters with their defaults (set them with --param KEY=VALUE).")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=run)


@dataclass(frozen=True)
class LearnerInfo:
    name: str
    cls: str
    description: str
    params: dict[str, Any]


def run(args: argparse.Namespace) -> int:
    import json

    from banditloop.operators.registry import LEARNERS

    infos = [describe_learner(name, target) for name, target in LEARNERS.items()]
    if args.json:
        print(json.dumps({"learners": [asdict(info) for info in infos]}))
        return 0
    for info in infos:
        params = " ".join(f"{key}={value!r}" for key, value in info.params.items())
        print(f"{info.name:<14} {info.description}\n{'':<14} {params}".rstrip())
    return 0


def describe_learner(name: str, target: str) -> LearnerInfo:
    """Name, class, one-paragraph description and hyper-parameter defaults of a ``module:Class`` learner."""
    module, cls = target.split(":")
    found = _from_source(module, cls)
    if found is None:
        found = _from_import(module, cls)
    description, params = found
    return LearnerInfo(name=name, cls=cls, description=description, params=params)


#: constructor arguments that are not hyper-parameters (set by the pipeline, not by --param)
_NOT_PARAMS = ("self", "dim")


def _from_source(module: str, cls: str) -> tuple[str, dict[str, Any]] | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    with open(spec.origin, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), spec.origin)
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls), None)
    init = None if node is None else next(
        (n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    if node is None or init is None:
        return None
    arguments = init.args.args + init.args.kwonlyargs
    defaults = [None] * (len(init.args.args) - len(init.args.defaults)) + list(init.args.defaults)
    defaults += list(init.args.kw_defaults)
    params: dict[str, Any] = {}
    for arg, default in zip(arguments, defaults, strict=True):
        if default is None or arg.arg in _NOT_PARAMS:
            continue
        try:
            params[arg.arg] = ast.literal_eval(default)
        except ValueError:  # not a literal (a constant's name): its value needs the import
            return None
    return _paragraph(ast.get_docstring(node) or ast.get_docstring(tree) or ""), params


def _from_import(module: str, cls: str) -> tuple[str, dict[str, Any]]:
    import inspect
    from importlib import import_module

    mod = import_module(module)
    klass = getattr(mod, cls)
    params = {p.name: p.default for p in inspect.signature(klass.__init__).parameters.values()
              if p.name not in _NOT_PARAMS and p.default is not inspect.Parameter.empty}
    return _paragraph(inspect.getdoc(klass) or mod.__doc__ or ""), params


def _paragraph(doc: str) -> str:
    """The first paragraph of a docstring as one line."""
    first = doc.strip().split("\n\n", 1)[0]
    return " ".join(first.split())
