"""``banditloop models --repair-watermark``: clamp a poisoned event time (see
:mod:`banditloop.pipeline.watermark_repair`). A dry run unless ``--yes``."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from banditloop.commands.common import CommandError, db_url, non_negative_float


def add_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group(
        "repairing a poisoned watermark",
        "A shard that learned an event dated in the future (written before event times were checked) "
        "drops every later impression as late. --repair-watermark --model NAME shows, per shard, the newest "
        "event time per input and the join watermark that are after --to and what they would become; with "
        "--yes it writes a new version of each such shard with them clamped (parameters, counters, offsets "
        "and open impressions kept; the reason is recorded in the version). Stop the model's consume workers "
        "first: a shard whose lease a live worker holds is refused unless --force.")
    group.add_argument("--repair-watermark", action="store_true",
                       help="clamp the event time of --model's shards to --to (a dry run without --yes)")
    group.add_argument("--shard", action="append", default=[], metavar="NAME",
                       help="with --repair-watermark: only this shard, e.g. p0 (repeatable; default: every shard)")
    group.add_argument("--to", default="now", metavar="now|TS",
                       help="with --repair-watermark: the newest event time to keep: now (default), epoch seconds "
                            "or RFC 3339; the join watermark becomes this minus the allowed lateness")
    group.add_argument("--reason", default="poisoned watermark", metavar="TEXT",
                       help="with --repair-watermark: why, recorded in the new versions")
    group.add_argument("--yes", action="store_true", help="with --repair-watermark: write the new versions")
    group.add_argument("--force", action="store_true",
                       help="with --repair-watermark --yes: repair even shards a live worker holds (it loses them, "
                            "its next checkpoint is refused and it resumes from the repaired version)")
    group.add_argument("--live-within", type=non_negative_float, default=300.0, metavar="SECONDS",
                       help="a lease held by a worker on another host counts as live while it was claimed or its "
                            "shard checkpointed this recently (on this host: while its process runs; default 300)")


def repair_options_given(args: argparse.Namespace) -> list[str]:
    """Repair-only options that were set (an error without --repair-watermark). --force, --reason and
    --live-within are not checked: a shared environment may set them for other commands."""
    given = [("--shard", bool(args.shard)), ("--to", args.to != "now"), ("--yes", args.yes)]
    return [name for name, on in given if on]


def parse_to(value: str) -> float:
    import time

    from banditloop.core.events import InvalidEvent, parse_ts

    if value == "now":
        return time.time()
    try:
        return parse_ts(float(value))
    except ValueError:
        pass
    except InvalidEvent as exc:
        raise CommandError(f"--to {value}: {exc.reason}") from None
    try:
        return parse_ts(value)
    except InvalidEvent as exc:
        raise CommandError(f"--to {value!r}: expected now, epoch seconds or an RFC 3339 time ({exc.reason})") from None


def run_repair(args: argparse.Namespace) -> int:
    import json

    from banditloop.pipeline.checkpoints import CheckpointStore, LeaseLost
    from banditloop.pipeline.watermark_repair import apply_repair, plan_repair

    if args.model is None:
        raise CommandError("--repair-watermark needs --model NAME (banditloop models lists them)")
    if args.force and not args.yes:
        raise CommandError("--force goes with --yes")
    to = parse_to(args.to)
    store = CheckpointStore(db_url(args), keep=0)  # a repair deletes no version
    try:
        if args.model not in store.model_names():
            raise CommandError(f"no model {args.model!r} in {db_url(args)} (banditloop models lists them)")
        try:
            plans = plan_repair(store, args.model, to, shards=args.shard or None, live_within=args.live_within)
            changed = [p for p in plans if p.changed]
            live = [p for p in changed if p.live]
            if args.yes and live and not args.force:
                holders = ", ".join(f"{p.shard} ({p.lease.owner})" for p in live if p.lease is not None)
                raise CommandError(f"model {args.model!r}: a live worker holds shard(s) {holders}; stop its consume "
                                   "workers first, or add --force to take the shards from them")
            if args.yes and changed:
                plans = apply_repair(store, args.model, to, [p.shard for p in changed], reason=args.reason)
                changed = [p for p in plans if p.changed or p.new_version is not None]
        except LeaseLost as exc:
            raise CommandError(f"{exc} during the repair; nothing was written, run it again") from None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    finally:
        store.close()
    written = args.yes and bool(changed)
    for p in changed if written else ():
        print(f"banditloop models: repaired the watermark of model {args.model!r} shard {p.shard}: version "
              f"{p.version} -> {p.new_version}, event time clamped to {_when(to)} ({args.reason})", file=sys.stderr)
    if args.json:
        print(json.dumps({"model": args.model, "to": to, "dry_run": not args.yes, "written": written,
                          "shards": [p.to_dict() for p in (changed if args.yes else plans)]}))
        return 0
    if not plans:
        print(f"model {args.model!r} has no shard written by consume: nothing to repair")
        return 0
    for p in plans if not args.yes else changed:
        _print_plan(p)
    if not changed:
        print(f"nothing to repair: no event time of model {args.model!r} is after {_when(to)}")
    elif not args.yes:
        note = " (--force needed: a live worker holds some)" if any(p.live for p in changed) else ""
        print(f"dry run: nothing written; --yes writes a new version of {len(changed)} shard(s){note}")
    return 0


def _print_plan(p: Any) -> None:
    lease = "no lease" if p.lease is None else (
        f"lease epoch {p.lease.epoch} by {p.lease.owner}, {'LIVE' if p.live else 'not live'}")
    head = f"shard {p.shard}: version {p.version}" + (f" -> {p.new_version}" if p.new_version else "")
    print(f"{head} ({lease}){'' if p.changed else ': unchanged'}")
    for role in sorted(p.max_ts_before):
        before, after = p.max_ts_before[role], p.max_ts_after[role]
        if before != after:
            print(f"  newest {role}: {_when(before)} -> {_when(after)}")
    if p.watermark_before != p.watermark_after:
        print(f"  join watermark: {_when(p.watermark_before)} -> {_when(p.watermark_after)}")
    if p.dropped_held:
        print(f"  held feedback dated after it: {p.dropped_held} dropped (counted as unmatched)")
    for reason in p.skipped:
        print(f"  skipped unusable {reason}")


def _when(ts: float | None) -> str:
    """Epoch seconds with their UTC time when they have one (1e15 has none)."""
    if ts is None:
        return "none"
    try:
        return f"{ts:.3f} ({datetime.fromtimestamp(ts, UTC).isoformat(timespec='seconds')})"
    except (OverflowError, OSError, ValueError):
        return f"{ts:.6g}"
