"""The house: every module imports only from floors below it (or its own room), no circles.

Floors, bottom up: ``core`` < ``operators``, ``simulators`` < ``pipeline`` < ``serving`` < ``demo`` <
``commands`` < ``cli``. All imports count, function-local ones too.
"""

from __future__ import annotations

import ast
import doctest
import importlib
from pathlib import Path

import pytest

import banditloop

ROOT = Path(__file__).resolve().parents[1]

#: source directory -> (dotted package, floor)
ROOMS: dict[str, tuple[str, int]] = {
    "core": ("banditloop.core", 1),
    "operators": ("banditloop.operators", 2),
    "simulators": ("banditloop.simulators", 2),
    "pipeline": ("banditloop.pipeline", 3),
    "serving": ("banditloop.serving", 4),
    "banditloop/commands": ("banditloop.commands", 6),
    "banditloop/demo": ("banditloop.demo", 5),
    "evaluation": ("banditloop.evaluation", 5),
}
TOP_MODULES = {"banditloop.cli": 7}
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for directory, (package, _) in ROOMS.items():
        for path in sorted((ROOT / directory).rglob("*.py")):
            parts = path.relative_to(ROOT / directory).with_suffix("").parts
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    found["banditloop.cli"] = ROOT / "banditloop" / "cli.py"
    return found


def _floor(module: str) -> int | None:
    if module in TOP_MODULES:
        return TOP_MODULES[module]
    for package, floor in ROOMS.values():
        if module == package or module.startswith(package + "."):
            return floor
    return None


def _room(module: str) -> str | None:
    for package, _ in ROOMS.values():
        if module == package or module.startswith(package + "."):
            return package
    return module if module in TOP_MODULES else None


def _imports(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name.startswith("banditloop"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target == "banditloop" and [alias.name for alias in node.names] == ["__version__"]:
                continue  # the distribution's version, not the facade's API
            if target.startswith("banditloop"):
                out.add(target)
    return out


MODULES = _modules()
GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_every_import_goes_down_or_stays_in_its_room() -> None:
    upward = []
    for module, targets in GRAPH.items():
        for target in targets:
            if target == "banditloop":
                upward.append(f"{module} -> banditloop (import the defining module, not the facade)")
                continue
            own, theirs = _floor(module), _floor(target)
            assert own is not None and theirs is not None, (module, target)
            if theirs > own or (theirs == own and _room(module) != _room(target)):
                upward.append(f"{module} (floor {own}) -> {target} (floor {theirs})")
    assert not upward, "\n".join(sorted(upward))


def test_no_circles_between_modules() -> None:
    graph = {m: {t for t in ts if t in GRAPH and t != m} for m, ts in GRAPH.items()}
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                circles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    # a package's __init__ re-exporting its own modules is not a circle of responsibilities
    real = [c for c in circles if not any(MODULES[m].name == "__init__.py" for m in c[:-1])]
    assert not real, "\n".join(" -> ".join(c) for c in real)


def test_no_module_is_longer_than_the_limit() -> None:
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_public_api_resolves_every_name() -> None:
    for name in banditloop.__all__:
        assert getattr(banditloop, name) is not None, name
    with pytest.raises(AttributeError):
        banditloop.NoSuchThing  # noqa: B018


@pytest.mark.parametrize("module", ["banditloop", *sorted(MODULES)])
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), verbose=False, report=True)
    assert result.failed == 0, f"{module}: {result.failed} of {result.attempted} examples failed"


def test_every_public_class_carries_a_runnable_example() -> None:
    import inspect

    bare = [name for name in banditloop.__all__
            if inspect.isclass(cls := getattr(banditloop, name)) and ">>>" not in (cls.__doc__ or "")]
    assert not bare, f"public classes without an example in their docstring: {bare}"


def test_the_facade_has_a_runnable_example() -> None:
    assert doctest.testmod(importlib.import_module("banditloop")).attempted >= 5
