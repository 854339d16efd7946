"""The ``banditloop`` argument parser: one-line usage errors, defaults in ``--help``, and only the
command being run registered in full (its options may need the learner registry, which imports
numpy); the others get a one-line entry for ``--help``.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Collection, Mapping
from importlib import import_module

from banditloop.commands import COMMAND_MODULES

EXIT_USAGE = 2


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to every option whose default means something and whose help does not
    already say it (``None``, ``False`` and empty lists are not shown)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if _shows_default(action) and "default" not in text.lower():
            text = f"{text} (default: %(default)s)" if text else "default: %(default)s"
        return text

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and _shows_default(action):
            action = copy.copy(action)
            action.help = "default: %(default)s"
        return super()._format_action(action)


def _shows_default(action: argparse.Action) -> bool:
    default = action.default
    return (bool(action.option_strings) and action.help is not argparse.SUPPRESS
            and default is not None and default is not argparse.SUPPRESS and not isinstance(default, bool)
            and default not in ([], "", ()))


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage dump) and whose help shows defaults."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - argparse's own signature
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(environ: Mapping[str, str] | None = None,
                 commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The parser; options default from ``$BANDITLOOP_<OPTION>`` in ``environ`` (default ``os.environ``).

    ``commands``: the sub-commands to register with all their options (default: all); the others
    can be listed by ``--help`` but not run.
    """
    from banditloop.commands.common import apply_env_defaults

    parser = Parser(
        prog="banditloop",
        description="Streaming online learning for ads and recommendations: event logs and Kafka topics "
                    "into contextual bandits, checkpoints in a database, and a scoring operator.",
        epilog="Every long option can also be set by $BANDITLOOP_<OPTION> (--db: $BANDITLOOP_DB). "
               "Errors are one line and exit status 2; --debug (or BANDITLOOP_DEBUG=1) shows the traceback.")
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (anywhere on the line)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        module = import_module(module_name)
        name = module_name.rpartition(".")[2]
        if commands is None or name in commands:
            module.register(subparsers)
        else:
            subparsers.add_parser(name, help=_summary(module))
    apply_env_defaults(parser, environ)
    return parser


class _VersionAction(argparse.Action):
    """``--version``, reading the installed metadata only when asked (importlib.metadata is slow)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs) -> None:  # noqa: ANN003
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> None:
        from banditloop import __version__

        print(f"banditloop {__version__}")
        parser.exit(0)


def _summary(module: object) -> str:
    """A command module's one-line help: its ``HELP``, else its docstring's ``banditloop X``: part."""
    text = getattr(module, "HELP", None)
    if text:
        return text
    doc = (getattr(module, "__doc__", None) or "").strip().splitlines()
    first = doc[0] if doc else ""
    return first.split(": ", 1)[1].rstrip(".") if ": " in first else first
