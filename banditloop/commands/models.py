"""``banditloop models``: the models in a checkpoint database, pruning their old versions, and
repairing a poisoned watermark (:mod:`banditloop.commands.models_repair`)."""

from __future__ import annotations

import argparse
from typing import Any

from banditloop.commands.common import add_db_option, db_url, non_negative_int
from banditloop.commands.models_repair import add_arguments as add_repair_arguments

HELP = ("list models with versions, learner, counters and times; --prune applies the retention policy; "
        "--repair-watermark clamps a poisoned event time")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "models", help=HELP,
        description="Lists every model in the checkpoint database: newest version, number of versions kept, "
                    "shards, learner, counters of the newest version and when it was written. Every write keeps "
                    "the newest --keep versions of each shard (20 unless the writing command was given --keep) "
                    "and the join state only on the newest two; --prune applies that policy now, e.g. after "
                    "lowering --keep, and gives the space back (SQLite VACUUM).")
    add_db_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--prune", action="store_true",
                   help="delete all but the newest --keep versions of each shard (of --model, or of every model)")
    p.add_argument("--keep", type=non_negative_int, default=None, metavar="N",
                   help="with --prune: versions to keep per shard (default 20; 0 keeps all and only drops the "
                        "join state of old versions)")
    p.add_argument("--model", default=None, help="only this model (listing, --prune, --repair-watermark)")
    add_repair_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from banditloop.commands.common import CommandError
    from banditloop.commands.models_repair import repair_options_given
    from banditloop.pipeline.checkpoints import CheckpointStore
    from banditloop.pipeline.database import DEFAULT_KEEP

    if args.repair_watermark:
        if args.prune or args.keep is not None:
            raise CommandError("--repair-watermark writes new versions and prunes none: not with --prune or --keep")
        from banditloop.commands.models_repair import run_repair

        return run_repair(args)
    misplaced = repair_options_given(args)
    if misplaced:
        raise CommandError(f"{', '.join(misplaced)} go(es) with --repair-watermark")
    if not args.prune and args.keep is not None:
        raise CommandError("--keep goes with --prune")
    store = CheckpointStore(db_url(args))
    try:
        pruned: dict[str, int] | None = None
        if args.prune:
            if args.model is not None and args.model not in store.model_names():
                raise CommandError(f"no model {args.model!r} in {db_url(args)} (banditloop models lists them)")
            pruned = store.prune(args.model, keep=DEFAULT_KEEP if args.keep is None else args.keep)
            store.compact()
        models = [m for m in store.models() if args.model is None or m.model == args.model]
        heads = {m.model: store.heads(m.model) for m in models} if args.json else {}
    finally:
        store.close()
    rows: list[dict[str, Any]] = [
        {"model": m.model, "learner": m.learner, "latest_version": m.latest_version, "versions": m.versions,
         "shards": list(m.shards), "created_at": m.created_at.isoformat(timespec="seconds"), "counters": m.counters}
        for m in models]
    if args.json:  # event time per shard: a newest event time far ahead of now is a poisoned watermark
        import time

        now = time.time()
        for row in rows:
            row["event_time"] = [_event_time(h.shard, h.version, h.source, now) for h in heads[row["model"]]]
    if args.json:
        print(json.dumps({"db": db_url(args), "models": rows, **({} if pruned is None else {"pruned": pruned})}))
        return 0
    if pruned is not None:
        print(f"pruned {sum(pruned.values())} old version(s) of {len(pruned)} model(s)")
    if not rows:
        print(f"no models in {db_url(args)}")
        return 0
    header = ("model", "learner", "version", "versions", "shards", "impressions", "clicks", "created_at")
    table = [header] + [(r["model"], r["learner"], str(r["latest_version"]), str(r["versions"]),
                         ",".join(r["shards"]), str(int(r["counters"].get("impressions", 0))),
                         str(int(r["counters"].get("clicks", 0))), r["created_at"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _event_time(shard: str, version: int, source: dict[str, Any], now: float) -> dict[str, Any]:
    """A shard's newest event time per input (live topics) or overall, and how far it runs ahead of
    this machine's clock (``ahead_seconds`` > 0 means events dated in the future were learned)."""
    max_ts = {str(k): float(v) for k, v in (source.get("max_ts") or {}).items() if isinstance(v, int | float)}
    newest = max(max_ts.values(), default=None)
    return {"shard": shard, "version": version, "max_ts": max_ts, "newest": newest,
            "ahead_seconds": None if newest is None else round(max(0.0, newest - now), 3)}

