"""``banditloop replay``: learn from an event log in event-time order and checkpoint."""

from __future__ import annotations

import argparse

from banditloop.commands.common import (
    add_db_option,
    add_feature_options,
    add_model_options,
    add_output_options,
    add_overwrite_options,
    add_retention_option,
    db_url,
    emit,
    feature_spec,
    model_config,
    positive_float,
    warn,
)

HELP = "learn from an event log (.jsonl / .jsonl.gz) and write a checkpoint"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "replay", help=HELP,
        description="Decodes and validates every line, sorts events by event time, joins clicks and "
                    "conversions to their impression by impression_id and learns. Invalid lines are "
                    "reported with their line number and skipped (--strict: fatal). An existing --model "
                    "written from another log, by simulate or consume, or with another learner or "
                    "configuration is not overwritten unless --resume or --force says what to do; a run that "
                    "learns nothing (an empty log) writes no version.")
    p.add_argument("log", help="event log path")
    add_model_options(p)
    add_feature_options(p)
    p.add_argument("--strict", action="store_true", help="stop at the first invalid line")
    add_overwrite_options(p, resume="continue from the model's newest checkpoint: of this log, where it stopped; "
                                    "of another log, learning this one on top of it")
    p.add_argument("--dead-letters", default=None, metavar="PATH",
                   help="append invalid and unmatched events with their reason to this JSON-lines file")
    p.add_argument("--checkpoint-interval", type=positive_float, default=30.0, metavar="SECONDS",
                   help="checkpoint this often while learning (and at the end)")
    p.add_argument("--memory-budget", type=positive_float, default=128.0, metavar="MB",
                   help="memory for sorting the log by event time (MiB): logs in nearly event-time order need "
                        "little of it; others are sorted in runs of this size spilled to --tmpdir and merged")
    p.add_argument("--tmpdir", default=None, metavar="DIR",
                   help="where sorted runs are spilled (default: $TMPDIR); removed when replay ends")
    p.add_argument("--ips-weight", action="store_true",
                   help="off-policy learning: weight each update by the clipped inverse propensity "
                        "min(1/(K·propensity), --ips-clip) (learners with weighted updates: see `learners`)")
    p.add_argument("--ips-clip", type=positive_float, default=10.0, metavar="W", help="weight cap of --ips-weight")
    add_db_option(p)
    add_retention_option(p)
    add_output_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from banditloop.commands.common import CommandError
    from banditloop.commands.protect import check_target
    from banditloop.pipeline.checkpoints import CheckpointStore
    from banditloop.pipeline.replay import ReplayOptions, replay_log

    if args.resume and args.force:
        raise CommandError("--resume and --force exclude each other")
    log = Path(args.log)
    if log.is_dir():
        raise CommandError(f"{args.log} is a directory; expected an event log file")
    if not log.exists():
        raise CommandError(f"no such log: {args.log}")
    config = model_config(args, feature_spec(args))
    if args.ips_weight:
        import dataclasses

        try:
            config = dataclasses.replace(config, ips_clip=args.ips_clip)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    model = args.model or args.learner
    store = CheckpointStore(db_url(args), keep=args.keep)
    try:
        check_target(store, model, config, {"kind": "log", "path": str(log.resolve())},
                     resume=args.resume, force=args.force)
        summary = replay_log(log, config, model, store,
                             ReplayOptions(strict=args.strict, resume=args.resume, dead_letters=args.dead_letters,
                                           quiet=args.quiet or args.json,
                                           checkpoint_interval=args.checkpoint_interval,
                                           memory_budget=int(args.memory_budget * 1024 * 1024),
                                           tmpdir=args.tmpdir))
    finally:
        store.close()
    if summary["checkpoints"] == 0:
        warn(args, f"{args.log} has no events to learn; no version written" if summary["events"] == 0 else
             f"nothing new in {args.log} since version {summary['version']}; no version written")
    summary["db"] = db_url(args)
    emit(summary, args)
    return 0
