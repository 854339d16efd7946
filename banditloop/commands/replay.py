"""``banditloop replay``: learn from an event log in event-time order and checkpoint."""

from __future__ import annotations

import argparse

from banditloop.commands.common import (
    add_db_option,
    add_feature_options,
    add_model_options,
    add_output_options,
    db_url,
    emit,
    feature_spec,
    model_config,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "replay", help="learn from an event log (.jsonl / .jsonl.gz) and write a checkpoint",
        description="Decodes and validates every line, sorts events by event time, joins clicks and "
                    "conversions to their impression by impression_id and learns. Invalid lines are "
                    "reported with their line number and skipped (--strict: fatal).")
    p.add_argument("log", help="event log path")
    add_model_options(p)
    add_feature_options(p)
    p.add_argument("--strict", action="store_true", help="stop at the first invalid line")
    p.add_argument("--resume", action="store_true",
                   help="continue from the model's newest checkpoint of this log instead of starting afresh")
    p.add_argument("--dead-letters", default=None, metavar="PATH",
                   help="append invalid and unmatched events with their reason to this JSON-lines file")
    p.add_argument("--checkpoint-interval", type=float, default=30.0, metavar="SECONDS")
    p.add_argument("--ips-weight", action="store_true",
                   help="off-policy learning: weight each update by the clipped inverse propensity "
                        "min(1/(K·propensity), --ips-clip) (linucb, lints, diag-linucb, hybrid-linucb)")
    p.add_argument("--ips-clip", type=float, default=10.0, metavar="W", help="weight cap of --ips-weight (default 10)")
    add_db_option(p)
    add_output_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from banditloop.commands.common import CommandError
    from banditloop.pipeline.checkpoints import CheckpointStore
    from banditloop.pipeline.logs import StrictModeError
    from banditloop.pipeline.replay import ReplayOptions, replay_log
    from banditloop.pipeline.runner import IncompatibleCheckpoint

    config = model_config(args, feature_spec(args))
    if args.ips_weight:
        import dataclasses

        try:
            config = dataclasses.replace(config, ips_clip=args.ips_clip)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    store = CheckpointStore(db_url(args))
    try:
        summary = replay_log(args.log, config, args.model or args.learner, store,
                             ReplayOptions(strict=args.strict, resume=args.resume, dead_letters=args.dead_letters,
                                           quiet=args.quiet or args.json,
                                           checkpoint_interval=args.checkpoint_interval))
    except FileNotFoundError as exc:
        raise CommandError(f"no such log: {exc.filename}") from None
    except (StrictModeError, IncompatibleCheckpoint) as exc:
        raise CommandError(str(exc)) from None
    finally:
        store.close()
    summary["db"] = db_url(args)
    emit(summary, args)
    return 0
