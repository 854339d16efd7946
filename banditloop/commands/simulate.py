"""``banditloop simulate``: the closed loop against a simulated world, in one process."""

from __future__ import annotations

import argparse

from banditloop.commands.common import (
    add_db_option,
    add_model_options,
    add_output_options,
    add_overwrite_options,
    add_retention_option,
    db_url,
    emit,
    model_config,
    parse_params,
    warn,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "simulate", help="run a learner against a simulated world (regret is exact)",
        description="Closed loop in one process: the world draws requests, the learner chooses, clicks and "
                    "conversions arrive after their delays and are learned through the same join as replay. "
                    "Prints reward, regret, and the oracle's and uniform random's expected rewards.")
    add_model_options(p)
    world = p.add_argument_group("world")
    world.add_argument("--arms", type=int, default=10, help="number of arms K")
    world.add_argument("--dim", type=int, default=8, help="context dimension d")
    world.add_argument("--steps", type=int, default=10_000, help="requests to simulate")
    world.add_argument("--seed", type=int, default=0)
    world.add_argument("--candidates", type=int, default=None, help="arms offered per request (default all)")
    world.add_argument("--click-delay", type=float, default=30.0, help="mean click delay, seconds")
    world.add_argument("--conversion-delay", type=float, default=3600.0, help="mean conversion delay, seconds")
    world.add_argument("--drift", type=float, default=0.0, help="random-walk drift of the true parameters")
    world.add_argument("--churn", type=float, default=0.0, help="per-step probability an arm is replaced")
    world.add_argument("--rate", type=float, default=10.0, help="requests per second of event time")
    world.add_argument("--feedback-batch", type=int, default=0, metavar="DELTA",
                       help="reveal outcomes in batches every DELTA steps (Chapelle & Li 2011); sets the join "
                            "windows to 3/4 of a batch so each batch is learned before the next")
    world.add_argument("--arm-means", type=float, nargs=2, default=None, metavar=("A", "B"),
                       help="context-free Bernoulli arms with click probability ~ Beta(A, B)")
    world.add_argument("--arm-probabilities", type=float, nargs="+", default=None, metavar="P",
                       help="context-free arms with these click probabilities (one per arm)")
    world.add_argument("--change-point", action="append", default=[], metavar="STEP:SLOT:P",
                       help="from STEP on, the arm in SLOT has click probability P (repeatable)")
    world.add_argument("--world", action="append", default=[], metavar="KEY=VALUE",
                       help="any other WorldConfig field, e.g. --world base_ctr=0.05")
    world.add_argument("--shared-dim", type=int, default=64, help="shared (context × arm) features, hybrid-linucb")
    p.add_argument("--out", default=None, metavar="LOG.jsonl", help="write the event log (.gz compresses)")
    p.add_argument("--bootstrap", default=None, metavar="HOST:PORT",
                   help="also publish the world's events to the Kafka topics as they happen")
    p.add_argument("--partitions", type=int, default=None,
                   help="with --bootstrap: create missing topics with this many partitions (default: as the "
                        "existing event topics, else the broker's default)")
    p.add_argument("--batch", type=int, default=1, metavar="N",
                   help="score N consecutive requests together with the parameters frozen, as concurrent requests "
                        "at a scorer (feedback arriving meanwhile is learned after their choices); default 1")
    p.add_argument("--checkpoint-interval", type=float, default=30.0, metavar="SECONDS")
    p.add_argument("--no-checkpoint", action="store_true", help="do not write checkpoints")
    add_overwrite_options(p, resume=None)
    add_db_option(p)
    add_retention_option(p)
    add_output_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from banditloop.commands.common import CommandError
    from banditloop.core.features import FeatureSpec, dense_names
    from banditloop.core.reward import RewardSpec
    from banditloop.pipeline.sim_warnings import feedback_warnings
    from banditloop.pipeline.simulate import SimulationOptions, simulate
    from banditloop.simulators.world import WorldConfig

    args.param = args.param or []
    for option in ("arms", "dim", "steps", "batch"):
        if getattr(args, option) < 1:
            raise CommandError(f"--{option} must be >= 1, got {getattr(args, option)}")
    if args.partitions is not None and args.partitions < 1:
        raise CommandError(f"--partitions must be >= 1, got {args.partitions}")
    if args.out is not None:
        _check_out(args.out)
    features = FeatureSpec(dim=args.dim + 1, numeric=dense_names("x", args.dim))
    config = model_config(args, features)
    try:
        changes = []
        for item in args.change_point:
            step, slot, p = item.split(":")
            changes.append((int(step), int(slot), float(p)))
        literature = {"feedback_batch": args.feedback_batch, "change_points": tuple(changes),
                      "arm_means": None if args.arm_means is None else tuple(args.arm_means),
                      "arm_probabilities": None if args.arm_probabilities is None else tuple(args.arm_probabilities)}
        world = WorldConfig(arms=args.arms, dim=args.dim, seed=args.seed, candidates=args.candidates,
                            click_delay_mean=args.click_delay, conversion_delay_mean=args.conversion_delay,
                            drift=args.drift, churn=args.churn, rate=args.rate,
                            reward=RewardSpec(kind=args.reward, weight=args.conversion_weight),
                            **{**literature, **parse_params(args.world)})
    except (TypeError, ValueError) as exc:
        raise CommandError(f"world: {exc}") from None
    model = args.model or args.learner
    store = None
    if not args.no_checkpoint:  # SQLAlchemy is imported only when checkpoints are written
        from banditloop.pipeline.checkpoints import CheckpointStore

        store = CheckpointStore(db_url(args), keep=args.keep)
    if world.feedback_batch:
        import dataclasses

        from banditloop.pipeline.join import JoinConfig

        window = world.feedback_batch_window
        config = dataclasses.replace(config, join=JoinConfig(click_window=window, conversion_window=window,
                                                             allowed_lateness=0.0, clock_skew=0.0))
    notes = feedback_warnings(config.new_learner(), config, world, args.steps)
    for note in notes:
        warn(args, note)
    producer = None
    try:
        if store is not None:
            from banditloop.commands.protect import check_target

            check_target(store, model, config, {"kind": "simulation", "seed": args.seed}, force=args.force,
                         resume_flag=False)
        if args.bootstrap:
            from banditloop.pipeline.producer import EventProducer
            from banditloop.pipeline.topics import TopicNames, ensure_topics

            ensure_topics(args.bootstrap, TopicNames(), args.partitions, timeout=10.0)  # creates missing ones
            producer = EventProducer(args.bootstrap, TopicNames())
    except BaseException:
        if store is not None:
            store.close()
        raise
    try:
        summary = simulate(world, config, model, store,
                           SimulationOptions(steps=args.steps, out=args.out, quiet=args.quiet or args.json,
                                             checkpoint_interval=args.checkpoint_interval, batch=args.batch,
                                             on_event=None if producer is None else producer.send))
    finally:
        if store is not None:
            store.close()
        if producer is not None:
            producer.flush()
            producer.close()
    if args.json:  # the text output has them on stderr, before the run
        summary["warnings"] = notes
    if store is not None:
        summary["db"] = db_url(args)
    else:
        summary.pop("version", None)  # nothing was written (--no-checkpoint)
    emit(summary, args)
    return 0


def _check_out(out: str) -> None:
    """``--out`` names a file in an existing directory (no directories are created)."""
    from pathlib import Path

    from banditloop.commands.common import CommandError

    path = Path(out)
    if path.is_dir():
        raise CommandError(f"--out {out} is a directory; give a file name, e.g. {path / 'events.jsonl.gz'}")
    if not path.parent.is_dir():
        raise CommandError(f"--out {out}: directory {path.parent} does not exist; create it first")
