"""The ``banditloop`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from importlib import import_module

from banditloop.commands import COMMAND_MODULES
from banditloop.commands.common import CommandError, apply_env_defaults


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The parser; options default from ``$BANDITLOOP_<OPTION>`` in ``environ`` (default ``os.environ``)."""
    parser = argparse.ArgumentParser(
        prog="banditloop",
        description="Streaming online learning for ads and recommendations: event logs and Kafka topics "
                    "into contextual bandits, checkpoints in a database, and a scoring operator.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        import_module(module).register(subparsers)
    apply_env_defaults(parser, environ)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CommandError as exc:
        print(f"banditloop {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"banditloop {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
