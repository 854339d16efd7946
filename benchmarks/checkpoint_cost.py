"""What a checkpoint of the join state costs at 100k and 1M open impressions: before (every checkpoint
exports the whole join state as JSON, each open impression keeping its context dict: main's approach
up to issue 12, rebuilt in this script) and after (open impressions keep their feature vectors;
checkpoints write deltas, with a full snapshot every so often), SQLite and PostgreSQL.

Each (size, approach) runs in its own process: a Diag-LinUCB ``LearningRun`` (d=16, 15 numeric
context features) is filled with N open impressions (windows long enough that none closes), then
per database: one full checkpoint (the compaction cost), then ``--intervals`` intervals in each of
which ``--changed`` of the live set changes (half new impressions, which evict as many old ones,
half clicks on live impressions) and a checkpoint is written (snapshot + one transaction, timed).
Memory per open impression = RSS growth while filling ÷ N; peak RSS of the process. Restoring the
newest version (full snapshot + deltas) is timed too. Targets (issue 12): checkpoint ≤ 200 ms and
≤ 300 B per open impression at 1M.

    python benchmarks/checkpoint_cost.py [--sizes 100000 1000000] [--intervals 10] [--changed 0.02]
                                         [--no-pg] [--pg URL]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import emit_json, single_thread, table  # noqa: E402

TARGET_MS, TARGET_BYTES = 200.0, 300.0
DIM, NUMERIC = 16, tuple(f"x{i}" for i in range(15))
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432"


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def one(n: int, mode: str, intervals: int, changed: float, urls: dict[str, str], seed: int) -> dict:
    """One process: fill, then checkpoint intervals on each database."""
    import numpy as np

    from banditloop.core.events import Click, Impression
    from banditloop.core.features import FeatureSpec
    from banditloop.pipeline.checkpoints import Checkpoint, CheckpointStore
    from banditloop.pipeline.join import JoinConfig
    from banditloop.pipeline.model import LearnerSink, ModelConfig
    from banditloop.pipeline.runner import LearningRun

    class ContextSink(LearnerSink):
        """main's sink: featurizes the context again at every reward (the join keeps the context)."""

        def on_impression(self, imp):  # type: ignore[no-untyped-def]
            v = self.vectorizer
            self.learner.learn_impression(imp.arm, v.x(imp.context), v.z(imp.context, imp.arm_features))

    window = float(n)  # impressions are one second apart: the oldest is evicted as a new one comes
    config = ModelConfig("diag-linucb", features=FeatureSpec(dim=DIM, numeric=NUMERIC),
                         join=JoinConfig(click_window=window, conversion_window=window, allowed_lateness=0.0))
    run = LearningRun(config, "bench", shard="p0")
    if mode == "before":
        run.sink = run.join.sink = ContextSink(run.learner, run.vectorizer)
    rng = np.random.default_rng(seed)
    values = np.round(rng.normal(size=(4096, len(NUMERIC))), 6).tolist()

    def impression(i: int) -> Impression:
        return Impression(event_id=f"e{i:08d}", ts=float(i), impression_id=f"imp-{i:08d}", arm=f"ad-{i % 20}",
                          context=dict(zip(NUMERIC, values[i % 4096], strict=True)))

    gc.collect()
    base_rss = rss()
    started = time.perf_counter()
    for i in range(n):
        run.process(impression(i))
    fill_s = time.perf_counter() - started
    gc.collect()
    per_imp = (rss() - base_rss) / n
    codec = run.join.codec

    def checkpoint(store: CheckpointStore) -> tuple[float, int]:
        t = time.perf_counter()
        if mode == "before":
            j = run.join
            blob = codec_json(codec.legacy_type(list(j.open.values()), [], j.watermark, dict(j.counters)))
            cp = Checkpoint(model="bench", shard="p0", config=config.to_dict(), state=run.learner.export_state(),
                            join_state=blob, counters=run.counters(), source={"kind": "bench"})
            store.save(cp)
        else:
            cp = run.snapshot({"kind": "bench"})
            store.save_many([cp])
            run.saved(cp)
        # (a full snapshot in parts: its head and parts, as written)
        return time.perf_counter() - t, getattr(cp.join_state, "stored_bytes", None) or len(cp.join_state or b"")

    import msgspec

    codec_json = msgspec.json.encode
    next_id = n
    k = max(1, int(changed * n / 2))
    out: dict = {"n": n, "mode": mode, "fill_s": fill_s, "bytes_per_open_in_memory": per_imp, "dbs": {}}
    for db, url in urls.items():
        store = CheckpointStore(url, keep=20)
        run.version = None  # a new database: the first checkpoint is a full snapshot
        full_s, full_bytes = checkpoint(store)
        times, sizes = [], []
        for _ in range(intervals):
            live = list(run.join.open)
            for idx in rng.choice(len(live), size=k, replace=False):
                run.process(Click(event_id=f"c{next_id}-{idx}", ts=float(next_id), impression_id=live[idx]))
            for _ in range(k):
                run.process(impression(next_id))
                next_id += 1
            s, b = checkpoint(store)
            times.append(s)
            sizes.append(b)
        t = time.perf_counter()
        restored = LearningRun.from_checkpoint(store.latest("bench", "p0"))
        restore_s = time.perf_counter() - t
        assert len(restored.join.open) == len(run.join.open)
        del restored
        store.close()
        live_n = len(run.join.open)
        out["dbs"][db] = {"full_ms": full_s * 1e3, "full_bytes": full_bytes, "p50_ms": percentile(times, 50) * 1e3,
                          "p95_ms": percentile(times, 95) * 1e3, "bytes_p50": statistics.median(sizes),
                          "bytes_per_open": statistics.median(sizes) / live_n,
                          "full_bytes_per_open": full_bytes / live_n,
                          "restore_ms": restore_s * 1e3, "changed_per_interval": 3 * k / live_n}
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--intervals", type=int, default=10)
    ap.add_argument("--changed", type=float, default=0.02, help="fraction of the live set changed per interval")
    ap.add_argument("--pg", default=DEFAULT_PG)
    ap.add_argument("--no-pg", action="store_true")
    ap.add_argument("--modes", nargs="+", default=["before", "after"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    single_thread()
    if args.child:
        spec = json.loads(args.child)
        print("RESULT " + json.dumps(one(**spec)))
        return
    from benchmarks.pipeline_throughput import postgres_database

    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"checkpoint_cost_{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    results = []
    started = time.monotonic()
    for n in args.sizes:
        for mode in args.modes:
            with postgres_database(None if args.no_pg else args.pg) as pg_url:
                urls = {"SQLite": f"sqlite:///{tmp / f'{mode}-{n}.db'}"}
                if pg_url:
                    urls["PostgreSQL"] = pg_url
                spec = {"n": n, "mode": mode, "intervals": args.intervals, "changed": args.changed, "urls": urls,
                        "seed": args.seed}
                proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                                      text=True, check=False)
                line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
                if not line:
                    print(f"{mode} {n:,}: failed\n{proc.stderr[-2000:]}")
                    continue
                results.append(json.loads(line[0][7:]))
                (tmp / f"{mode}-{n}.db").unlink(missing_ok=True)
                print(f"  {mode} {n:,} done ({time.monotonic() - started:.0f} s)", flush=True)

    print(f"\nCheckpoint cost of the join state: Diag-LinUCB d={DIM}, {args.intervals} intervals, "
          f"~{args.changed:.0%} of the live set clicked + {args.changed / 2:.0%} replaced per interval; "
          "one process per row; before = full JSON export with context dicts (main's approach), "
          "after = feature vectors + deltas")
    rows = []
    for r in results:
        for db, d in r["dbs"].items():
            at_1m = r["n"] >= 1_000_000 and r["mode"] == "after"
            target = ""
            if at_1m:
                ok_ms = d["p95_ms"] <= TARGET_MS
                ok_b = r["bytes_per_open_in_memory"] <= TARGET_BYTES
                target = (f"{'meets' if ok_ms else 'MISSES'} ≤{TARGET_MS:g} ms; "
                          f"memory {'meets' if ok_b else 'MISSES'} ≤{TARGET_BYTES:g} B")
            rows.append([f"{r['n']:,} {r['mode']}", db, d["p50_ms"], d["p95_ms"], d["full_ms"], d["bytes_p50"] / 1e6,
                         d["bytes_per_open"], d["full_bytes_per_open"], r["bytes_per_open_in_memory"],
                         r["peak_rss_mb"], d["restore_ms"], target])
    print(table(["open impressions, approach", "database", "ckpt p50 ms", "p95 ms", "full ms", "MB/ckpt",
                 "B/open (ckpt)", "B/open (full)", "B/open (RAM)", "peak RSS MB", "restore ms", "target"], rows))
    by = {(r["n"], r["mode"]): r for r in results}
    for n in args.sizes:
        b, a = by.get((n, "before")), by.get((n, "after"))
        if a and b:
            for db in a["dbs"]:
                if db in b["dbs"]:
                    print(f"{n:,} {db}: checkpoint p50 {b['dbs'][db]['p50_ms'] / a['dbs'][db]['p50_ms']:.0f}× faster, "
                          f"{b['dbs'][db]['bytes_p50'] / a['dbs'][db]['bytes_p50']:.0f}× fewer bytes; memory per open "
                          f"impression {b['bytes_per_open_in_memory'] / a['bytes_per_open_in_memory']:.1f}× less")
    print(f"load average now {os.getloadavg()[0]:.2f} (2 shared cores: other processes skew the figures); "
          f"total {time.monotonic() - started:.0f} s")
    emit_json("checkpoint_cost", {"results": results, "intervals": args.intervals, "changed": args.changed,
                                  "targets": {"ms": TARGET_MS, "bytes": TARGET_BYTES},
                                  "load_average": round(os.getloadavg()[0], 2)})


if __name__ == "__main__":
    main()
