"""Soak of ``banditloop serve`` under hostile-but-valid traffic, against a clean run of the same length.

Two runs of ``--seconds`` each (default 300), each on a fresh ``banditloop serve`` process started with
its default limits on a model trained here (LinUCB, K arms, d numeric context fields plus 16 hashed
slots for string features):

* **clean**: normal traffic only, open loop at ``--rate`` requests/s over ``--connections`` keep-alive
  connections (numeric context, one of 20 countries as a string feature, all K arms as candidates);
* **hostile**: the same normal traffic, plus an attacker process (started after the warm-up) sending
  - requests whose context holds 60 never-repeated string features (~200 characters each, so that
    every one is cached) and, every other request, 10 of ~900 characters (hashed, never cached);
  - requests with 1,000 arm ids never seen before (the issue's 3 requests/s);
  - ``--half-open`` connections that send half a request line and headers and stall, reopened whenever
    the server drops them;
  - ``--slow-bodies`` connections that declare a body and stop after ten bytes of it.

Printed: the server's RSS every ``--sample`` seconds in both runs, normal traffic's latency (from
the scheduled send, so a stalled server cannot hide behind a slow generator) and its error count in
both runs, the ratio hostile/clean of the p50 and p99 (same machine, same minutes), and what the
attacker's requests got back, then one ``JSON`` line. Targets (issue 13): RSS flat, p99 within 2x of
the clean run. Figures are printed; nothing is asserted.

    python benchmarks/scorer_soak.py [--seconds 300] [--rate 100] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.http_load import RawConnection, raw_request  # noqa: E402

COUNTRIES = [f"c{i:02d}" for i in range(20)]
HASHED_SLOTS = 16


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


async def cache_mb(port: int) -> float:
    """The server's own estimate of its featurizer cache (``banditloop_feature_cache_bytes``), MB."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        text = (await asyncio.wait_for(reader.read(), 10)).decode(errors="replace")
        writer.close()
    except (OSError, TimeoutError):
        return float("nan")
    for line in text.splitlines():
        if line.startswith("banditloop_feature_cache_bytes{"):
            return float(line.rsplit(" ", 1)[1]) / 2**20
    return float("nan")


def train(db: str, arms: int, dim: int, steps: int) -> None:
    from banditloop.core.features import FeatureSpec, dense_names
    from banditloop.pipeline.checkpoints import CheckpointStore
    from banditloop.pipeline.model import ModelConfig
    from banditloop.pipeline.simulate import SimulationOptions, simulate
    from banditloop.simulators.world import WorldConfig

    config = ModelConfig("linucb", features=FeatureSpec(dim=dim + 1 + HASHED_SLOTS, numeric=dense_names("x", dim)))
    store = CheckpointStore(db)
    try:
        simulate(WorldConfig(arms=arms, dim=dim, seed=0), config, "soak", store,
                 SimulationOptions(steps=steps, quiet=True, checkpoint_interval=None))
    finally:
        store.close()


def start_server(db: str, port: int, log: Path, extra: list[str]) -> subprocess.Popen:
    import httpx

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("BANDITLOOP_")}
    proc = subprocess.Popen([sys.executable, "-m", "banditloop.cli", "serve", "--db", db, "--model", "soak",
                             "--port", str(port), "--log-level", "warning", *extra],
                            env=env, stdin=subprocess.DEVNULL, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("server did not start")


def normal_bodies(arms: int, dim: int, n: int = 2000, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        context: dict[str, float | str] = {f"x{j}": round(rng.gauss(0, 1), 4) for j in range(dim)}
        context["country"] = rng.choice(COUNTRIES)
        out.append(json.dumps({"context": context, "candidates": [f"a{i}" for i in range(arms)]}).encode())
    return out


async def normal_load(port: int, bodies: list[bytes], rate: float, seconds: float, connections: int,
                      warmup: float, pid: int, sample: float) -> dict:
    """Open-loop normal traffic; returns latencies (ms, from the scheduled time) after the warm-up,
    statuses, and the server's RSS every ``sample`` seconds."""
    raw = [raw_request("127.0.0.1", port, b) for b in bodies]
    queue: asyncio.Queue = asyncio.Queue()
    results: list[tuple[float, float, int]] = []
    rss: list[tuple[float, float, float]] = []
    total = int((warmup + seconds) * rate)
    t0 = time.perf_counter() + 0.2

    async def worker() -> None:
        conn = RawConnection("127.0.0.1", port)
        while True:
            item = await queue.get()
            if item is None:
                await conn.close()
                return
            i, scheduled = item
            try:
                status = await asyncio.wait_for(conn.post(raw[i % len(raw)]), 10.0)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                status = 0
                await conn.close()
                conn = RawConnection("127.0.0.1", port)
            results.append((scheduled, time.perf_counter(), status))

    async def sampler() -> None:
        while True:
            rss.append((time.perf_counter() - t0, rss_mb(pid), await cache_mb(port)))
            await asyncio.sleep(sample)

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    sampling = asyncio.create_task(sampler())
    for i in range(total):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((i, scheduled))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    sampling.cancel()
    rss.append((time.perf_counter() - t0, rss_mb(pid), await cache_mb(port)))
    measured = [r for r in results if r[0] >= t0 + warmup]
    latencies = np.array([(done - sched) * 1000 for sched, done, status in measured if status == 200])
    return {"latencies": latencies, "statuses": Counter(status for _, _, status in measured), "rss": rss}


# -- the attacker (a process of its own: its CPU competes with the server, not with the measurement) ---
async def attack(port: int, seconds: float, arms: int, dim: int, half_open: int, slow_bodies: int,
                 unique_rate: float, new_arm_rate: float) -> dict:
    stop = time.monotonic() + seconds
    outcomes: Counter[str] = Counter()
    rng = random.Random(7)

    async def paced(rate: float, make: object, label: str) -> None:
        conn = RawConnection("127.0.0.1", port)
        next_at = time.monotonic()
        while time.monotonic() < stop:
            body = make()  # type: ignore[operator]
            try:
                status = await asyncio.wait_for(conn.post(raw_request("127.0.0.1", port, body)), 30.0)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                status = 0
            if status != 200:  # the server may close after an error: start a new connection
                await conn.close()
                conn = RawConnection("127.0.0.1", port)
            outcomes[f"{label} {status or 'closed'}"] += 1
            next_at += 1 / rate
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await conn.close()

    def unique_features() -> bytes:
        tag = uuid.uuid4().hex
        context: dict[str, float | str] = {f"x{j}": rng.gauss(0, 1) for j in range(dim)}
        context.update({f"u{j}": f"{tag}-{j}-" + "v" * 150 for j in range(60)})
        if rng.random() < 0.5:
            context.update({f"long{j}": f"{tag}-{j}-" + "w" * 900 for j in range(10)})
        return json.dumps({"context": context, "candidates": [f"a{i}" for i in range(arms)]}).encode()

    def new_arms() -> bytes:
        tag = uuid.uuid4().hex[:12]
        return json.dumps({"context": {"x0": 0.1}, "candidates": [f"new-{tag}-{j}" for j in range(1000)]}).encode()

    async def stalled(kind: str) -> None:
        while time.monotonic() < stop:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                outcomes[f"{kind} connect failed"] += 1
                await asyncio.sleep(1.0)
                continue
            if kind == "half-open":
                writer.write(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: appl")
            else:
                writer.write(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 1000\r\n\r\n{\"context\":")
            try:
                answer = await asyncio.wait_for(reader.read(64), max(0.1, stop - time.monotonic()))
                outcomes[f"{kind} {answer[9:12].decode(errors='replace') if answer else 'dropped'}"] += 1
            except (OSError, TimeoutError):
                outcomes[f"{kind} held to the end"] += 1
            writer.close()
            await asyncio.sleep(1.0 if time.monotonic() < stop else 0)

    tasks = [asyncio.create_task(paced(unique_rate, unique_features, "unique-features")),
             asyncio.create_task(paced(new_arm_rate, new_arms, "1000-new-arms"))]
    tasks += [asyncio.create_task(stalled("half-open")) for _ in range(half_open)]
    tasks += [asyncio.create_task(stalled("slow-body")) for _ in range(slow_bodies)]
    await asyncio.gather(*tasks)
    return dict(sorted(outcomes.items()))


def pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q)) if a.size else float("nan")


def run_phase(name: str, args: argparse.Namespace, db: str, tmp: Path, bodies: list[bytes]) -> dict:
    from banditloop.pipeline.broker import free_port

    port = free_port()
    proc = start_server(db, port, tmp / f"serve-{name}.log", args.serve_arg)
    attacker = None
    try:
        if name == "hostile":
            attacker = subprocess.Popen(
                [sys.executable, __file__, "--attack", str(port), "--seconds", str(args.seconds),
                 "--arms", str(args.arms), "--dim", str(args.dim), "--half-open", str(args.half_open),
                 "--slow-bodies", str(args.slow_bodies), "--unique-rate", str(args.unique_rate),
                 "--new-arm-rate", str(args.new_arm_rate)],
                stdout=subprocess.PIPE, text=True, start_new_session=True)
        print(f"{name}: {args.seconds:g} s of normal traffic at {args.rate:g} req/s"
              + (" plus the attacker" if attacker else "") + " ...", flush=True)
        out = asyncio.run(normal_load(port, bodies, args.rate, args.seconds, args.connections, args.warmup,
                                      proc.pid, args.sample))
        out["attack"] = {}
        if attacker is not None:
            stdout, _ = attacker.communicate(timeout=120)
            out["attack"] = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else {}
        return out
    finally:
        if attacker is not None and attacker.poll() is None:
            os.killpg(attacker.pid, signal.SIGKILL)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="length of each run (clean and hostile)")
    parser.add_argument("--quick", action="store_true", help="30 s runs (development only: too short to judge)")
    parser.add_argument("--rate", type=float, default=100.0, help="normal requests per second")
    parser.add_argument("--connections", type=int, default=16, help="normal traffic's keep-alive connections")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before the measurement starts")
    parser.add_argument("--sample", type=float, default=15.0, help="RSS sampling period, seconds")
    parser.add_argument("--arms", type=int, default=100)
    parser.add_argument("--dim", type=int, default=31, help="numeric context fields (bias and 16 hashed slots added)")
    parser.add_argument("--half-open", type=int, default=1000, help="half-open connections held by the attacker")
    parser.add_argument("--slow-bodies", type=int, default=50, help="connections that stall in their body")
    parser.add_argument("--unique-rate", type=float, default=20.0, help="requests/s with never-repeated strings")
    parser.add_argument("--new-arm-rate", type=float, default=3.0, help="requests/s with 1,000 new arm ids")
    parser.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for both servers, e.g. --serve-arg=--scoring-threads=0")
    parser.add_argument("--only-hostile", action="store_true", help="skip the clean run (development only)")
    parser.add_argument("--attack", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attack is not None:
        print(json.dumps(asyncio.run(attack(args.attack, args.seconds + args.warmup, args.arms, args.dim,
                                            args.half_open, args.slow_bodies, args.unique_rate,
                                            args.new_arm_rate))))
        return
    if args.quick:
        args.seconds, args.sample = 30.0, 5.0
    with tempfile.TemporaryDirectory(prefix="scorer-soak-") as tmp_name:
        tmp = Path(tmp_name)
        db = f"sqlite:///{tmp / 'soak.db'}"
        train(db, args.arms, args.dim, 5000)
        bodies = normal_bodies(args.arms, args.dim)
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.2f} at start (other processes compete for the same cores)")
        phases = ("hostile",) if args.only_hostile else ("clean", "hostile")
        runs = {name: run_phase(name, args, db, tmp, bodies) for name in phases}
        print(f"load average {os.getloadavg()[0]:.2f} at the end")

    runs.setdefault("clean", {"rss": [], "latencies": np.array([]), "statuses": Counter()})
    print("\nserver RSS, MB, and (in brackets) its featurizer cache's estimated size, MB; time from the start "
          "of each run, s")
    clean_rss, hostile_rss = runs["clean"]["rss"], runs["hostile"]["rss"]
    nan = (float("nan"),) * 3
    for i in range(max(len(clean_rss), len(hostile_rss))):
        c = clean_rss[i] if i < len(clean_rss) else nan
        h = hostile_rss[i] if i < len(hostile_rss) else nan
        print(f"  t={max(c[0], h[0]):6.0f}   clean {c[1]:7.1f} [{c[2]:5.1f}]   hostile {h[1]:7.1f} [{h[2]:5.1f}]")
    for name, run in runs.items():
        values = [v for _, v, _ in run["rss"]]
        if not values:
            continue
        half = values[len(values) // 2:]
        print(f"  {name:8s} start {values[0]:.1f}  max {max(values):.1f}  end {values[-1]:.1f}  "
              f"second half {min(half):.1f}..{max(half):.1f}")

    print(f"\nnormal traffic ({args.rate:g} req/s), latency ms from the scheduled send, successful answers")
    for name, run in runs.items():
        lat = run["latencies"]
        statuses = dict(sorted(run["statuses"].items()))
        print(f"  {name:8s} n={lat.size:7d}  p50 {pct(lat, 50):7.2f}  p90 {pct(lat, 90):7.2f}  "
              f"p99 {pct(lat, 99):7.2f}  p99.9 {pct(lat, 99.9):8.2f}  max {lat.max() if lat.size else 0:8.1f}  "
              f"statuses {statuses}")
    c, h = runs["clean"]["latencies"], runs["hostile"]["latencies"]
    print(f"  hostile / clean: p50 x{pct(h, 50) / pct(c, 50):.2f}   p99 x{pct(h, 99) / pct(c, 99):.2f}   "
          f"(target p99 <= x2)")
    print("\nattacker's requests and connections, by outcome (status, or what the server did)")
    for key, count in runs["hostile"]["attack"].items():
        print(f"  {key:32s} {count:8d}")
    summary = {name: {"p50_ms": pct(run["latencies"], 50), "p99_ms": pct(run["latencies"], 99),
                      "errors": sum(n for status, n in run["statuses"].items() if status != 200),
                      "rss_mb": [round(v, 1) for _, v, _ in run["rss"]]} for name, run in runs.items()}
    print("JSON " + json.dumps({"benchmark": "scorer_soak", "seconds": args.seconds, "rate": args.rate,
                                "runs": summary, "attack": runs["hostile"]["attack"]}))


if __name__ == "__main__":
    main()
