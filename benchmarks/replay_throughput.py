"""``banditloop replay`` as users run it: whole process, events per second and peak memory.

The log (issue 12): ``banditloop simulate --policy random --arms 20 --dim 15 --steps 950000 --world
arm_feature_dim=0 --out LOG`` (about 1M events: impressions with 15 numeric context features and 20
candidates, clicks), replayed with ``--dim 16`` by each learner as a child process (``--json --quiet``,
checkpoint at the end only). Beside it, in the same run and on the same lines, the bare stdlib loop
``for line in file: json.loads(line)`` as a child process: the replay must reach 1.5× its rate.

Peak RSS is the child's (``os.wait4`` rusage). ``--scale N`` also replays a log N times as long, made
by concatenating the log with its event times shifted by its span and its ids suffixed, so it shows
that memory stays flat as the log grows. With the default windows the join keeps every impression
open for 7 days of event time (the whole of this log), so its state grows with the log; ``--window``
replays also with ``--click-window/--conversion-window`` of that many seconds, the join's state then
bounded, to show the replay's own memory (the sort's) independent of the log's size.

A click reward evicts each impression when its click window closes; ``--reward conversion`` keeps every
impression open for the 7-day conversion window (the join's largest state).

    python benchmarks/replay_throughput.py [--log LOG] [--steps 950000] [--repeat 3] [--scale 5]
        [--learners diag-linucb,ts,linucb] [--window 3600] [--reward conversion]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"diag-linucb": 150_000, "ts": 150_000, "linucb": 100_000}
RATIO_TARGET = 1.5
RSS_TARGET_MB = 500
CLI = [sys.executable, "-m", "banditloop.cli"]


CPU: dict[str, float] = {}  # CPU seconds (user + system) of the last child, by what it was


def child(cmd: list[str], out: Path, what: str = "") -> tuple[float, float, int]:
    """Run ``cmd`` with stdout to ``out``: (wall seconds, peak RSS in MB, exit status); its CPU seconds
    go to ``CPU[what]``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(out, "wb") as fh:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.DEVNULL, env=env)  # noqa: S603
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    CPU[what] = usage.ru_utime + usage.ru_stime
    return time.perf_counter() - started, usage.ru_maxrss / 1024.0, proc.returncode


def json_loads_rate(log: Path, work: Path) -> tuple[float, int]:
    code = ("import json,sys\nn=0\nfor line in open(sys.argv[1],'rb'):\n    json.loads(line); n+=1\nprint(n)")
    seconds, _, status = child([sys.executable, "-c", code, str(log)], work / "json.out", "json")
    assert status == 0
    lines = int((work / "json.out").read_text())
    return lines / seconds, lines


def replay(log: Path, learner: str, work: Path, extra: list[str]) -> tuple[float, float, dict]:
    db = work / f"{learner}.db"
    db.unlink(missing_ok=True)
    cmd = [*CLI, "replay", str(log), "--learner", learner, "--dim", "16", "--db", f"sqlite:///{db}",
           "--force", "--json", "--quiet", "--checkpoint-interval", "1e9", *extra]
    seconds, rss, status = child(cmd, work / "replay.out", "replay")
    if status != 0:
        raise SystemExit(f"replay failed ({status}): {' '.join(cmd)}")
    summary = json.loads((work / "replay.out").read_text())
    return seconds, rss, summary


def scaled(log: Path, times: int, out: Path) -> Path:
    """``times`` copies of ``log``, copy k with event times shifted by k × its span and ids suffixed."""
    if out.exists():
        return out
    ts = re.compile(rb'"ts":([0-9.e+-]+)')
    first = last = None
    with open(log, "rb") as fh:
        for line in fh:
            m = ts.search(line)
            if m:
                value = float(m.group(1))
                first = value if first is None else min(first, value)
                last = value if last is None else max(last, value)
    span = (last or 0.0) - (first or 0.0) + 1.0
    with open(out, "wb") as dst:
        for k in range(times):
            shift = k * span
            with open(log, "rb") as fh:
                for line in fh:
                    if k:
                        line = ts.sub(lambda m, s=shift: b'"ts":' + repr(float(m.group(1)) + s).encode(), line)
                        line = line.replace(b'_id":"', b'_id":"c%d-' % k)
                    dst.write(line)
    return out


def _rounded(value: float, digits: int = 0) -> float | None:
    return None if math.isnan(value) else round(value, digits)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log", type=Path, default=None, help="an existing log (else simulated into --work)")
    ap.add_argument("--steps", type=int, default=950_000)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    ap.add_argument("--learners", default="diag-linucb,ts,linucb")
    ap.add_argument("--scale", type=int, default=0, help="also replay a log this many times as long")
    ap.add_argument("--scale-learners", default="diag-linucb")
    ap.add_argument("--window", type=float, default=0.0,
                    help="also replay with click and conversion windows of this many seconds")
    ap.add_argument("--no-baseline", action="store_true", help="skip the json.loads loop (memory figures only)")
    ap.add_argument("--window-only", action="store_true", help="with --window: skip the default windows")
    ap.add_argument("--reward", default=None, help="replay with this --reward (conversion: every impression of "
                    "the log stays open for the 7-day conversion window, whatever a click reward keeps)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="replay-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    log = args.log
    if log is None:
        log = work / "log.jsonl"
        if not log.exists():
            child([*CLI, "simulate", "--policy", "random", "--arms", "20", "--dim", "15", "--steps", str(args.steps),
                   "--world", "arm_feature_dim=0", "--out", str(log), "--no-checkpoint", "--quiet", "--json",
                   "--db", f"sqlite:///{work / 'sim.db'}"], work / "sim.out")
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}  (cores: {os.cpu_count()})")
    logs = [(log, args.learners.split(","))]
    if args.scale > 1:
        logs.append((scaled(log, args.scale, work / f"log-x{args.scale}.jsonl"), args.scale_learners.split(",")))
    variants = [("default windows", [])]
    reward = ["--reward", args.reward] if args.reward else []
    if args.window:
        w = f"{args.window:g}"
        variants.append((f"windows {w} s", ["--click-window", w, "--conversion-window", w]))
        if args.window_only:
            variants = variants[1:]
    results = []
    print(f"{'log':>12} {'join windows':>16} {'learner':>12} {'events':>9} {'ev/s':>9} {'target':>8} "
          f"{'json ev/s':>9} {'ratio':>6} {'target':>6} {'peak RSS':>9} {'target':>7}  {'sort':>8} cpu-ratio")
    for path, learners in logs:
        # the join keeps a longer log's impressions open for 7 days: only bounded windows for it
        for name, extra in (variants if path == log or len(variants) == 1 else variants[1:]):
            for learner in learners:
                rates, ratios, rss_seen, cpu_ratios = [], [], [], []
                summary: dict = {}
                for _ in range(args.repeat):
                    # the baseline beside every run
                    base, _lines = (float("nan"), 1) if args.no_baseline else json_loads_rate(path, work)
                    CPU.setdefault("json", float("nan"))
                    seconds, rss, summary = replay(path, learner, work, [*reward, *extra])
                    rates.append(summary["events"] / seconds)
                    ratios.append(rates[-1] / base)
                    cpu_ratios.append(CPU["json"] / _lines / (CPU["replay"] / summary["events"]))
                    rss_seen.append(rss)
                rate, ratio, rss = statistics.median(rates), statistics.median(ratios), max(rss_seen)
                base_rate = rate / ratio
                sort = summary.get("sort", {})
                print(f"{path.name:>12} {name:>16} {learner:>12} {summary['events']:>9} {rate:>9,.0f} "
                      f"{TARGETS.get(learner, 0):>8,} {base_rate:>9,.0f} {ratio:>5.2f}× {RATIO_TARGET:>5}× "
                      f"{rss:>6,.0f} MB {RSS_TARGET_MB:>4} MB  {sort.get('mode'):>8} "
                      f"{statistics.median(cpu_ratios):>5.2f}×", flush=True)
                results.append({"log": path.name, "windows": name, "learner": learner, "events": summary["events"],
                                "events_per_second": round(rate), "json_loads_per_second": _rounded(base_rate),
                                "ratio": _rounded(ratio, 3), "cpu_ratio": _rounded(statistics.median(cpu_ratios), 3),
                                "peak_rss_mb": round(rss), "sort": sort.get("mode")})
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; ev/s and ratio: median of "
          f"{args.repeat} (ratio per run against the json.loads loop run just before it); RSS: the largest; "
          "cpu-ratio: the same ratio in CPU seconds (user + system) of the two children, less sensitive to a "
          "loaded machine than wall time")
    print("JSON " + json.dumps({"benchmark": "replay_throughput", "load_average": os.getloadavg(), "results": results}))


if __name__ == "__main__":
    main()
