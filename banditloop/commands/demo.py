"""``banditloop demo``: broker, scorer, consumer and simulated users, live on loopback."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from banditloop.commands.common import CommandError, add_db_option, add_output_options, db_url, emit, parse_params


def register(subparsers: argparse._SubParsersAction) -> None:
    from banditloop.operators.registry import LEARNERS

    p = subparsers.add_parser(
        "demo", help="the whole loop live: broker, scorer, consumer and simulated users (about a minute)",
        description="Starts the development Kafka broker (memory only), `banditloop consume` (learning and "
                    "checkpointing to --db) and `banditloop serve --bootstrap` (reloading every second) as "
                    "subprocesses, then a simulated population of users that ask the scorer for ads at --rate "
                    "requests/s; the simulated world decides clicks and conversions with known probabilities and "
                    "they reach the topics through POST /feedback after their delays. Shows the served policy's "
                    "CTR against the oracle and uniform random, the model version and the checkpoint backlog; at the "
                    "end writes OUT/demo-regret.png and OUT/demo-summary.json and stops everything (Ctrl-C stops "
                    "early and still writes them; a second Ctrl-C aborts).")
    p.add_argument("--learner", "--policy", dest="learner", default="linucb", choices=list(LEARNERS),
                   help="learner (default linucb)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="learner hyper-parameter (repeatable; default for the LinUCB family: alpha=0.3)")
    p.add_argument("--model", default=None, help="model name (default demo-LEARNER-TIME; must be new)")
    world = p.add_argument_group("world")
    world.add_argument("--arms", type=int, default=10, help="number of arms (ads)")
    world.add_argument("--dim", type=int, default=8, help="context dimension")
    world.add_argument("--seed", type=int, default=7)
    world.add_argument("--world", action="append", default=[], metavar="KEY=VALUE",
                       help="any WorldConfig field, e.g. --world base_ctr=0.05 --world click_delay_mean=5")
    run = p.add_argument_group("run")
    length = run.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float, default=60.0, help="length of the load (default 60)")
    length.add_argument("--requests", type=int, default=None, help="stop after this many requests instead")
    run.add_argument("--rate", type=float, default=150.0, help="requests per second (default 150)")
    run.add_argument("--workers", type=int, default=8, help="concurrent simulated users (HTTP connections)")
    run.add_argument("--partitions", type=int, default=2, help="partitions of each event topic")
    run.add_argument("--checkpoint-interval", type=float, default=1.0, metavar="SECONDS")
    run.add_argument("--reload-interval", type=float, default=1.0, metavar="SECONDS")
    p.add_argument("--out", default="out", metavar="DIR", help="where the plot, summary and logs go (default out/)")
    add_db_option(p)
    add_output_options(p)
    p.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    from banditloop.demo import DEMO_WORLD, DemoError, DemoOptions, run_demo
    from banditloop.pipeline.broker import BrokerError
    from banditloop.simulators.world import WorldConfig

    if args.rate <= 0 or args.workers < 1 or args.partitions < 1 or args.arms < 2 or args.dim < 1:
        raise CommandError("--rate must be > 0, --workers and --partitions >= 1, --arms >= 2, --dim >= 1")
    if (args.seconds is not None and args.seconds <= 0) or (args.requests is not None and args.requests < 1):
        raise CommandError("--seconds must be > 0 and --requests >= 1")
    if args.checkpoint_interval <= 0 or args.reload_interval <= 0:
        raise CommandError("--checkpoint-interval and --reload-interval must be > 0")
    world = parse_params(args.world)
    try:
        WorldConfig(arms=args.arms, dim=args.dim, seed=args.seed, **{**DEMO_WORLD, **world})
    except (TypeError, ValueError) as exc:
        raise CommandError(f"--world: {exc}") from None
    options = DemoOptions(
        learner=args.learner, params=parse_params(args.param), arms=args.arms, dim=args.dim,
        seconds=None if args.requests else args.seconds, requests=args.requests, rate=args.rate, db=db_url(args),
        out=Path(args.out), checkpoint_interval=args.checkpoint_interval, reload_interval=args.reload_interval,
        partitions=args.partitions, seed=args.seed, model=args.model, world=world,
        workers=args.workers, view=not (args.quiet or args.json))
    try:
        summary = run_demo(options, stream=sys.stderr if not args.quiet else io.StringIO())
    except (DemoError, BrokerError) as exc:
        raise CommandError(str(exc)) from None
    emit(summary, args, hide=("consumer", "logs", "exit_codes", "learned", "request_errors", "feedback_errors"))
    return 0
