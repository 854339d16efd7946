"""Cost of large dead letters: ``replay`` of a log of good events mixed with malformed lines of a
given size, each dead-lettered to a file, and the dead-letter topic record built for each.

Issue 13 found that large malformed payloads slowed consumption about 5x: each one was copied whole
(up to 256 KiB) into its dead-letter record, JSON-escaped (a quote or backslash doubles, a control
character takes six bytes), and written. A dead letter now keeps the first
``MAX_DEAD_LETTER_PAYLOAD`` bytes (64 KiB) with the payload's length and SHA-256.

For each payload size, in the same run: the replay's wall time over a clean log of the same good
events (ratio, median of ``--runs``), the extra milliseconds per dead letter, the dead-letter file's
bytes per dead letter, and the time and size of the topic record (``encode_dead_letter``). Target:
a record holds at most 64 KiB of payload whatever its size (under 7x that once JSON-escaped), so what
remains of a megabyte dead letter's cost is reading the line and hashing it.

    python benchmarks/dead_letters.py                 # 20,000 events, 400 malformed lines per size
    python benchmarks/dead_letters.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from banditloop.core.features import FeatureSpec, dense_names  # noqa: E402
from banditloop.pipeline.checkpoints import CheckpointStore  # noqa: E402
from banditloop.pipeline.model import ModelConfig  # noqa: E402
from banditloop.pipeline.producer import encode_dead_letter  # noqa: E402
from banditloop.pipeline.replay import ReplayOptions, replay_log  # noqa: E402
from banditloop.pipeline.simulate import SimulationOptions, simulate  # noqa: E402
from banditloop.simulators.world import WorldConfig  # noqa: E402

SIZES = {"1 KiB": 1024, "60 KiB": 60 * 1024, "1 MiB": 1024 * 1024}
TARGET_RECORD_BYTES = 7 * 64 * 1024


def malformed(size: int) -> bytes:
    """Not JSON, with quotes, backslashes and a control character to escape: the worst case for the
    record's size."""
    unit = b'"\\\x01abcdefgh'
    return b'{"type": "impression", "junk": ' + (unit * (size // len(unit) + 1))[:size - 31]


def replay_seconds(log: Path, config: ModelConfig, work: Path, tag: str) -> tuple[float, dict]:
    store = CheckpointStore(f"sqlite:///{work / (tag + '.db')}")
    dead = work / f"{tag}.dead.jsonl"
    dead.unlink(missing_ok=True)
    started = time.perf_counter()
    summary = replay_log(log, config, "m", store, ReplayOptions(quiet=True, dead_letters=dead))
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed, {"dead_bytes": dead.stat().st_size if dead.exists() else 0, "invalid": summary["invalid"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000, help="simulated impressions (default 20,000)")
    parser.add_argument("--bad", type=int, default=400, help="malformed lines per size (default 400)")
    parser.add_argument("--runs", type=int, default=3, help="runs per log, median reported (default 3)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    config = ModelConfig(learner="diag-linucb", features=FeatureSpec(dim=9, numeric=dense_names("x", 8)))
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clean = work / "clean.jsonl"
        simulate(WorldConfig(arms=10, dim=8, seed=1, click_delay_mean=20.0), config, "sim", None,
                 SimulationOptions(steps=args.steps, out=clean, quiet=True))
        lines = clean.read_bytes().splitlines()
        logs = {"clean": clean}
        for name, size in SIZES.items():
            path = work / f"bad-{size}.jsonl"
            step = max(1, len(lines) // args.bad)
            with open(path, "wb") as fh:
                for i, line in enumerate(lines):
                    fh.write(line + b"\n")
                    if i % step == 0 and i // step < args.bad:
                        fh.write(malformed(size) + b"\n")
            logs[name] = path
        times: dict[str, list[float]] = {name: [] for name in logs}
        extra: dict[str, dict] = {}
        for _ in range(args.runs):  # interleaved: every log sees the same machine load
            for name, path in logs.items():
                seconds, info = replay_seconds(path, config, work, name.replace(" ", ""))
                times[name].append(seconds)
                extra[name] = info
        base = statistics.median(times["clean"])
        results["clean"] = {"replay_seconds": round(base, 3)}
        for name, size in SIZES.items():
            payload = malformed(size)
            started = time.perf_counter()
            for _ in range(20):
                record = encode_dead_letter(payload, "not JSON: ...", "impressions/0/1")
            encode_ms = (time.perf_counter() - started) / 20 * 1000
            median = statistics.median(times[name])
            invalid = max(1, extra[name]["invalid"])
            results[name] = {
                "replay_seconds": round(median, 3), "ratio_to_clean": round(median / base, 2),
                "ms_per_dead_letter": round((median - base) / invalid * 1000, 3),
                "file_bytes_per_dead_letter": extra[name]["dead_bytes"] // invalid,
                "topic_record_bytes": len(record), "topic_record_encode_ms": round(encode_ms, 3)}
    load = os.getloadavg()
    if args.json:
        print(json.dumps({"results": results, "target_record_bytes": TARGET_RECORD_BYTES, "steps": args.steps,
                          "bad_lines": args.bad, "runs": args.runs, "loadavg": [round(x, 2) for x in load]}))
        return 0
    print(f"replay of {args.steps} simulated impressions (+ feedback) with {args.bad} malformed lines; "
          f"median of {args.runs}; load average {load[0]:.2f}")
    print(f"{'log':8} {'replay s':>9} {'× clean':>8} {'ms/dead':>8} {'file B/dead':>12} {'topic B':>9} {'enc ms':>7}")
    for name, r in results.items():
        print(f"{name:8} {r['replay_seconds']:9.3f} {r.get('ratio_to_clean', 1.0):8.2f} "
              f"{r.get('ms_per_dead_letter', 0):8.3f} {r.get('file_bytes_per_dead_letter', 0):12d} "
              f"{r.get('topic_record_bytes', 0):9d} {r.get('topic_record_encode_ms', 0):7.3f}")
    biggest = max(max(r.get("topic_record_bytes", 0), r.get("file_bytes_per_dead_letter", 0)) for r in results.values())
    print(f"target: every dead-letter record <= {TARGET_RECORD_BYTES} bytes: largest {biggest} "
          f"({'met' if biggest <= TARGET_RECORD_BYTES else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
