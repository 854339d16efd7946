"""``banditloop demo``: the whole loop, live, on loopback.

What runs, all real components (nothing mocked):

* the development Kafka broker (:class:`banditloop.pipeline.broker.DevBroker`, memory only) with the three event
  topics (``partitions`` each);
* ``banditloop consume`` and ``banditloop serve --bootstrap ... --reload-interval 1`` as subprocesses,
  each in its own process group (session), so that a terminal's Ctrl-C reaches only this process and
  the shutdown order stays ours: load stops, pending feedback drains, the consumer catches up and
  writes its final checkpoint (SIGTERM), then the scorer stops, then the broker;
* in this process, a population of simulated users: a dispatcher thread draws requests from the
  :class:`~banditloop.simulators.world.World` at ``rate`` per second (open loop, bounded in-flight) and a thread
  pool POSTs them to ``/score``; the scorer answers with the arm, impression id and propensity and
  publishes the impression itself; the world then decides click and conversion with its known
  probabilities, and the feedback is POSTed to ``/feedback`` when it is due (delays in wall-clock
  seconds), with the *scorer's* impression id and wall-clock event times so that the consumer's
  event-time join matches it;
* a monitor thread that reads the consumer's checkpoints (learned impressions, versions) for the lag,
  and a live view on stderr.

Bootstrap. The scorer serves nothing until its model has a checkpoint, and the consumer writes one
only after it has learned from impressions, which only a serving scorer produces. The demo breaks
the cycle by writing version 1 of the model itself: an untrained learner per consumer shard
(``p0``, ``p1``, ... as :func:`banditloop.pipeline.consumer.shard_name` names them) with the *same*
:class:`~banditloop.pipeline.model.ModelConfig` the consumer builds from its command line (both are parsed from
one argument list), and a Kafka source with no offsets. The consumer restores those shards like any
checkpoint of its own (``kind == "kafka"``) and, finding no offsets, reads its partitions from the
beginning, exactly as a fresh start would; its checkpoints then continue the version sequence. The
untrained model scores every arm alike, so the first requests are served uniformly at random.

Every run uses a new model name (``demo-<learner>-<time>``) because the broker forgets everything
when it stops: checkpointed offsets of an earlier run would point past the end of the new topics.

Regret is exact: for every request the world knows the expected reward (click probability) of the
served arm, of the best candidate (oracle) and the mean over candidates (uniform random).
"""

from __future__ import annotations

import contextlib
import heapq
import http.client
import itertools
import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import msgspec

from banditloop.core.events import Click, Conversion, encode_event
from banditloop.simulators.world import Request, World, WorldConfig

log = logging.getLogger("banditloop.demo")

__all__ = ["DEMO_WORLD", "DemoError", "DemoOptions", "DemoStats", "run_demo"]

#: The demo world: ~6 % CTR under uniform random, ~22 % for the oracle, so that learning is visible
#: within a minute at ~150 requests/s (tuned on 2 cores: LinUCB with alpha 0.3 reaches ~90 % of the
#: oracle's advantage over random within ~20 s with one model reload per second). Clicks come ~2 s
#: after the impression, conversions ~10 s after the click (exponential delays, wall-clock seconds).
DEMO_WORLD: dict[str, Any] = {
    "base_ctr": 0.03,
    "bias_spread": 0.6,
    "theta_scale": 1.2,
    "click_delay_mean": 2.0,
    "conversion_delay_mean": 10.0,
}
#: hyper-parameters used unless --param sets them: with CTRs of a few percent, LinUCB's default
#: alpha=1 spends most of a one-minute run exploring
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "linucb": {"alpha": 0.3}, "hybrid-linucb": {"alpha": 0.3}, "diag-linucb": {"alpha": 0.3},
}
#: the rolling window (seconds) of the "recent CTR" figures
RECENT_WINDOW = 5


class DemoError(RuntimeError):
    """A component failed to start or died during the run (the message names it and its log)."""


@dataclass
class DemoOptions:
    learner: str = "linucb"
    params: list[str] = field(default_factory=list)
    arms: int = 10
    dim: int = 8
    seconds: float | None = 60.0
    requests: int | None = None
    rate: float = 150.0
    db: str = "sqlite:///banditloop.db"
    out: Path = Path("out")
    checkpoint_interval: float = 1.0
    reload_interval: float = 1.0
    partitions: int = 2
    seed: int = 7
    model: str | None = None
    world: dict[str, Any] = field(default_factory=dict)
    #: simulated users talking to the scorer at once
    workers: int = 8
    #: after the load stops: how long feedback still due is delivered
    drain_seconds: float = 3.0
    #: after the drain: how long to wait for the consumer to checkpoint everything sent
    catch_up_seconds: float = 15.0
    startup_timeout: float = 90.0
    #: the live view on the stream: redrawn in place on a terminal, else a line every five seconds
    view: bool = True


# ------------------------------------------------------------------------------------------------
# statistics


@dataclass
class _Bucket:
    """One second of the run (by time since the load started)."""

    n: int = 0
    served: float = 0.0
    oracle: float = 0.0
    random: float = 0.0
    clicks: int = 0


class DemoStats:
    """Per-second sums of expected rewards (served, oracle, random) and counters; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.buckets: list[_Bucket] = []
        self.ok = 0
        self.errors: Counter[str] = Counter()
        self.feedback_sent: Counter[str] = Counter()
        self.feedback_errors: Counter[str] = Counter()
        self.served = self.oracle = self.random = 0.0
        self.clicks = self.conversions_due = 0
        #: (seconds since start, version) when a newer model version was first served
        self.versions: list[tuple[float, int]] = []
        #: (seconds, checkpointed impressions, lag in impressions, newest checkpoint version)
        self.monitor: list[tuple[float, int, int, int]] = []
        self.learned: dict[str, int] = {}

    def record(self, t: float, served: float, oracle: float, random: float, clicked: bool, version: int) -> None:
        with self.lock:
            second = int(t)
            while len(self.buckets) <= second:
                self.buckets.append(_Bucket())
            b = self.buckets[second]
            b.n += 1
            b.served += served
            b.oracle += oracle
            b.random += random
            b.clicks += clicked
            self.ok += 1
            self.served += served
            self.oracle += oracle
            self.random += random
            self.clicks += clicked
            if not self.versions or version > self.versions[-1][1]:
                self.versions.append((t, version))

    @property
    def version(self) -> int | None:
        return self.versions[-1][1] if self.versions else None

    def recent(self, seconds: int = RECENT_WINDOW) -> tuple[float, float, float, float] | None:
        """(served, oracle, random, realised) CTR over the last ``seconds`` buckets, None before any."""
        with self.lock:
            window = self.buckets[-seconds:]
            n = sum(b.n for b in window)
            if not n:
                return None
            return (sum(b.served for b in window) / n, sum(b.oracle for b in window) / n,
                    sum(b.random for b in window) / n, sum(b.clicks for b in window) / n)

    def lag(self) -> int | None:
        return self.monitor[-1][2] if self.monitor else None


# ------------------------------------------------------------------------------------------------
# child processes


class Child:
    """A ``banditloop`` sub-command in its own session (process group), output to log files.

    Its own session: a terminal's Ctrl-C goes to the foreground process group only, so the children
    never see it and stop when (and in the order) the demo decides. On Linux the child also gets
    ``PR_SET_PDEATHSIG`` (SIGKILL): if the demo itself is SIGKILLed, nothing is left behind.
    """

    def __init__(self, name: str, argv: list[str], log_path: Path, stdout_path: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        from banditloop.pipeline.broker import pdeathsig_preexec

        self.name = name
        self.log_path = log_path
        self.stdout_path = stdout_path
        with open(log_path, "wb") as err, open(stdout_path or os.devnull, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "banditloop.cli", *argv], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env=env, start_new_session=True, preexec_fn=pdeathsig_preexec(), close_fds=True)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float, sig: int = signal.SIGTERM) -> int | None:
        """Signal the group, wait up to ``timeout``, then SIGKILL whatever is left. Returns the exit code."""
        if self.proc.poll() is None:
            _killpg(self.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s: killing it", self.name, timeout)
                _killpg(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        _killpg(self.pid, signal.SIGKILL)  # anything the child may have left in its group
        return self.proc.returncode

    def group_gone(self) -> bool:
        """No process is left in the child's process group."""
        return not _group_exists(self.pid)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stdout_json(self) -> dict[str, Any] | None:
        """The JSON summary the child printed (``--json``), if it did."""
        if self.stdout_path is None:
            return None
        try:
            lines = self.stdout_path.read_text().strip().splitlines()
            return json.loads(lines[-1]) if lines else None
        except (OSError, ValueError):
            return None


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def child_env() -> dict[str, str]:
    """The environment of the children: ours without ``$BANDITLOOP_*``, which would otherwise change
    their options behind the demo's back (the bootstrap checkpoint must match the consumer's config)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("BANDITLOOP_")}


# ------------------------------------------------------------------------------------------------
# HTTP (standard library: keep-alive connections, one per thread)


class HttpClient:
    """A tiny JSON-over-HTTP client: one persistent connection per calling thread."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        for attempt in range(2):
            conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                self._local.conn = conn
                with self._lock:
                    self._all.append(conn)
            try:
                headers = {"Content-Type": "application/json"} if body is not None else {}
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()  # a connection left mid-request cannot be reused
                self._local.conn = None
                with self._lock:
                    self._all.remove(conn)
                # the server closed an idle keep-alive connection before reading: safe to resend once
                stale = isinstance(exc, http.client.RemoteDisconnected | BrokenPipeError | ConnectionResetError)
                if attempt or not stale:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


# ------------------------------------------------------------------------------------------------
# simulated users


class Population:
    """Simulated users: requests to ``/score`` at a steady rate, feedback to ``/feedback`` when due."""

    def __init__(self, world: World, client: HttpClient, stats: DemoStats, *, rate: float,
                 total: int | None, seconds: float | None, workers: int, arm_features: bool) -> None:
        self.world = world
        self.client = client
        self.stats = stats
        self.rate = rate
        self.total = total
        self.seconds = seconds
        self.arm_features = arm_features
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="user")
        self.feedback_pool = ThreadPoolExecutor(max(2, workers // 4), thread_name_prefix="feedback")
        self._slots = threading.BoundedSemaphore(workers * 4)  # bounded in-flight: no unbounded backlog
        self._stop = threading.Event()
        self._done = threading.Event()
        self._pending: list[tuple[float, int, bytes, str]] = []  # (due monotonic, seq, body, kind)
        self._pending_lock = threading.Condition()
        self._seq = itertools.count()
        self._closed = False  # no more feedback is scheduled or delivered
        self.t0 = 0.0
        self._threads: list[threading.Thread] = []

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self.t0 = time.monotonic()
        for target, name in ((self._dispatch, "dispatcher"), (self._deliver, "feedback-scheduler")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def done(self) -> bool:
        """The planned requests have all been sent (or the load was stopped)."""
        return self._done.is_set()

    def stop_requests(self) -> None:
        """No more requests; wait for those in flight."""
        self._stop.set()
        self._threads[0].join(timeout=30)
        self.pool.shutdown(wait=True)

    def drain_feedback(self, seconds: float) -> int:
        """Deliver feedback falling due within ``seconds``, drop the rest; returns how many were dropped."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self._pending_lock:
                if not self._pending:
                    break
            time.sleep(0.05)
        with self._pending_lock:
            dropped = len(self._pending)
            self._pending.clear()
            self._closed = True
            self._pending_lock.notify_all()
        self._threads[1].join(timeout=10)
        self.feedback_pool.shutdown(wait=True)
        return dropped

    def abort(self) -> None:
        """Stop everything quickly (second Ctrl-C, errors): nothing more is sent."""
        self._stop.set()
        with self._pending_lock:
            self._pending.clear()
            self._closed = True
            self._pending_lock.notify_all()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.feedback_pool.shutdown(wait=False, cancel_futures=True)

    # -- requests -------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        try:
            for i in itertools.count():
                if self._stop.is_set() or (self.total is not None and i >= self.total):
                    break
                if self.seconds is not None and self.elapsed() >= self.seconds:
                    break
                delay = next_at - time.monotonic()
                if delay > 0:
                    if self._stop.wait(delay):
                        break
                elif delay < -1.0:  # more than a second behind (a slow scorer): do not burst to catch up
                    next_at = time.monotonic()
                next_at += interval
                req = self.world.next_request()  # the world is not thread-safe: drawn here, in order
                while not self._slots.acquire(timeout=0.2):
                    if self._stop.is_set():
                        return
                try:
                    self.pool.submit(self._serve_one, req)
                except RuntimeError:  # the pool was shut down (abort)
                    self._slots.release()
                    return
        finally:
            self._done.set()

    def _serve_one(self, req: Request) -> None:
        try:
            body: dict[str, Any] = {"context": req.context, "candidates": req.candidates}
            if self.arm_features and req.arm_features:
                body["arm_features"] = req.arm_features
            try:
                status, data = self.client.request("POST", "/score", msgspec.json.encode(body))
            except (OSError, http.client.HTTPException) as exc:
                with self.stats.lock:
                    self.stats.errors[type(exc).__name__] += 1
                return
            if status != 200:
                with self.stats.lock:
                    self.stats.errors[f"HTTP {status}"] += 1
                return
            answer = msgspec.json.decode(data)
            wall, now = time.time(), time.monotonic()  # after the scorer stamped the impression
            outcome = self.world.respond(req, answer["arm"])  # draws nothing: safe from any thread
            self.stats.record(now - self.t0, outcome.expected_reward, outcome.oracle_expected_reward,
                              float(req.truth.expected.mean()), outcome.clicked, int(answer["version"]))
            if outcome.click is None:
                return
            # the world's delays, in wall-clock seconds, applied to the scorer's impression id
            impression_id = answer["impression_id"]
            click_delay = outcome.click.ts - req.ts
            self._schedule(now + click_delay, "click", Click(
                event_id=f"{impression_id}:c", ts=wall + click_delay, impression_id=impression_id))
            if outcome.conversion is not None:
                delay = outcome.conversion.ts - req.ts
                self._schedule(now + delay, "conversion", Conversion(
                    event_id=f"{impression_id}:v", ts=wall + delay, impression_id=impression_id,
                    value=outcome.conversion.value))
        finally:
            self._slots.release()

    # -- feedback -------------------------------------------------------------------------------
    def _schedule(self, due: float, kind: str, event: Click | Conversion) -> None:
        with self._pending_lock:
            if self._closed:
                return
            heapq.heappush(self._pending, (due, next(self._seq), encode_event(event), kind))
            self._pending_lock.notify()

    def _deliver(self) -> None:
        """Hand each feedback event to the feedback pool when it falls due."""
        while True:
            with self._pending_lock:
                while True:
                    if self._closed:
                        return
                    wait = 0.5 if not self._pending else self._pending[0][0] - time.monotonic()
                    if wait <= 0:
                        break
                    self._pending_lock.wait(min(wait, 0.5))
                _, _, body, kind = heapq.heappop(self._pending)
            try:
                self.feedback_pool.submit(self._post_feedback, body, kind)
            except RuntimeError:  # the pool was shut down (abort)
                return

    def _post_feedback(self, body: bytes, kind: str) -> None:
        try:
            status, _ = self.client.request("POST", "/feedback", body)
        except (OSError, http.client.HTTPException) as exc:
            status, reason = 0, type(exc).__name__
        else:
            reason = f"HTTP {status}"
        with self.stats.lock:
            if status == 202:
                self.stats.feedback_sent[kind] += 1
            else:
                self.stats.feedback_errors[reason] += 1

    def pending_feedback(self) -> int:
        with self._pending_lock:
            return len(self._pending)


# ------------------------------------------------------------------------------------------------
# monitoring the consumer


class CheckpointMonitor:
    """Reads the model's newest checkpoint per shard once a second: what the consumer has learned
    (durably), hence the lag in impressions behind what the users were served."""

    def __init__(self, db: str, model: str, stats: DemoStats, population: Population) -> None:
        from banditloop.pipeline.checkpoints import CheckpointStore

        self.store = CheckpointStore(db)
        self.model = model
        self.stats = stats
        self.population = population
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checkpoint-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def poll(self) -> dict[str, int]:
        """Learned counters summed over the shards' newest checkpoints, plus the newest version."""
        totals: dict[str, int] = {"version": 0}
        for cp in self.store.latest_per_shard(self.model):
            totals["version"] = max(totals["version"], cp.version or 0)
            for key in ("impressions", "clicks", "conversions", "rewarded", "unmatched", "late"):
                totals[key] = totals.get(key, 0) + int(cp.counters.get(key, 0))
        return totals

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.sample()

    def sample(self) -> dict[str, int] | None:
        try:
            learned = self.poll()
        except Exception:  # the database is busy or briefly locked: try again next second
            log.debug("checkpoint poll failed", exc_info=True)
            return None
        with self.stats.lock:
            lag = max(0, self.stats.ok - learned.get("impressions", 0))
            self.stats.learned = learned
            self.stats.monitor.append((self.population.elapsed(), learned.get("impressions", 0), lag,
                                       learned["version"]))
        return learned

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.store.close()


# ------------------------------------------------------------------------------------------------
# the live view


class LiveView:
    """A few lines on stderr, redrawn in place twice a second on a terminal; elsewhere (pipes, CI
    logs) one plain line every five seconds."""

    def __init__(self, stream: TextIO, header: str, total_seconds: float | None, total_requests: int | None) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.header = header
        self.total_seconds = total_seconds
        self.total_requests = total_requests
        self._drawn = 0
        self._last_plain = 0.0
        self._last_ok = 0
        self._last_t = 0.0
        self.rps = 0.0
        #: what the demo is doing once the load has stopped ("" while it runs)
        self.phase = ""

    def update(self, stats: DemoStats, t: float, population: Population, final: bool = False) -> None:
        if self.phase:  # the load has stopped: the mean rate of the run
            self.rps = stats.ok / max(len(stats.buckets), 1)
        elif t - self._last_t >= 1.0:
            self.rps = (stats.ok - self._last_ok) / max(t - self._last_t, 1e-9)
            self._last_ok, self._last_t = stats.ok, t
        if self.tty:
            self._draw(self.lines(stats, t, population))
        elif final or t - self._last_plain >= 5.0:
            self._last_plain = t
            print(self.plain(stats, t), file=self.stream, flush=True)

    def _draw(self, lines: list[str]) -> None:
        out = []
        if self._drawn:
            out.append(f"\x1b[{self._drawn}F")  # back to the first line drawn
        out.extend(f"\x1b[2K{line}\n" for line in lines)
        self.stream.write("".join(out))
        self.stream.flush()
        self._drawn = len(lines)

    def _progress(self, stats: DemoStats, t: float) -> str:
        if self.phase:
            return self.phase
        if self.total_requests:
            return f"{stats.ok:,}/{self.total_requests:,} requests"
        return f"{t:5.1f} s / {self.total_seconds:g} s"

    def lines(self, stats: DemoStats, t: float, population: Population) -> list[str]:
        with stats.lock:
            ok, errors = stats.ok, sum(stats.errors.values())
            n = max(ok, 1)
            served, oracle, random = stats.served / n, stats.oracle / n, stats.random / n
            regret, random_regret = stats.oracle - stats.served, stats.oracle - stats.random
            sent = dict(stats.feedback_sent)
            fb_errors = sum(stats.feedback_errors.values())
            learned = dict(stats.learned)
        recent = stats.recent()
        version = stats.version
        lag = stats.lag()
        bar = _bar(1.0 if self.phase else t / self.total_seconds if self.total_seconds
                   else ok / max(self.total_requests or 1, 1))
        lines = [f"{self.header}   {bar} {self._progress(stats, t)}",
                 f"  users      {ok:,} scored ({self.rps:.0f}/s)   errors {errors}   "
                 f"clicks {sent.get('click', 0):,} → /feedback   conversions {sent.get('conversion', 0):,}   "
                 f"pending {population.pending_feedback()}" + (f"   feedback errors {fb_errors}" if fb_errors else "")]
        if recent is not None:
            r_served, r_oracle, r_random, r_real = recent
            gap = r_oracle - r_random
            captured = (r_served - r_random) / gap if gap > 0 else 0.0
            lines.append(f"  CTR {RECENT_WINDOW} s    served {_pct(r_served)}  (clicks {_pct(r_real)})   "
                         f"oracle {_pct(r_oracle)}   random {_pct(r_random)}   "
                         f"→ {captured:4.0%} of the way from random to oracle")
            lines.append(f"  CTR all    served {_pct(served)}   oracle {_pct(oracle)}   random {_pct(random)}   "
                         f"regret {regret:,.0f} (random {random_regret:,.0f})")
        else:
            lines.extend(["  CTR        waiting for the first answers…", ""])
        lines.append(f"  model      version {version if version is not None else '-'} served   "
                     f"learned {learned.get('impressions', 0):,} impressions, {learned.get('clicks', 0):,} clicks   "
                     f"consumer lag {lag if lag is not None else '-'}")
        return lines

    def plain(self, stats: DemoStats, t: float) -> str:
        recent = stats.recent()
        ctr = "" if recent is None else (f" | CTR {RECENT_WINDOW}s served {_pct(recent[0])} oracle {_pct(recent[1])} "
                                         f"random {_pct(recent[2])}")
        return (f"demo {self._progress(stats, t)} | {stats.ok} scored ({self.rps:.0f}/s){ctr} | "
                f"model v{stats.version} | lag {stats.lag()}")


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def _bar(fraction: float, width: int = 20) -> str:
    filled = int(round(max(0.0, min(1.0, fraction)) * width))
    return "[" + "#" * filled + "." * (width - filled) + "]"


# ------------------------------------------------------------------------------------------------
# orchestration


class _Signals:
    """SIGINT/SIGTERM/SIGHUP while the demo runs. The first asks for an orderly stop (results are
    still written; during start-up there are none yet, so it aborts); the second kills the
    children's process groups at once and raises :class:`KeyboardInterrupt` (no results, exit status
    130); later ones only repeat the kill. Previous handlers are restored."""

    def __init__(self, stop: threading.Event, kill: Callable[[], None]) -> None:
        self.stop = stop
        self.kill = kill
        self.received: list[int] = []
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.received.append(signum)
        if len(self.received) == 1:
            self.stop.set()
            return
        self.kill()
        if len(self.received) == 2:
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def join_windows(world: WorldConfig) -> dict[str, float]:
    """Join windows scaled to the demo's delays, as the delays are scaled to demo time.

    With the production defaults (clicks within an hour, conversions within a week) every
    impression of the run would stay in the join state, which is checkpointed every second: the
    checkpoints would grow by ~100 kB per second. Windows of ~15 mean delays lose nothing in
    practice (an exponential delay exceeds 15 means with probability e^-15) and bound the state.
    """
    click = max(10.0, math.ceil(15 * world.click_delay_mean))
    conversion = max(30.0, math.ceil(12 * (world.click_delay_mean + world.conversion_delay_mean)))
    return {"click_window": click, "conversion_window": conversion, "allowed_lateness": 10.0}


def consumer_argv(options: DemoOptions, model: str, bootstrap: str, params: list[str],
                  windows: dict[str, float]) -> list[str]:
    """``banditloop consume`` arguments; the bootstrap checkpoint's config is parsed from the same list."""
    from banditloop.core.features import dense_names

    argv = ["consume", "--bootstrap", bootstrap, "--group", f"{model}-learners", "--learner", options.learner,
            "--model", model, "--dim", str(options.dim + 1), "--numeric", ",".join(dense_names("x", options.dim)),
            "--click-window", f"{windows['click_window']:g}",
            "--conversion-window", f"{windows['conversion_window']:g}",
            "--allowed-lateness", f"{windows['allowed_lateness']:g}",
            "--checkpoint-interval", str(options.checkpoint_interval), "--log-interval", "5", "--db", options.db,
            "--json"]
    for param in params:
        argv += ["--param", param]
    return argv


def model_config_for(argv: list[str]) -> Any:
    """The :class:`~banditloop.pipeline.model.ModelConfig` ``banditloop consume`` builds from ``argv``."""
    from banditloop.cli import build_parser
    from banditloop.commands.common import feature_spec, model_config

    args = build_parser(environ={}).parse_args(argv)
    return model_config(args, feature_spec(args))


def bootstrap_checkpoint(db: str, model: str, config: Any, partitions: int) -> int:
    """Write version 1 of ``model``: an untrained shard per partition, as the consumer would have
    written it before reading anything (see the module docstring). Returns the newest version."""
    from banditloop.pipeline.checkpoints import CheckpointStore
    from banditloop.pipeline.consumer import shard_name
    from banditloop.pipeline.runner import LearningRun

    store = CheckpointStore(db)
    try:
        if store.latest_version(model) is not None:
            raise DemoError(f"model {model!r} already exists in {db}; pick another --model")
        snapshots = [LearningRun(config, model, shard=shard_name(p)).snapshot(
            {"kind": "kafka", "partition": p, "offsets": {}, "max_ts": {}}) for p in range(partitions)]
        return max(store.save_many(snapshots))
    finally:
        store.close()


def wait_healthy(client: HttpClient, child: Child, timeout: float, stop: threading.Event) -> dict[str, Any]:
    """Until ``/healthz`` says a model is served and Kafka is connected."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline and not stop.is_set():
        if not child.alive():
            raise DemoError(f"the scorer exited with code {child.proc.returncode} while starting "
                            f"(log {child.log_path}):\n{child.log_tail()}")
        try:
            status, data = client.request("GET", "/healthz")
            info = json.loads(data)
            if status == 200 and info.get("kafka"):
                return info
            last = f"HTTP {status}: {info}"
        except (OSError, http.client.HTTPException, ValueError) as exc:
            last = repr(exc)
        stop.wait(0.2)
    if stop.is_set():
        raise KeyboardInterrupt
    raise DemoError(f"the scorer was not ready within {timeout:.0f} s ({last}); log {child.log_path}")


def wait_assigned(child: Child, timeout: float, stop: threading.Event) -> bool:
    """Until the consumer logs its partition assignment (best effort: False after ``timeout``).

    Not required for correctness (impressions wait in Kafka and the consumer reads from the
    beginning), but without it the first seconds of a short demo are served by the untrained model
    while the consumer is still joining its group, which only flattens the start of the curves.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        if not child.alive():
            raise DemoError(f"the consumer exited with code {child.proc.returncode} while starting "
                            f"(log {child.log_path}):\n{child.log_tail()}")
        with contextlib.suppress(OSError):
            if b"assigned partitions" in child.log_path.read_bytes():
                return True
        stop.wait(0.1)
    if stop.is_set():
        raise KeyboardInterrupt
    log.warning("the consumer has not reported its partitions after %.0f s; starting anyway", timeout)
    return False


class DemoRun:
    """One run of the demo: :meth:`run` starts everything, drives the load, stops everything in
    order and returns the summary. Whatever happens (errors, signals), no child process survives it."""

    def __init__(self, options: DemoOptions, stream: TextIO | None = None) -> None:
        from banditloop.operators.registry import learner_class

        self.options = options
        self.stream = stream or sys.stderr
        self.out = Path(options.out)
        self.model = options.model or f"demo-{options.learner}-{datetime.now():%Y%m%d-%H%M%S}"
        self.params = _params(options, learner_class(options.learner))
        self.world_config = WorldConfig(arms=options.arms, dim=options.dim, seed=options.seed,
                                        **{**DEMO_WORLD, **options.world})
        self.stats = DemoStats()
        self.stop = threading.Event()
        self.children: dict[str, Child] = {}
        self.broker: Any = None
        self.broker_pid: int | None = None
        self.population: Population | None = None
        self.monitor: CheckpointMonitor | None = None
        self.client: HttpClient | None = None
        self.view: LiveView | None = None
        self.exit_codes: dict[str, int | None] = {}
        self.initial_version = 0
        self.dropped = 0

    # -- the whole run --------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.out.mkdir(parents=True, exist_ok=True)
        with _Signals(self.stop, self._kill_all) as signals:
            try:
                self._start()
                self._drive()
                self._stop_in_order(bool(signals.received))
            finally:  # also on errors and on KeyboardInterrupt (a second signal: abort, no results)
                self._close()
            interrupted = bool(signals.received)
        return self._finish(interrupted, time.monotonic() - started)

    def _start(self) -> None:
        from banditloop.pipeline.broker import DevBroker, free_port
        from banditloop.pipeline.model import SHARED_FEATURE_LEARNERS
        from banditloop.pipeline.topics import TopicNames, ensure_topics

        o = self.options
        # the consumer's exact configuration, parsed from its command line (the broker address plays
        # no part in it): bad --param values fail here, before anything is started
        windows = join_windows(self.world_config)
        config = model_config_for(consumer_argv(o, self.model, "127.0.0.1:9092", self.params, windows))
        # 1. broker and topics
        self.broker = DevBroker(log_path=self.out / "demo-broker.log").start()
        self.broker_pid = self.broker.pid
        ensure_topics(self.broker.bootstrap, TopicNames(), o.partitions)
        # 2. the model's first version (untrained)
        argv = consumer_argv(o, self.model, self.broker.bootstrap, self.params, windows)
        self.initial_version = bootstrap_checkpoint(o.db, self.model, config, o.partitions)
        # 3. learner and scorer, in their own process groups
        env = child_env()
        self.children["consume"] = Child("consume", argv, self.out / "demo-consume.log",
                                         self.out / "demo-consume.json", env)
        port = free_port()
        self.children["serve"] = Child("serve", [
            "serve", "--model", self.model, "--db", o.db, "--port", str(port), "--bootstrap", self.broker.bootstrap,
            "--reload-interval", str(o.reload_interval), "--log-level", "info"], self.out / "demo-serve.log", None, env)
        self.client = HttpClient("127.0.0.1", port)
        wait_healthy(self.client, self.children["serve"], o.startup_timeout, self.stop)
        wait_assigned(self.children["consume"], 30.0, self.stop)
        if self.stop.is_set():  # a signal during start-up: nothing to report yet
            raise KeyboardInterrupt
        # 4. the users, and the eye on the consumer's checkpoints
        self.population = Population(
            World(self.world_config), self.client, self.stats, rate=o.rate, total=o.requests,
            seconds=None if o.requests else o.seconds, workers=o.workers,
            arm_features=o.learner in SHARED_FEATURE_LEARNERS)
        self.monitor = CheckpointMonitor(o.db, self.model, self.stats, self.population)
        pids = self.pids()
        print(f"banditloop demo: broker {self.broker.bootstrap} (pid {pids['broker']}), consumer pid "
              f"{pids['consume']}, scorer http://127.0.0.1:{port} (pid {pids['serve']}), model {self.model!r} in "
              f"{o.db}; Ctrl-C stops", file=self.stream, flush=True)
        self.population.start()
        self.monitor.start()
        if o.view:
            header = f"banditloop demo · {o.learner} · {o.arms} arms · d={o.dim} · {o.rate:g} req/s"
            self.view = LiveView(self.stream, header, None if o.requests else o.seconds, o.requests)

    def _drive(self) -> None:
        population = self.population
        assert population is not None
        while not self.stop.is_set() and not population.done():
            for name, child in self.children.items():
                if not child.alive():
                    raise DemoError(f"{name} exited with code {child.proc.returncode} during the run "
                                    f"(log {child.log_path}):\n{child.log_tail()}")
            if self.view is not None:
                self.view.update(self.stats, population.elapsed(), population)
            self.stop.wait(0.5)

    def _stop_in_order(self, interrupted: bool) -> None:
        """Load, then feedback, then (unless interrupted) the consumer's catch-up; then the consumer
        (SIGTERM: it writes a final checkpoint), the scorer, and (in :meth:`_close`) the broker."""
        population, monitor = self.population, self.monitor
        assert population is not None and monitor is not None
        self._phase("stopping: waiting for the requests in flight")
        population.stop_requests()
        if not interrupted:
            self._phase("stopping: delivering the feedback due in the next seconds")
        self.dropped = population.drain_feedback(0.0 if interrupted else self.options.drain_seconds)
        if not interrupted:
            self._phase("stopping: waiting for the consumer to checkpoint everything")
            _catch_up(monitor, self.stats, self.options.catch_up_seconds, self.stop, self.view, population)
        self._phase("stopped: final checkpoint, then the scorer and the broker")
        if self.view is not None:
            self.view.update(self.stats, population.elapsed(), population, final=True)
        monitor.stop()
        self.exit_codes["consume"] = self.children["consume"].stop(timeout=60)
        self.exit_codes["serve"] = self.children["serve"].stop(timeout=30)

    def _phase(self, text: str) -> None:
        if self.view is not None and self.population is not None:
            self.view.phase = text
            self.view.update(self.stats, self.population.elapsed(), self.population)

    def _kill_all(self) -> None:
        """From the signal handler: SIGKILL to every child's process group, nothing else."""
        for child in list(self.children.values()):
            _killpg(child.pid, signal.SIGKILL)
        if self.broker_pid is not None:
            _killpg(self.broker_pid, signal.SIGKILL)

    def _close(self) -> None:
        """Idempotent clean-up that runs whatever happened."""
        if self.population is not None:
            self.population.abort()
        if self.monitor is not None:
            self.monitor.stop()
        for name, child in self.children.items():
            code = child.stop(timeout=10)
            self.exit_codes.setdefault(name, code)
        if self.client is not None:
            self.client.close()
        if self.broker is not None:
            self.broker.stop()

    def pids(self) -> dict[str, int]:
        return {"broker": self.broker_pid or 0, **{name: c.pid for name, c in self.children.items()}}

    def orphans(self) -> list[str]:
        """Names of the components whose process group still has a live process (should be none)."""
        groups = {name: c.pid for name, c in self.children.items()}
        if self.broker_pid is not None:
            groups["broker"] = self.broker_pid
        return [name for name, pgid in groups.items() if _group_exists(pgid)]

    # -- results --------------------------------------------------------------------------------
    def _finish(self, interrupted: bool, seconds: float) -> dict[str, Any]:
        from banditloop.demo.plot import plot_demo

        assert self.population is not None
        o = self.options
        learned = _final_learned(o.db, self.model)
        try:
            kept = compact_model(o.db, self.model)
        except Exception as exc:  # the results matter more than the tidying
            log.warning("could not compact the checkpoints of %r: %s", self.model, exc)
            kept = None
        summary = _summary(o, self.model, self.stats, learned, self.initial_version, self.dropped,
                           interrupted, seconds)
        summary["kept_version"] = kept
        summary["consumer"] = self.children["consume"].stdout_json()
        summary["exit_codes"] = self.exit_codes
        summary["pids"] = self.pids()
        summary["orphans"] = self.orphans()
        summary["logs"] = {**{name: str(c.log_path) for name, c in self.children.items()},
                           "broker": str(self.out / "demo-broker.log")}
        png = self.out / "demo-regret.png"
        plot_demo(self.stats, png, title=f"banditloop demo: {o.learner}, {o.arms} arms, d={o.dim}, "
                                         f"{summary['requests']:,} requests at "
                                         f"{summary['requests_per_second']:.0f}/s")
        summary["plot"] = str(png)
        summary_path = self.out / "demo-summary.json"
        summary["summary"] = str(summary_path)
        summary_path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        return summary


def run_demo(options: DemoOptions, stream: TextIO | None = None) -> dict[str, Any]:
    """Run the demo (see the module docstring); returns the summary, also written to
    ``<out>/demo-summary.json``, with the plot at ``<out>/demo-regret.png``."""
    return DemoRun(options, stream).run()


def _params(options: DemoOptions, cls: type) -> list[str]:
    """``--param`` values for the consumer: the demo defaults the user did not override."""
    import inspect

    given = {p.partition("=")[0].strip().replace("-", "_") for p in options.params}
    accepted = inspect.signature(cls.__init__).parameters
    extra = [f"{k}={json.dumps(v)}" for k, v in DEFAULT_PARAMS.get(options.learner, {}).items()
             if k not in given and k in accepted]
    return [*extra, *options.params]


def _catch_up(monitor: CheckpointMonitor, stats: DemoStats, seconds: float, stop: threading.Event,
              view: LiveView | None, population: Population) -> None:
    """Wait until the consumer has checkpointed every impression served and every click sent."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stop.is_set():
        learned = monitor.sample() or {}
        with stats.lock:
            want_impressions, want_clicks = stats.ok, stats.feedback_sent.get("click", 0)
        if learned.get("impressions", 0) >= want_impressions and learned.get("clicks", 0) >= want_clicks:
            return
        if view is not None:
            view.update(stats, population.elapsed(), population)
        stop.wait(0.5)
    log.warning("the consumer had not checkpointed everything after %.0f s", seconds)


def compact_model(db: str, model: str) -> int | None:
    """Keep only the final checkpoint of each shard of ``model``; returns its (new) newest version.

    The consumer keeps its 20 newest versions per shard, a few MB per demo run that nobody needs
    once the run is over (their Kafka offsets refer to a broker that no longer exists). Saving the
    final shards again through a store with ``keep=1`` prunes the older versions with the store's
    own pruning, in one transaction; the final model stays available to ``models`` and ``serve``.
    An SQLite file is then vacuumed, or it would keep its size.
    """
    from banditloop.pipeline.checkpoints import CheckpointStore

    store = CheckpointStore(db, keep=1)
    try:
        final = store.latest_per_shard(model)
        kept = max(store.save_many(final)) if final else None
        if store.engine.dialect.name == "sqlite":  # SQLite keeps the freed pages in the file until VACUUM
            with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM")
        return kept
    finally:
        store.close()


def _final_learned(db: str, model: str) -> dict[str, int]:
    from banditloop.pipeline.checkpoints import CheckpointStore

    store = CheckpointStore(db)
    try:
        totals: dict[str, int] = {"version": 0, "shards": 0}
        for cp in store.latest_per_shard(model):
            totals["version"] = max(totals["version"], cp.version or 0)
            totals["shards"] += 1
            for key in ("impressions", "clicks", "conversions", "rewarded", "unmatched", "late", "duplicates"):
                totals[key] = totals.get(key, 0) + int(cp.counters.get(key, 0))
        return totals
    finally:
        store.close()


def _summary(options: DemoOptions, model: str, stats: DemoStats, learned: dict[str, int], initial_version: int,
             dropped: int, interrupted: bool, seconds: float) -> dict[str, Any]:
    n = max(stats.ok, 1)
    load_seconds = len(stats.buckets) or 1
    last = _tail_ctr(stats, fraction=0.2)
    gap = stats.oracle - stats.random
    return {
        "command": "demo",
        "model": model,
        "learner": options.learner,
        "db": options.db,
        "arms": options.arms,
        "dim": options.dim,
        "seed": options.seed,
        "rate": options.rate,
        "interrupted": interrupted,
        "requests": stats.ok,
        "request_errors": dict(stats.errors),
        "requests_per_second": stats.ok / load_seconds,
        "ctr_served": stats.served / n,
        "ctr_served_realised": stats.clicks / n,
        "ctr_oracle": stats.oracle / n,
        "ctr_random": stats.random / n,
        "ctr_served_last_20pct": last[0],
        "ctr_oracle_last_20pct": last[1],
        "ctr_random_last_20pct": last[2],
        "regret": stats.oracle - stats.served,
        "random_regret": gap,
        "captured_vs_random": (stats.served - stats.random) / gap if gap > 0 else 0.0,
        "captured_vs_random_last_20pct": (last[0] - last[2]) / (last[1] - last[2]) if last[1] > last[2] else 0.0,
        "clicks_sent": stats.feedback_sent.get("click", 0),
        "conversions_sent": stats.feedback_sent.get("conversion", 0),
        "feedback_errors": dict(stats.feedback_errors),
        "feedback_dropped_at_stop": dropped,
        "initial_version": initial_version,
        "final_version": learned.get("version", 0),
        "versions_served": len(stats.versions),
        "first_version_served": stats.versions[0][1] if stats.versions else None,
        "last_version_served": stats.version,
        "reloads_seen": max(0, len(stats.versions) - 1),
        "learned": learned,
        "lag_at_stop": max(0, stats.ok - learned.get("impressions", 0)),
        "seconds": round(seconds, 3),
    }


def _tail_ctr(stats: DemoStats, fraction: float) -> tuple[float, float, float]:
    """(served, oracle, random) expected CTR over the last ``fraction`` of the run."""
    buckets = stats.buckets[-max(1, math.ceil(len(stats.buckets) * fraction)):]
    n = sum(b.n for b in buckets) or 1
    return (sum(b.served for b in buckets) / n, sum(b.oracle for b in buckets) / n,
            sum(b.random for b in buckets) / n)
