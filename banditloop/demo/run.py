"""One run of ``banditloop demo``: start everything, drive the load, stop everything in order, report.

What runs, all real components (nothing mocked):

* the development Kafka broker (:class:`~banditloop.pipeline.broker.DevBroker`, memory only) with the
  three event topics (``partitions`` each);
* ``banditloop consume`` and ``banditloop serve --bootstrap ... --reload-interval 1`` as subprocesses,
  each in its own process group (:mod:`banditloop.demo.processes`), so that a terminal's Ctrl-C reaches
  only this process and the shutdown order stays ours: load stops, pending feedback drains, the
  consumer catches up and writes its final checkpoint (SIGTERM), then the scorer stops, then the broker;
* in this process, a population of simulated users (:mod:`banditloop.demo.users`) asking the scorer
  for ads and sending the world's clicks and conversions back through ``/feedback``;
* a monitor thread that reads the consumer's checkpoints (:mod:`banditloop.demo.monitor`), and a live
  view on stderr (:mod:`banditloop.demo.view`).

The consumer's model is built once from the options (:mod:`banditloop.demo.config`): the demo writes
its version 1 itself (an untrained shard per partition) so the scorer has something to serve, and
the consumer's command line is rendered from the same config. The first requests are therefore
served uniformly at random.

Every run uses a new model name (``demo-<learner>-<time>``) because the broker forgets everything
when it stops: checkpointed offsets of an earlier run would point past the end of the new topics.

Regret is exact: for every request the world knows the expected reward (click probability) of the
served arm, of the best candidate (oracle) and the mean over candidates (uniform random).
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from banditloop.demo.config import bootstrap_checkpoint, consume_argv, model_config
from banditloop.demo.http_client import HttpClient
from banditloop.demo.monitor import CheckpointMonitor, compact_model, final_learned
from banditloop.demo.options import DEMO_WORLD, DemoError, DemoOptions
from banditloop.demo.plot import plot_demo
from banditloop.demo.processes import Child, Signals, child_env, group_exists, killpg
from banditloop.demo.readiness import wait_assigned, wait_healthy
from banditloop.demo.stats import DemoStats
from banditloop.demo.summary import summarize
from banditloop.demo.users import Population
from banditloop.demo.view import LiveView
from banditloop.operators.registry import learner_class
from banditloop.pipeline.broker import DevBroker, free_port
from banditloop.pipeline.topics import TopicNames, ensure_topics
from banditloop.simulators.world import World, WorldConfig

log = logging.getLogger("banditloop.demo")


class DemoRun:
    """One run of the demo: :meth:`run` starts everything, drives the load, stops everything in
    order and returns the summary. Whatever happens (errors, signals), no child process survives it."""

    def __init__(self, options: DemoOptions, stream: TextIO | None = None) -> None:
        self.options = options
        self.stream = stream or sys.stderr
        self.out = Path(options.out)
        self.model = options.model or f"demo-{options.learner}-{datetime.now():%Y%m%d-%H%M%S}"
        self.world_config = WorldConfig(arms=options.arms, dim=options.dim, seed=options.seed,
                                        **{**DEMO_WORLD, **options.world})
        # the consumer's exact configuration: bad hyper-parameters fail here, before anything starts
        self.config = model_config(options, self.world_config)
        self.stats = DemoStats()
        self.stop = threading.Event()
        self.children: dict[str, Child] = {}
        self.broker: DevBroker | None = None
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
        with Signals(self.stop, self._kill_all) as signals:
            try:
                self._start()
                self._drive()
                self._stop_in_order(bool(signals.received))
            finally:  # also on errors and on KeyboardInterrupt (a second signal: abort, no results)
                self._close()
            interrupted = bool(signals.received)
        return self._finish(interrupted, time.monotonic() - started)

    def _start(self) -> None:
        o = self.options
        # 1. broker and topics
        self.broker = DevBroker(log_path=self.out / "demo-broker.log").start()
        self.broker_pid = self.broker.pid
        ensure_topics(self.broker.bootstrap, TopicNames(), o.partitions)
        # 2. the model's first version (untrained)
        self.initial_version = bootstrap_checkpoint(o.db, self.model, self.config, o.partitions)
        # 3. learner and scorer, in their own process groups
        env = child_env()
        ready_file = self.out / "demo-consume.ready.json"
        with contextlib.suppress(FileNotFoundError):
            ready_file.unlink()
        argv = consume_argv(self.config, model=self.model, bootstrap=self.broker.bootstrap,
                            group=f"{self.model}-learners", db=o.db, checkpoint_interval=o.checkpoint_interval,
                            ready_file=str(ready_file))
        self.children["consume"] = Child("consume", argv, self.out / "demo-consume.log",
                                         self.out / "demo-consume.json", env)
        port = free_port()
        self.children["serve"] = Child("serve", [
            "serve", "--model", self.model, "--db", o.db, "--port", str(port), "--bootstrap", self.broker.bootstrap,
            "--reload-interval", str(o.reload_interval), "--log-level", "info"], self.out / "demo-serve.log", None, env)
        self.client = HttpClient("127.0.0.1", port)
        wait_healthy(self.client, self.children["serve"], o.startup_timeout, self.stop)
        wait_assigned(self.children["consume"], ready_file, 30.0, self.stop)
        if self.stop.is_set():  # a signal during start-up: nothing to report yet
            raise KeyboardInterrupt
        # 4. the users, and the eye on the consumer's checkpoints
        self.population = Population(
            World(self.world_config), self.client, self.stats, rate=o.rate, total=o.requests,
            seconds=None if o.requests else o.seconds, workers=o.workers,
            arm_features=learner_class(o.learner).shared_features)
        self.monitor = CheckpointMonitor(o.db, self.model, self.stats, self.population.elapsed)
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
            self._redraw()
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
            self._catch_up(self.options.catch_up_seconds)
        self._phase("stopped: final checkpoint, then the scorer and the broker")
        self._redraw(final=True)
        monitor.stop()
        self.exit_codes["consume"] = self.children["consume"].stop(timeout=60)
        self.exit_codes["serve"] = self.children["serve"].stop(timeout=30)

    def _catch_up(self, seconds: float) -> None:
        """Wait until the consumer has checkpointed every impression served and every click sent."""
        assert self.monitor is not None
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.stop.is_set():
            learned = self.monitor.sample() or {}
            with self.stats.lock:
                want_impressions, want_clicks = self.stats.ok, self.stats.feedback_sent.get("click", 0)
            if learned.get("impressions", 0) >= want_impressions and learned.get("clicks", 0) >= want_clicks:
                return
            self._redraw()
            self.stop.wait(0.5)
        log.warning("the consumer had not checkpointed everything after %.0f s", seconds)

    def _redraw(self, final: bool = False) -> None:
        if self.view is not None and self.population is not None:
            self.view.update(self.stats, self.population.elapsed(), self.population.pending_feedback(), final)

    def _phase(self, text: str) -> None:
        if self.view is not None:
            self.view.phase = text
        self._redraw()

    def _kill_all(self) -> None:
        """From the signal handler: SIGKILL to every child's process group, nothing else."""
        for child in list(self.children.values()):
            killpg(child.pid, signal.SIGKILL)
        if self.broker_pid is not None:
            killpg(self.broker_pid, signal.SIGKILL)

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
        return [name for name, pgid in groups.items() if group_exists(pgid)]

    # -- results --------------------------------------------------------------------------------
    def _finish(self, interrupted: bool, seconds: float) -> dict[str, Any]:
        assert self.population is not None
        o = self.options
        learned = final_learned(o.db, self.model)
        try:
            kept = compact_model(o.db, self.model)
        except Exception as exc:  # the results matter more than the tidying
            log.warning("could not compact the checkpoints of %r: %s", self.model, exc)
            kept = None
        summary = summarize(o, self.model, self.stats, learned, self.initial_version, self.dropped,
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
