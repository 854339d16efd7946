"""Simulated users: a dispatcher thread draws requests from the
:class:`~banditloop.simulators.world.World` at ``rate`` per second (open loop, bounded in-flight) and a
thread pool POSTs them to ``/score``; the scorer answers with the arm, impression id and propensity and
publishes the impression itself; the world then decides click and conversion with its known
probabilities, and the feedback is POSTed to ``/feedback`` when it is due (delays in wall-clock
seconds), with the *scorer's* impression id and wall-clock event times so that the consumer's
event-time join matches it."""

from __future__ import annotations

import heapq
import http.client
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from banditloop.core.events import Click, Conversion, encode_event
from banditloop.demo.http_client import HttpClient
from banditloop.demo.stats import DemoStats
from banditloop.simulators.world import Request, World


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
        """Clicks and conversions decided by the world but not yet due (so not yet POSTed)."""
        with self._pending_lock:
            return len(self._pending)
