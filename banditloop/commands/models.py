"""``banditloop models``: the models in a checkpoint database."""

from __future__ import annotations

import argparse

from banditloop.commands.common import add_db_option, db_url


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list models with versions, learner, counters and times")
    add_db_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from banditloop.pipeline.checkpoints import CheckpointStore

    store = CheckpointStore(db_url(args))
    try:
        models = store.models()
    finally:
        store.close()
    rows = [{"model": m.model, "learner": m.learner, "latest_version": m.latest_version, "versions": m.versions,
             "shards": list(m.shards), "created_at": m.created_at.isoformat(timespec="seconds"),
             "counters": m.counters} for m in models]
    if args.json:
        print(json.dumps({"db": db_url(args), "models": rows}))
        return 0
    if not rows:
        print(f"no models in {db_url(args)}")
        return 0
    header = ("model", "learner", "version", "kept", "shards", "impressions", "clicks", "created_at")
    table = [header] + [(r["model"], r["learner"], str(r["latest_version"]), str(r["versions"]),
                         ",".join(r["shards"]), str(int(r["counters"].get("impressions", 0))),
                         str(int(r["counters"].get("clicks", 0))), r["created_at"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0
