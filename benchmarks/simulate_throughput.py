"""``banditloop simulate`` as a whole process against river's learner loop alone, in the same run.

The simulate side is the real command in a fresh process (start-up, world, featurizing, the join of
delayed clicks and conversions, the learner, regret bookkeeping; no checkpoints, no log):
``banditloop simulate --learner linucb --arms 20 --dim 15 --steps N --no-checkpoint --json``, and
its rate is ``N`` ÷ the process's wall time. The peer is river's ``LinUCBDisjoint`` driven event at a
time on the same world (``choose`` + ``learn`` with immediate feedback, inputs pre-built, see
``benchmarks/common.py``): no world, no join, no start-up, so the comparison favours river. The two
alternate, ``--repeats`` times each; medians count. CPU-time rates are printed beside the wall-time
ones because the development machine is shared (see the load average printed with the figures).

Target (issue 12): ``simulate`` whole process, LinUCB K=20 d=16, ≥ 10× river's learner loop alone.
Last figures (2026-12-03, three before/after pairs against main, load average 1.4-4.3 on 2 cores, see
benchmarks/README.md "Issue 12: simulate ≥ 10× river"): 9.6× wall, 9.9× CPU (medians of the three
runs; 8.9-10.5× wall, 9.6-10.7× CPU), main in the same session 7.2× wall, 7.7× CPU; the quiet
re-run before that work measured 9.49× wall, 9.42× CPU. Quiet re-run after the merges (load 1.0,
nothing else running, two runs): **10.9× and 10.5× wall** (CPU 10.9× / 10.5×): target met.

    python benchmarks/simulate_throughput.py [--quick] [--steps N] [--repeats 3] [--budget S]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

from benchmarks.common import RiverLinUCB, closed_loop, emit_json, table, world_stream  # noqa: E402

ARMS, CONTEXT_DIM = 20, 15  # learners see 1 + 15 = 16 features
TARGET = 10.0


def simulate_once(steps: int, seed: int, extra: list[str]) -> dict:
    """One ``banditloop simulate`` process: wall and CPU seconds, and what it printed."""
    cmd = [sys.executable, "-m", "banditloop.cli", "simulate", "--learner", "linucb", "--arms", str(ARMS),
           "--dim", str(CONTEXT_DIM), "--steps", str(steps), "--seed", str(seed), "--no-checkpoint", "--json",
           *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary = json.loads(out.stdout)
    return {"wall": wall, "cpu": cpu, "rate": steps / wall, "cpu_rate": steps / cpu,
            "in_process_rate": summary["steps_per_second"], "regret": summary["regret"]}


def river_once(stream, budget: float, seed: int) -> dict:
    contender = RiverLinUCB(stream, seed=seed)
    c0 = time.process_time()
    run = closed_loop(contender, stream, budget=budget)
    cpu = time.process_time() - c0
    return {"rate": run.rate, "cpu_rate": run.events / cpu, "events": run.events}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20,000 steps, 1 s of river per repeat")
    parser.add_argument("--steps", type=int, default=None, help="simulate steps (default 100000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=None, help="seconds of river per repeat (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=0,
                        help="also run simulate --batch N (micro-batched scoring) if the command has it")
    args = parser.parse_args(argv)
    steps = args.steps or (20_000 if args.quick else 100_000)
    budget = args.budget or (1.0 if args.quick else 3.0)
    load_before = os.getloadavg()
    stream = world_stream(ARMS, CONTEXT_DIM, args.seed, 5_000)
    variants = {"simulate": []}
    if args.batch:
        variants[f"simulate --batch {args.batch}"] = ["--batch", str(args.batch)]
    runs: dict[str, list[dict]] = {name: [] for name in [*variants, "river"]}
    started = time.perf_counter()
    for _ in range(args.repeats):
        for name, extra in variants.items():
            runs[name].append(simulate_once(steps, args.seed, extra))
        runs["river"].append(river_once(stream, budget, args.seed))
    load_after = os.getloadavg()

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    river, river_cpu = med("river", "rate"), med("river", "cpu_rate")
    rows, ratios = [], {}
    for name in variants:
        rate, cpu_rate, inproc = med(name, "rate"), med(name, "cpu_rate"), med(name, "in_process_rate")
        ratios[name] = {"wall": rate / river, "cpu": cpu_rate / river_cpu, "in_process": inproc / river}
        rows.append([name + " (whole process)", rate, cpu_rate, ratios[name]["wall"], ratios[name]["cpu"],
                     med(name, "regret")])
        rows.append([name + " (its own steps/s, no start-up)", inproc, float("nan"), ratios[name]["in_process"],
                     float("nan"), float("nan")])
    rows.append([f"{RiverLinUCB.name}, learner loop alone", river, river_cpu, 1.0, 1.0, float("nan")])
    print(f"banditloop simulate --learner linucb, K={ARMS}, d={CONTEXT_DIM + 1}, {steps:,} steps, vs river's "
          f"learner loop ({budget:g} s); medians of {args.repeats}")
    print(f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} (2 cores)")
    print(table(["contender", "steps/s (wall)", "steps/s (CPU)", "× river (wall)", "× river (CPU)", "regret"], rows))
    main_ratio = ratios["simulate"]["wall"]
    status = "meets" if main_ratio >= TARGET else "MISSES"
    print(f"simulate whole process over river's learner loop: {main_ratio:.1f}× wall, "
          f"{ratios['simulate']['cpu']:.1f}× CPU (target ≥ {TARGET:g}×: {status})")
    elapsed = time.perf_counter() - started
    print(f"took {elapsed:.1f} s")
    result = {"steps": steps, "repeats": args.repeats, "budget_s": budget,
              "steps_per_s": {name: round(med(name, "rate"), 1) for name in variants},
              "river_events_per_s": round(river, 1),
              "ratios": {k: {kk: round(vv, 2) for kk, vv in v.items()} for k, v in ratios.items()},
              "target": TARGET, "target_met": main_ratio >= TARGET,
              "load_average": [round(v, 2) for v in (*load_before, *load_after)], "elapsed_s": round(elapsed, 1)}
    emit_json("simulate_throughput", result)
    return result


if __name__ == "__main__":
    main()
