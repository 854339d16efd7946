"""``banditloop produce``: publish an event log to the topics, in event-time order."""

from __future__ import annotations

import argparse

from banditloop.commands.common import add_output_options, emit


def register(subparsers: argparse._SubParsersAction) -> None:
    from banditloop.commands.consume import add_topic_options

    p = subparsers.add_parser(
        "produce", help="publish a log (.jsonl / .jsonl.gz) to the Kafka topics in event-time order",
        description="Every event is keyed by impression_id, so an impression and its feedback land in the same "
                    "partition number of topics with equal partition counts. Invalid lines are counted and skipped.")
    p.add_argument("log", help="event log path")
    p.add_argument("--bootstrap", required=True, metavar="HOST:PORT")
    add_topic_options(p)
    add_output_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from banditloop.commands.common import CommandError
    from banditloop.commands.consume import topic_names
    from banditloop.pipeline.producer import produce_log
    from banditloop.pipeline.topics import ensure_topics

    topics = topic_names(args)
    if args.partitions:
        ensure_topics(args.bootstrap, topics, args.partitions)
    try:
        summary = produce_log(args.log, args.bootstrap, topics)
    except FileNotFoundError as exc:
        raise CommandError(f"no such log: {exc.filename}") from None
    emit({"command": "produce", "log": args.log, "bootstrap": args.bootstrap, **summary}, args)
    return 0
