"""Open-loop HTTP load on ``POST /score``: a fixed request rate for a fixed time, on loopback.

Without ``--url`` the script trains a model (K arms, d features, with the closed-loop simulator),
starts ``banditloop serve`` on it as a separate process on a free loopback port (with ``--kafka``
also a dev broker, and the server publishes every impression), loads it, and stops it with SIGTERM.
This process is the load generator: an asyncio loop puts request ``i`` on a queue at
``t0 + i / rate`` whether or not earlier requests have finished (open loop: slow answers do not
lower the offered load), and ``--connections`` workers, one keep-alive connection each, send them.

The default client is a minimal asyncio HTTP/1.1 client (a few µs of CPU per request);
``--client httpx`` uses ``httpx.AsyncClient``, which costs about 1 ms of CPU per request here, so
on a 2-core machine the generator then competes with the server it measures.

Latency is reported two ways: from the *scheduled* time (includes waiting for a free connection
and the generator's own timer lateness, ~0.5 ms with asyncio's millisecond timers: corrected for
coordinated omission, what a client at that rate sees) and from the actual send. Target: p99 <= 10
ms at 500 requests/s. Figures are printed; nothing is asserted.

    python benchmarks/http_load.py [--seconds 30] [--rate 500] [--connections 64] [--kafka] [--url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux ``/proc``), 0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def start_server(tmp: Path, learner: str, arms: int, dim: int, steps: int, reload_interval: float,
                 extra: list[str]) -> tuple[subprocess.Popen, str]:
    from banditloop.pipeline.broker import free_port
    from benchmarks.score_latency import train

    db = f"sqlite:///{tmp / 'bench.db'}"
    train(db, learner, arms, dim, steps, seed=0)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "banditloop.cli", "serve", "--db", db, "--model", learner,
                             "--port", str(port), "--log-level", "warning", "--reload-interval", str(reload_interval),
                             *extra],
                            env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("server did not become healthy within 60 s")
        time.sleep(0.2)


def bodies(arms: int, dim: int, n: int = 1000, seed: int = 1) -> list[bytes]:
    """``n`` request bodies: the world's contexts, all K arms as candidates."""
    from banditloop.simulators.world import World, WorldConfig

    world = World(WorldConfig(arms=arms, dim=dim - 1, seed=seed))
    out = []
    for _ in range(n):
        req = world.next_request()
        out.append(json.dumps({"context": dict(req.context), "candidates": [f"a{i}" for i in range(arms)]}).encode())
    return out


class RawConnection:
    """A minimal HTTP/1.1 keep-alive client for one connection (asyncio streams): a few µs per
    request, so that the generator's own CPU does not blur the server's latency on a small machine.
    It understands exactly what the service sends: a status line, headers with Content-Length, a body."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, request: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def raw_request(host: str, port: int, body: bytes) -> bytes:
    return (f"POST /score HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def run_load(url: str, payloads: list[bytes], rate: float, seconds: float, connections: int,
                   warmup: float, client_kind: str) -> dict:
    """Requests are scheduled on a timeline and queued (O(1)); ``connections`` workers, one
    connection each, take them in order. A request waiting for a free connection is late, and the
    wait counts in its latency from the scheduled time."""
    parsed = httpx.URL(url)
    host, port = parsed.host, parsed.port or 80
    headers = {"content-type": "application/json"}
    results: list[tuple[float, float, float, int]] = []  # scheduled, sent, finished, status (0 = error)
    errors: dict[str, int] = {}
    queue: asyncio.Queue = asyncio.Queue()
    warm = int(warmup * rate)
    total = warm + int(seconds * rate)
    raw = [raw_request(host, port, body) for body in payloads]
    busy = 0
    max_busy = 0

    async with httpx.AsyncClient(base_url=url, timeout=10.0, limits=httpx.Limits(
            max_connections=connections, max_keepalive_connections=connections)) as client:
        async def worker() -> None:
            nonlocal busy, max_busy
            conn = RawConnection(host, port) if client_kind == "raw" else None
            try:
                while True:
                    item = await queue.get()
                    if item is None:
                        return
                    i, scheduled = item
                    busy += 1
                    max_busy = max(max_busy, busy)
                    sent = time.perf_counter()
                    try:
                        if conn is not None:
                            status = await asyncio.wait_for(conn.post(raw[i % len(raw)]), 10.0)
                        else:
                            response = await client.post("/score", content=payloads[i % len(payloads)],
                                                         headers=headers)
                            status = response.status_code
                    except (httpx.HTTPError, OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                        status = 0
                        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                        if conn is not None:
                            await conn.close()
                            conn = RawConnection(host, port)
                    busy -= 1
                    if i >= warm:
                        results.append((scheduled, sent, time.perf_counter(), status))
            finally:
                if conn is not None:
                    await conn.close()

        workers = [asyncio.create_task(worker()) for _ in range(connections)]
        t0 = time.perf_counter() + 0.05
        max_behind = 0.0
        for i in range(total):
            scheduled = t0 + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                max_behind = max(max_behind, -delay)
            queue.put_nowait((i, scheduled))
        sent_until = time.perf_counter()
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)
        finished = time.perf_counter()
    measured_start = t0 + warm / rate
    return {"results": results, "errors": errors, "elapsed": finished - measured_start,
            "send_span": sent_until - measured_start, "max_behind": max_behind, "max_busy": max_busy}


def publish_figures(url: str, wait: float = 10.0) -> str:
    """Impressions acknowledged by Kafka and publish errors, from the server's /metrics (after
    giving the producer a moment to drain)."""
    deadline = time.monotonic() + wait
    while True:
        text = httpx.get(url + "/metrics", timeout=10).text
        values = {}
        for line in text.splitlines():
            if line.startswith(("banditloop_events_published_total", "banditloop_publish_errors_total",
                                "banditloop_publish_queue_size")):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        queued = values.get("banditloop_publish_queue_size", 0.0)
        if queued == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    acked = values.get('banditloop_events_published_total{type="impression"}', 0.0)
    errors = sum(v for k, v in values.items() if k.startswith("banditloop_publish_errors_total"))
    return f"{acked:.0f} impressions acknowledged by Kafka, {errors:.0f} publish errors, {queued:.0f} still queued"


def describe(values_s: np.ndarray) -> str:
    ms = values_s * 1000.0
    return "  ".join(f"{name} {np.percentile(ms, q):7.2f}" for name, q in
                     (("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9))) + f"  max {ms.max():7.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=None, help="load a running server (default: start one)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured duration")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second (offered)")
    parser.add_argument("--connections", type=int, default=64,
                        help="keep-alive connections, one worker each (requests beyond wait, and that counts)")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw",
                        help="raw: minimal asyncio HTTP/1.1 client (low overhead); httpx: httpx.AsyncClient")
    parser.add_argument("--candidates", type=int, default=100, help="K arms in the model and per request")
    parser.add_argument("--dim", type=int, default=32, help="d features (bias included)")
    parser.add_argument("--learner", default="linucb", choices=["linucb", "diag-linucb"])
    parser.add_argument("--train-steps", type=int, default=5_000)
    parser.add_argument("--reload-interval", type=float, default=1.0, help="the started server's polling period")
    parser.add_argument("--kafka", action="store_true",
                        help="start a dev broker (Tansu) and serve with --bootstrap: every answer is published")
    parser.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for the started `banditloop serve`, e.g. --serve-arg=--http=h11")
    args = parser.parse_args(argv)

    proc = None
    broker = None
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url
        if args.kafka and url is None:
            from banditloop.pipeline.broker import DevBroker

            broker = DevBroker().start()
            args.serve_arg += ["--bootstrap", broker.bootstrap, "--partitions", "4"]
        if url is None:
            proc, url = start_server(Path(tmp), args.learner, args.candidates, args.dim, args.train_steps,
                                     args.reload_interval, args.serve_arg)
        try:
            payloads = bodies(args.candidates, args.dim)
            server_cpu0 = cpu_seconds(proc.pid) if proc else 0.0
            own0 = time.process_time()
            load_before = os.getloadavg()[0]
            out = asyncio.run(run_load(url, payloads, args.rate, args.seconds, args.connections, args.warmup,
                                       args.client))
            own_cpu = time.process_time() - own0
            server_cpu = (cpu_seconds(proc.pid) - server_cpu0) if proc else 0.0
            published = publish_figures(url) if args.kafka else ""
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            if broker is not None:
                broker.stop()

    res = np.array(out["results"], dtype=float).reshape(-1, 4)
    ok = res[res[:, 3] == 200]
    print(f"POST /score open-loop load: offered {args.rate:g} req/s for {args.seconds:g} s (after {args.warmup:g} s "
          f"warm-up), {args.client} client, {args.connections} keep-alive connections, K={args.candidates} "
          f"candidates, d={args.dim}, {args.learner}, server "
          f"{'started here ' + ' '.join(args.serve_arg) if proc else url}")
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after (other processes compete for the same cores)")
    print(f"requests     sent {len(res)}, 200 OK {len(ok)}, other status {int(np.sum(res[:, 3] > 0)) - len(ok)}, "
          f"transport errors {sum(out['errors'].values())} {out['errors'] or ''}")
    print(f"throughput   {len(ok) / out['elapsed']:.1f} req/s answered ({len(res) / out['send_span']:.1f} req/s sent; "
          f"the generator was at most {out['max_behind'] * 1000:.1f} ms behind its timeline; at most "
          f"{out['max_busy']} of {args.connections} connections busy at once)")
    if len(ok):
        print(f"latency ms, from the scheduled time  {describe(ok[:, 2] - ok[:, 0])}")
        print(f"latency ms, from the actual send     {describe(ok[:, 2] - ok[:, 1])}")
        p99 = float(np.percentile(ok[:, 2] - ok[:, 0], 99)) * 1000
        print(f"target       p99 <= 10 ms at {args.rate:g} req/s: {'met' if p99 <= 10 else 'MISSED'} "
              f"(p99 {p99:.2f} ms)")
    if published:
        print(f"kafka        {published} (warm-up included)")
    total = out["elapsed"] + args.warmup
    print(f"CPU          load generator {own_cpu / total * 100:.0f}% of a core"
          + (f", server {server_cpu / total * 100:.0f}% of a core" if proc else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
