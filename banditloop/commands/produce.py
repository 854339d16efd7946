"""``banditloop produce``: publish an event log to the topics, in event-time order."""

from __future__ import annotations

import argparse

from banditloop.commands.common import add_output_options, emit

HELP = "publish a log (.jsonl / .jsonl.gz) to the Kafka topics in event-time order"


def register(subparsers: argparse._SubParsersAction) -> None:
    from banditloop.commands.consume import add_topic_options

    p = subparsers.add_parser(
        "produce", help=HELP,
        description="Every event is keyed by impression_id, so an impression and its feedback land in the same "
                    "partition number of topics with equal partition counts. Missing topics are created first: "
                    "with --partitions partitions, else with the count of the event topics that exist, else with "
                    "the broker's default. Invalid lines are counted and skipped.")
    p.add_argument("log", help="event log path")
    p.add_argument("--bootstrap", required=True, metavar="HOST:PORT", help="Kafka bootstrap servers")
    add_topic_options(p)
    p.add_argument("--no-create-topics", action="store_true",
                   help="fail (in seconds, with a message) instead of creating missing topics")
    add_output_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from banditloop.commands.common import CommandError
    from banditloop.commands.consume import topic_names
    from banditloop.pipeline.producer import produce_log
    from banditloop.pipeline.topics import ensure_topics, missing_topics

    log = Path(args.log)
    if not log.is_file():  # before connecting to anything
        raise CommandError(f"{args.log} is a directory; expected an event log file" if log.is_dir()
                           else f"no such log: {args.log}")
    topics = topic_names(args)
    if args.no_create_topics:
        missing = missing_topics(args.bootstrap, topics, timeout=5.0)
        if missing:
            raise CommandError(f"topics {', '.join(missing)} do not exist at {args.bootstrap}; create them "
                               "(drop --no-create-topics, or `banditloop broker --partitions N` for the dev broker)")
    else:
        ensure_topics(args.bootstrap, topics, args.partitions, timeout=10.0)
    summary = produce_log(args.log, args.bootstrap, topics, quiet=args.quiet or args.json)
    emit({"command": "produce", "log": args.log, "bootstrap": args.bootstrap, **summary}, args)
    return 0
