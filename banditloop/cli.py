"""The ``banditloop`` command: the parser, and the one error boundary every command runs inside.

Every user error (a bad database URL, an unreachable broker, a missing or truncated file, a bad
option value) ends as one line on stderr, ``banditloop COMMAND: error: ...``, and exit status 2;
Ctrl-C as ``interrupted`` and 130; a closed stdout (``banditloop models | head -1``) as one line
saying the output was cut short, and 2, so a script with ``pipefail`` sees a usage error rather than a
crash. The messages come from one table,
:mod:`banditloop.commands.errors`. Anything else is a bug: one line and exit status 1.
``--debug`` (anywhere on the command line) or ``BANDITLOOP_DEBUG=1`` adds the traceback.

This module imports almost nothing at module level: whatever runs before :func:`main` is outside
the boundary (a Ctrl-C there is reported by Python itself), so that part is kept as short as it
can be; the parser lives in :mod:`banditloop.commands.parser`.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse
    from collections.abc import Collection, Mapping

EXIT_USAGE = 2
EXIT_BUG = 1
EXIT_INTERRUPTED = 130
DEBUG_ENV = "BANDITLOOP_DEBUG"


def build_parser(environ: Mapping[str, str] | None = None,
                 commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The parser (:func:`banditloop.commands.parser.build_parser`): options default from
    ``$BANDITLOOP_<OPTION>`` in ``environ`` (default ``os.environ``); ``commands``: the sub-commands
    registered with all their options (default: all)."""
    from banditloop.commands.parser import build_parser as build

    return build(environ, commands)


def _command_of(argv: list[str]) -> str | None:
    """The sub-command named on the command line (the first word that is not an option)."""
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word
    return None


def _debug_requested(argv: list[str], environ: Mapping[str, str]) -> bool:
    """``--debug`` anywhere before ``--`` (removed from ``argv``), or ``$BANDITLOOP_DEBUG`` set."""
    end = argv.index("--") if "--" in argv else len(argv)
    found = "--debug" in argv[:end]
    if found:
        argv.remove("--debug")
    return found or environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(argv, os.environ)
    args: argparse.Namespace | None = None
    try:
        command = _command_of(argv)
        args = build_parser(None, () if command is None else (command,)).parse_args(argv)
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe is reported here, not by the interpreter at exit
        return status
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - the one boundary: everything ends here
        return _report(exc, args, argv, debug)


def _report(exc: BaseException, args: argparse.Namespace | None, argv: list[str], debug: bool) -> int:
    import traceback

    from banditloop.commands.errors import describe

    command = getattr(args, "command", None) or _command_of(argv)
    prefix = f"banditloop {command}" if command else "banditloop"
    if isinstance(exc, BrokenPipeError):
        _silence_stdout()
        print(f"{prefix}: error: the output was closed before it was all written (broken pipe); "
              "the rest was dropped", file=sys.stderr, flush=True)
        return EXIT_USAGE
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, KeyboardInterrupt):
        print(f"{prefix}: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    message = describe(exc, args)
    if message is not None:
        print(f"{prefix}: error: {message}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    from banditloop.commands.errors import one_line

    detail = f"{type(exc).__name__}: {one_line(str(exc))}" if str(exc).strip() else type(exc).__name__
    hint = "" if debug else "run again with --debug for the traceback, and "
    print(f"{prefix}: internal error: {detail} ({hint}please report it)", file=sys.stderr, flush=True)
    return EXIT_BUG


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
