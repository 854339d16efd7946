"""Start-up time of the ``banditloop`` command: median wall and CPU time of N runs per command.

Each run is a fresh ``python -m banditloop.cli ...`` subprocess in an empty temporary directory (so
``models`` reads an empty SQLite database), with stdout discarded. Wall time is what a user waits;
CPU time (user + system of the child) is less disturbed by other processes on a busy machine.
Targets from issue 7: ``--help`` and ``models`` <= 0.5 s, ``learners`` <= 1 s. The last row is a
one-step ``simulate --no-checkpoint`` (issue 12: its start-up is part of the command's throughput).

    python benchmarks/startup.py            # 7 runs per command
    python benchmarks/startup.py --runs 15 --json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

#: command line -> target seconds (None: no target, shown for comparison)
COMMANDS: dict[str, float | None] = {
    "--help": 0.5,
    "--version": None,
    "models": 0.5,
    "learners": 1.0,
    "replay --help": None,
    # issue 12: a whole (tiny) closed-loop run without checkpoints: what start-up costs `simulate`
    "simulate --learner linucb --arms 20 --dim 15 --steps 1 --no-checkpoint --quiet": None,
}


def measure(argv: list[str], runs: int, cwd: str) -> dict[str, float | str]:
    walls, cpus = [], []
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANDITLOOP_")}
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "banditloop.cli", *argv], cwd=cwd, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
        if proc.returncode != 0:  # e.g. an option an older version does not have: reported, not timed
            return {"failed": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else str(proc.returncode)}
    return {"median_wall": statistics.median(walls), "min_wall": min(walls), "median_cpu": statistics.median(cpus)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per command (default 7)")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, float | str | None]] = {}
    with tempfile.TemporaryDirectory() as cwd:
        subprocess.run([sys.executable, "-c", "import banditloop.cli"], cwd=cwd, check=True)  # warm the caches
        for command, target in COMMANDS.items():
            results[command] = {**measure(command.split(), args.runs, cwd), "target": target}
    if args.json:
        print(json.dumps({"runs": args.runs, "python": sys.version.split()[0], "load": os.getloadavg()[0],
                          "commands": results}))
        return 0
    print(f"banditloop start-up, median of {args.runs} runs (python {sys.version.split()[0]}, "
          f"load average {os.getloadavg()[0]:.2f})")
    width = max(16, *(len(c) for c in results))
    print(f"{'command':<{width}} {'wall s':>7} {'min s':>7} {'cpu s':>7}  target")
    for command, r in results.items():
        target = r["target"]
        if "failed" in r:
            print(f"{command:<{width}} failed: {r['failed']}")
            continue
        verdict = "" if target is None else f"<= {target:g} s {'ok' if r['median_wall'] <= target else 'MISSED'}"
        print(f"{command:<{width}} {r['median_wall']:>7.3f} {r['min_wall']:>7.3f} {r['median_cpu']:>7.3f}  {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
