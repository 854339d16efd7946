"""End-to-end pipeline throughput against the raw consumer of each Kafka client, checkpoint latency, freshness.

One run, one memory-only Tansu broker (:class:`banditloop.pipeline.broker.DevBroker`), loopback only:

1. **Throughput.** A simulated event log (``banditloop.pipeline.simulate``; ``--events`` events, K=10 arms,
   context of 8 numeric features, bias + 8 numeric slots) is produced to three fresh topics of 3
   partitions (``produce_log``). The same topics are then read, alternately and ``--repeats`` times
   each, with each Kafka client (``--clients``: kafka-python and, when installed, confluent-kafka), by

   * **raw**: the client's own consumer built by ``make_client`` with exactly the worker's settings
     (a consumer group, range assignor, 2000 records per poll, fetch sizes, session timeout 6 s, CRC
     checks on), subscribed to the three topics with a fresh group and polled with the library's
     own call (``KafkaConsumer.poll``, ``confluent_kafka.Consumer.consume``) until every message was
     returned, without looking at them (confluent-kafka: ``error()`` is checked per message);
   * **ours**: :class:`banditloop.pipeline.consumer.ConsumerWorker` with that client (the adapter of
     :mod:`banditloop.pipeline.kafka_client`, decode, validate, event-time join, featurize, learn,
     checkpoint every ``--checkpoint-interval`` s into SQLite in a temporary directory) with a fresh
     group, per learner (Diag-LinUCB and LinUCB).

   Like ``banditloop consume`` (which calls ``gc.freeze()`` before running), every run starts with
   everything allocated so far frozen out of the cyclic garbage collector (``gc.collect(); gc.freeze()``,
   undone after the run), raw and ours alike.

   Both are timed the same way, from the return of the first ``poll`` that delivered records to the
   last record counted (raw) or processed (ours, ``_process_batch`` exits), so group joining is
   excluded; events/s = messages / that window (the checkpoints inside it count; the final one does
   not). The ratio is median(ours) / median(raw) of the same client; "from assignment" repeats it with windows that
   start at the partition assignment (the first fetch included), as a check. Per message, ours is
   split into time in ``_process_batch``, in checkpoints (``_save``) and the rest (``poll``:
   the client fetching and parsing, and for ours the adapter); ``gc`` is the time in Python's cyclic garbage collector
   (``gc.callbacks``), which is spread over the other columns. Target (issue): Diag-LinUCB ≥ 0.6 × raw,
   with each client. "confluent / kafka-python" compares the medians across clients (same run).

   kafka-python checksums every record batch it reads (``check_crcs``) with the C CRC-32C of the
   optional ``crc32c`` package (extra ``fast-crc``) when it is installed and with a pure-Python
   fallback otherwise; that choice decides the raw rate (here about 30k/s pure Python, 120–240k/s
   with C) and so the ratio. The header says which one ran; ``--crc python`` forces the fallback.

2. **Checkpoint latency**: every ``ConsumerWorker._save`` (``writer.last_seconds``: snapshot of
   the 3 shards + one transaction) during the throughput runs (SQLite) and during the same
   consumption (Diag-LinUCB, two runs, also shown as throughput) into a fresh PostgreSQL database
   (created on the ``--pg`` server and dropped at the end), plus
   ``--saves`` back-to-back saves of the final state (every impression of the log still open in the
   join: the conversion window is 7 days of event time).

3. **Freshness**: a worker consumes live (checkpoint interval 1 s, its own topics) in a thread while
   the main thread produces an impression, waits a random 0.05–0.5 s, produces its click and polls
   the database (every 5 ms) until the newest committed checkpoint of the click's shard counts it:
   time from ``send`` to visible, over ``--clicks`` clicks at random intervals, for SQLite and
   PostgreSQL.

With ``--profile``, one more Diag-LinUCB run is sampled with py-spy (``--idle --nonblocking``, the
worker's thread, 250 Hz, inside the timed window) and the samples are split into kafka-python
(pure-Python CRC-32C, record parsing, the rest of ``poll`` incl. waiting for the broker),
``decode_event``, the join, featurizing (``Vectorizer.x``), ``learn_impression``/``learn_reward``,
checkpoints and the rest (garbage collection is charged to whatever allocated when it ran).

The machine is shared and small: other processes move the figures by tens of percent from run to
run, hence the alternation, the medians and the load average in the output. The raw rate also
varies on its own: kafka-python keeps one fetch in flight per broker, and when that fetch holds only
partitions already read to the end, the broker keeps it for ``fetch_max_wait_ms`` (500 ms by
default, as in the worker) while records of other partitions wait to be fetched. A run that hits
such a stall is slower by up to 0.5 s (with ``fetch_max_wait_ms=20`` the stalls were gone); short runs
(``--quick``) are the most affected, so compare the ratios of long ones.

Figures are printed (tables, then one ``JSON {...}`` line); nothing is asserted. Duration on the
2-core dev machine: about 3.5 minutes by default (150k events, 5 repeats, PostgreSQL included,
25 clicks per database), about 70 s with ``--quick`` (30k events, 2 repeats, 20 clicks, SQLite
freshness only); ``--profile`` adds about 10 s.

    python benchmarks/pipeline_throughput.py [--quick] [--events N] [--repeats R] [--profile]
        [--learners diag-linucb,linucb] [--clients kafka-python,confluent] [--arm-features K]
        [--pg URL | --no-pg] [--clicks N] [--crc auto|python] [--checkpoint-interval S] [--saves N] [--seed N]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import gc  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

from sqlalchemy import select  # noqa: E402

from banditloop.core.events import Click, Impression  # noqa: E402
from banditloop.core.features import FeatureSpec, dense_names  # noqa: E402
from banditloop.pipeline.broker import DevBroker  # noqa: E402
from banditloop.pipeline.checkpoints import CheckpointStore, checkpoints_table  # noqa: E402
from banditloop.pipeline.consumer import ConsumeOptions, ConsumerWorker, shard_name  # noqa: E402
from banditloop.pipeline.consumer_options import make_client  # noqa: E402
from banditloop.pipeline.model import ModelConfig  # noqa: E402
from banditloop.pipeline.producer import EventProducer, partition_for_key, produce_log  # noqa: E402
from banditloop.pipeline.simulate import SimulationOptions, simulate  # noqa: E402
from banditloop.pipeline.topics import TopicNames, ensure_topics  # noqa: E402
from banditloop.simulators.world import WorldConfig  # noqa: E402
from benchmarks.common import emit_json, table  # noqa: E402

ARMS, DIM, PARTITIONS = 10, 8, 3
TARGET_RATIO = 0.6
#: events per simulated step (impression + ~14% clicks + ~2% conversions with this world)
EVENTS_PER_STEP = 1.156
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432"


def model_config(learner: str) -> ModelConfig:
    return ModelConfig(learner=learner, features=FeatureSpec(dim=DIM + 1, numeric=dense_names("x", DIM)))


def fresh_topics(prefix: str) -> TopicNames:
    tag = uuid.uuid4().hex[:8]
    return TopicNames(impressions=f"{prefix}-imp-{tag}", clicks=f"{prefix}-clk-{tag}",
                      conversions=f"{prefix}-cnv-{tag}", dead_letters=f"{prefix}-dead-{tag}")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 100]); nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def ms(seconds: float) -> float:
    return seconds * 1000.0


# -- throughput -----------------------------------------------------------------------------------
@dataclass
class Measured:
    who: str
    messages: int
    seconds: float
    process: float = 0.0  # in _process_batch (ours)
    checkpoint: float = 0.0  # in _save within the window (ours)
    checkpoints: list[float] = field(default_factory=list)  # every _save duration (incl. the final)
    open_impressions: int = 0
    join_state_bytes: int = 0  # the final join state of all shards, as checkpointed
    since_assigned: float = float("nan")  # window from the partition assignment instead (first fetch included)
    gc: float = 0.0  # in Python's cyclic garbage collector within the window (part of the other columns)

    @property
    def rate_since_assigned(self) -> float:
        return self.messages / self.since_assigned if self.since_assigned > 0 else float("nan")

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else float("nan")

    def us_per_message(self) -> dict[str, float]:
        n = max(self.messages, 1)
        return {"total": self.seconds / n * 1e6, "process": self.process / n * 1e6,
                "checkpoint": self.checkpoint / n * 1e6, "gc": self.gc / n * 1e6,
                "poll": (self.seconds - self.process - self.checkpoint) / n * 1e6}


def worker_for(bootstrap: str, topics: TopicNames, learner: str, store: CheckpointStore, group: str,
               interval: float, max_events: int | None = None, client: str = "kafka-python") -> ConsumerWorker:
    return ConsumerWorker(model_config(learner), ConsumeOptions(
        bootstrap=bootstrap, group=group, model=f"{group}-model", topics=topics, checkpoint_interval=interval,
        max_events=max_events, log_interval=3600.0, kafka_client=client), store)


class _Assigned:
    def __init__(self) -> None:
        self.at: float | None = None

    def revoked(self, revoked) -> None:
        pass

    def assigned(self, assigned) -> None:
        self.at = time.perf_counter()


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """What ``banditloop consume`` does before running: keep what exists out of the cyclic collector."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class GcTimer:
    """Seconds spent in the cyclic garbage collector (``gc.callbacks``) while installed."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._start

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def run_raw(bootstrap: str, topics: TopicNames, total: int, client: str = "kafka-python",
            timeout: float = 300.0) -> Measured:
    """Poll every message once with ConsumerWorker's own consumer settings and the library's own
    poll call (not the adapter's); no processing."""
    group = f"bench-raw-{uuid.uuid4().hex[:8]}"
    shell = worker_for(bootstrap, topics, "diag-linucb", None, group, 3600.0, client=client)  # type: ignore[arg-type]
    adapter = make_client(shell.options)  # exactly the worker's configuration
    assigned = _Assigned()
    adapter.subscribe(list(topics.events), assigned.revoked, assigned.assigned)
    library = adapter.consumer  # type: ignore[attr-defined]
    if client == "confluent":
        def poll() -> int:
            return sum(1 for m in library.consume(num_messages=2000, timeout=0.2) if m.error() is None)
    else:
        def poll() -> int:
            return sum(len(records) for records in library.poll(timeout_ms=200).values())
    n = 0
    first = last = None
    gc_in_window = 0.0
    deadline = time.monotonic() + timeout
    try:
        with frozen_heap(), GcTimer() as gc_timer:
            while n < total:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"raw consumer read {n} of {total} messages in {timeout:.0f} s")
                got = poll()
                if got:
                    if first is None:
                        first = time.perf_counter()
                        gc_in_window = -gc_timer.seconds
                    n += got
                    last = time.perf_counter()
            gc_in_window += gc_timer.seconds
    finally:
        adapter.close()
    return Measured(f"raw {client}", n, last - first, since_assigned=last - (assigned.at or first), gc=gc_in_window)


class _Instrumented:
    """Wraps a worker's ``_process_batch`` and ``_save`` with timers (one perf_counter pair per call)."""

    def __init__(self, worker: ConsumerWorker, total: int | None, on_first=None, on_last=None) -> None:
        self.worker = worker
        self.total = total
        self.first: float | None = None
        self.last: float | None = None
        self.process = 0.0
        self.checkpoint_in_window = 0.0
        self.saves: list[float] = []
        self._on_first, self._on_last = on_first, on_last
        self.assigned: float | None = None
        self.gc = GcTimer()
        self.gc_final = 0.0
        self._gc_at_first = 0.0
        self._process, self._save, self._assign = worker._process_batch, worker._save, worker._on_assigned
        worker._process_batch = self.process_batch  # type: ignore[method-assign]
        worker._save = self.save  # type: ignore[method-assign]
        worker._on_assigned = self.on_assigned  # type: ignore[method-assign]

    def on_assigned(self, assigned) -> None:
        self._assign(assigned)
        if self.assigned is None:
            self.assigned = time.perf_counter()

    @property
    def gc_in_window(self) -> float:
        return self.gc.seconds - self._gc_at_first

    def process_batch(self, batch) -> None:
        start = time.perf_counter()
        if self.first is None:
            self.first = start
            self._gc_at_first = self.gc.seconds
            if self._on_first is not None:
                self._on_first()
        self._process(batch)
        end = time.perf_counter()
        self.process += end - start
        self.last = end
        if self.total is not None and self.worker.counters["messages"] >= self.total:
            self.gc_final = self.gc_in_window
            if self._on_last is not None:
                self._on_last()
                self._on_last = None

    def save(self, shards) -> None:
        start = time.perf_counter()
        self._save(shards)
        end = time.perf_counter()
        done = self.total is not None and self.worker.counters["messages"] >= self.total
        if self.first is not None and not done:
            self.checkpoint_in_window += end - start
        self.saves.append(self.worker.writer.last_seconds or 0.0)


def run_ours(bootstrap: str, topics: TopicNames, total: int, learner: str, store: CheckpointStore,
             interval: float, end_saves: int = 0, profiler: PySpy | None = None,
             client: str = "kafka-python") -> tuple[Measured, list[float]]:
    """Consume ``total`` messages with a fresh group; returns the measurement and ``end_saves``
    back-to-back checkpoint latencies of the final state."""
    worker = worker_for(bootstrap, topics, learner, store, f"bench-{learner}-{uuid.uuid4().hex[:8]}", interval,
                        max_events=total, client=client)
    inst = _Instrumented(worker, total, on_first=profiler.start if profiler else None,
                         on_last=profiler.stop if profiler else None)
    with frozen_heap(), inst.gc:
        summary = worker.run()
    if summary["messages"] != total or summary["invalid"]:
        raise RuntimeError(f"{learner}: consumed {summary['messages']} of {total} ({summary['invalid']} invalid)")
    open_imps = sum(len(s.run.join.open) for s in worker.shards.values())
    join_bytes = sum(len(s.run.join.export_state()) for s in worker.shards.values())
    shards = list(worker.shards.values())
    end = []
    for _ in range(end_saves):  # the consumer is closed: _save only snapshots and writes
        worker._save(shards)
        end.append(worker.writer.last_seconds or 0.0)
    measured = Measured(f"ours {learner} {client}", total, inst.last - inst.first, process=inst.process,
                        checkpoint=inst.checkpoint_in_window, checkpoints=inst.saves[:len(inst.saves) - end_saves],
                        open_impressions=open_imps, join_state_bytes=join_bytes,
                        since_assigned=inst.last - (inst.assigned or inst.first),
                        gc=inst.gc_final)
    return measured, end


# -- PostgreSQL -----------------------------------------------------------------------------------
@contextlib.contextmanager
def postgres_database(base: str | None) -> Iterator[str | None]:
    """A fresh database on the server at ``base`` (dropped afterwards); None when unreachable."""
    if not base:
        yield None
        return
    try:
        import psycopg
        from sqlalchemy.engine import make_url

        url = make_url(base)
        params = {"host": url.host or "127.0.0.1", "port": url.port or 5432, "user": url.username or "postgres",
                  "autocommit": True, "connect_timeout": 5}
        if url.password:
            params["password"] = url.password
        admin_db = url.database or "postgres"
        with psycopg.connect(dbname=admin_db, **params) as conn:
            name = f"banditloop_bench_{uuid.uuid4().hex[:10]}"
            conn.execute(f'create database "{name}"')
    except Exception as exc:  # ImportError, OperationalError
        print(f"PostgreSQL at {base} unusable ({exc}); skipping the PostgreSQL figures")
        yield None
        return
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(dbname=admin_db, **params) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


# -- freshness ------------------------------------------------------------------------------------
def freshness(bootstrap: str, store: CheckpointStore, clicks: int, seed: int) -> dict[str, list[float]]:
    """Send→visible and send→ack seconds of ``clicks`` clicks with a live worker (interval 1 s)."""
    rng = random.Random(seed)
    topics = fresh_topics("fresh")
    ensure_topics(bootstrap, topics, PARTITIONS)
    worker = worker_for(bootstrap, topics, "diag-linucb", store, f"bench-fresh-{uuid.uuid4().hex[:8]}", 1.0)
    model = worker.options.model
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            worker.run()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=consume, name="fresh-worker", daemon=True)
    thread.start()
    producer = EventProducer(bootstrap, topics, client_id="bench-fresh")
    visible: list[float] = []
    acked: list[float] = []

    def committed_clicks(shard: str) -> int:
        with store.engine.connect() as session:
            row = session.execute(select(checkpoints_table.c.counters)
                                  .where(checkpoints_table.c.model == model, checkpoints_table.c.shard == shard)
                                  .order_by(checkpoints_table.c.version.desc()).limit(1)).first()
        return 0 if row is None else int(row[0].get("clicks", 0))

    try:
        deadline = time.monotonic() + 60
        while len(worker.shards) < PARTITIONS:  # group joined, partitions assigned
            if errors or time.monotonic() > deadline:
                raise RuntimeError(f"freshness worker did not get its partitions: {errors}")
            time.sleep(0.05)
        for i in range(clicks):
            imp_id = f"fresh-{i}-{uuid.uuid4().hex[:6]}"
            shard = shard_name(partition_for_key(imp_id, PARTITIONS))
            context = {f"x{j}": round(rng.gauss(0.0, 1.0), 4) for j in range(DIM)}
            producer.send(Impression(event_id=f"{imp_id}:i", ts=time.time(), impression_id=imp_id,
                                     arm=f"a{rng.randrange(ARMS)}", context=context)).get(timeout=30)
            before = committed_clicks(shard)
            time.sleep(rng.uniform(0.05, 0.5))
            sent = time.perf_counter()
            producer.send(Click(event_id=f"{imp_id}:c", ts=time.time(), impression_id=imp_id)).get(timeout=30)
            acked.append(time.perf_counter() - sent)
            deadline = time.monotonic() + 30
            while committed_clicks(shard) <= before:
                if errors or time.monotonic() > deadline:
                    raise RuntimeError(f"click {imp_id} not in a checkpoint after 30 s: {errors}")
                time.sleep(0.005)
            visible.append(time.perf_counter() - sent)
            time.sleep(rng.uniform(0.1, 1.0))
    finally:
        producer.close()
        worker.stop_event.set()
        thread.join(timeout=60)
    return {"visible": visible, "acked": acked}


# -- profiling ------------------------------------------------------------------------------------
#: (category, [(function name or None, file path suffix)]); the deepest frame of a sample that
#: matches decides its category
CATEGORIES: tuple[tuple[str, tuple[tuple[str | None, str], ...]], ...] = (
    ("kafka-python: CRC32C (pure Python)", ((None, "kafka/record/_crc32c.py"),)),
    ("kafka-python: record parsing", ((None, "kafka/record/default_records.py"), (None, "kafka/record/util.py"),
                                      ("_unpack_records", "kafka/consumer/fetcher.py"))),
    ("decode (record_decoder: msgspec + checks)", ((None, "pipeline/record_decoder.py"),
                                                   ("decode_event", "core/events.py"))),
    ("confluent-kafka: consume + adapter", ((None, "pipeline/kafka_confluent.py"),)),
    ("featurize (Vectorizer.x)", (("x", "pipeline/model.py"), (None, "pipeline/features.py"))),
    ("learner.learn_impression", (("learn_impression", "operators/"),)),
    ("learner.learn_reward", (("learn_reward", "operators/"),)),
    ("join + LearnerSink (own code)", ((None, "pipeline/join.py"), (None, "pipeline/model.py"))),
    ("checkpoint (_save)", (("_save", "pipeline/consumer.py"),)),
    ("consumer: _process_batch/_decode/watermarks (own code)", ((None, "pipeline/consumer.py"),)),
    ("kafka-python: rest of poll (requests, network, waiting)", (("poll", "kafka/consumer/group.py"),
                                                                 ("poll", "pipeline/kafka_client.py"))),
)
_FRAME = re.compile(r"^(?P<name>.*) \((?P<path>.*?)(?::\d+)?\)$")


def categorise(stack: str) -> str:
    """The category of one sampled stack (frames root first, ``;``-separated)."""
    for frame in reversed(stack.split(";")):
        match = _FRAME.match(frame)
        if match is None:
            continue
        name, path = match["name"].rsplit(".", 1)[-1], match["path"]  # "KafkaConsumer.poll" → "poll"
        for category, keys in CATEGORIES:
            if any(path.endswith(suffix) or suffix.endswith("/") and suffix in path
                   for fn, suffix in keys if fn is None or fn == name):
                return category
    return "other"


class PySpy:
    """py-spy attached to this process between ``start()`` and ``stop()`` (raw collapsed stacks)."""

    def __init__(self, out: Path, rate: int = 250) -> None:
        self.exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.out = out
        self.rate = rate
        self.proc: subprocess.Popen | None = None

    def available(self) -> bool:
        return Path(self.exe).exists()

    def start(self) -> None:
        command = [self.exe, "record", "--pid", str(os.getpid()), "--rate", str(self.rate), "--format", "raw",
                   "--idle", "--threads", "--nonblocking", "--output", str(self.out)]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def wait(self) -> str:
        if self.proc is None:
            return "not started"
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err.decode(errors="replace")

    def categories(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for line in self.out.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if "run (pipeline/consumer.py" not in stack:  # the worker's (main) thread only
                continue
            counts[categorise(stack)] += int(n)
        return counts


# -- main -----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="30k events, 2 repeats, 20 clicks, SQLite freshness")
    parser.add_argument("--events", type=int, default=None, help="events in the simulated log (default 150000)")
    parser.add_argument("--repeats", type=int, default=None, help="runs of each consumer, alternating (default 5)")
    parser.add_argument("--learners", default="diag-linucb,linucb")
    parser.add_argument("--clients", default=None,
                        help="Kafka clients, comma-separated (default: kafka-python, and confluent when installed)")
    parser.add_argument("--arm-features", type=int, default=0,
                        help="numeric features per arm published with every impression (default 0: compact events)")
    parser.add_argument("--checkpoint-interval", type=float, default=1.0)
    parser.add_argument("--saves", type=int, default=20, help="back-to-back saves of the final state per database")
    parser.add_argument("--clicks", type=int, default=None, help="clicks for the freshness measurement (default 25)")
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL server URL (a fresh database is created)")
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--profile", action="store_true", help="sample one more Diag-LinUCB run with py-spy")
    parser.add_argument("--crc", choices=("auto", "python"), default="auto",
                        help="kafka-python's CRC-32C: auto = the C one when the crc32c package (extra fast-crc) is "
                             "installed; python = force its pure-Python fallback (producer and consumers alike)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    events = args.events or (30_000 if args.quick else 150_000)
    repeats = args.repeats or (2 if args.quick else 5)
    clicks = args.clicks or (20 if args.quick else 25)
    learners = [name.strip() for name in args.learners.split(",") if name.strip()]
    if args.clients is None:
        try:
            import confluent_kafka  # noqa: F401
            clients = ["kafka-python", "confluent"]
        except ImportError:
            clients = ["kafka-python"]
            print("confluent-kafka not installed (extra 'confluent'): kafka-python only")
    else:
        clients = [name.strip() for name in args.clients.split(",") if name.strip()]
    logging.basicConfig(level=logging.WARNING)
    # re-subscribing the raw consumer (to drop the worker's listener) is intended
    logging.getLogger("kafka.consumer.subscription_state").setLevel(logging.ERROR)
    started = time.monotonic()
    from kafka.record import util as record_util

    if args.crc == "python":  # calc_crc32c binds its implementation as a default argument
        record_util.calc_crc32c.__defaults__ = (record_util.crc32c_py,)
    active = record_util.calc_crc32c.__defaults__[0]
    crc = "C (crc32c package)" if active is not record_util.crc32c_py else "pure Python"
    versions = ""
    if "confluent" in clients:
        import confluent_kafka

        versions = f", confluent-kafka {confluent_kafka.__version__} (librdkafka {confluent_kafka.libversion()[0]})"
    load_start = os.getloadavg()[0]
    print(f"pipeline throughput: {events:,} events requested, {repeats} repeats, 3 partitions, "
          f"K={ARMS}, d={DIM}+bias, arm features {args.arm_features}, clients {', '.join(clients)}{versions}; "
          f"kafka-python CRC32C: {crc}; load average {load_start:.2f} on {os.cpu_count()} CPUs")

    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp, DevBroker() as broker, \
            postgres_database(None if args.no_pg else args.pg) as pg_url:
        tmp_path = Path(tmp)
        bootstrap = broker.bootstrap
        log_path = tmp_path / "events.jsonl"
        t = time.monotonic()
        world = WorldConfig(arms=ARMS, dim=DIM, seed=args.seed, arm_feature_dim=args.arm_features)
        sim = simulate(world, model_config("diag-linucb"), "sim", None,
                       SimulationOptions(steps=max(1, round(events / EVENTS_PER_STEP)), out=log_path, quiet=True))
        simulated = time.monotonic() - t
        topics = fresh_topics("bench")
        ensure_topics(bootstrap, topics, PARTITIONS)
        produced = produce_log(log_path, bootstrap, topics)
        total = sum(produced["sent"].values())
        size = log_path.stat().st_size
        print(f"log: {total:,} events ({sim['impressions']:,} impressions, {sim['clicks']:,} clicks, "
              f"{sim['conversions']:,} conversions), {size / total:.0f} bytes/event; simulated in {simulated:.1f} s, "
              f"produced in {produced['seconds']:.1f} s ({total / produced['seconds']:,.0f}/s)\n")

        runs: dict[str, list[Measured]] = {f"raw {client}": [] for client in clients}
        end_saves: dict[str, list[float]] = {}
        stores: list[CheckpointStore] = []

        def sqlite_store(tag: str) -> CheckpointStore:
            store = CheckpointStore(f"sqlite:///{tmp_path / (tag + '.db')}")
            stores.append(store)
            return store

        for rep in range(repeats):
            print(f"  repeat {rep + 1}:", end="", flush=True)
            for client in clients:
                runs[f"raw {client}"].append(run_raw(bootstrap, topics, total, client))
                print(f" | raw {client} {runs[f'raw {client}'][-1].rate:,.0f}/s", end="", flush=True)
                for learner in learners:
                    store = sqlite_store(f"{learner}-{client}-{rep}")
                    m, end = run_ours(bootstrap, topics, total, learner, store, args.checkpoint_interval,
                                      end_saves=args.saves if rep == 0 and client == clients[0] else 0,
                                      client=client)
                    runs.setdefault(f"ours {learner} {client} (SQLite)", []).append(m)
                    if end:
                        end_saves[f"ours {learner} {client} (SQLite)"] = end
                    store.close()
                    print(f" | {learner} {m.rate:,.0f}/s", end="", flush=True)
            print(f" | load {os.getloadavg()[0]:.2f}")
        if pg_url:
            pg_store = CheckpointStore(pg_url)
            stores.append(pg_store)
            for rep in range(min(repeats, 2)):
                m, end = run_ours(bootstrap, topics, total, "diag-linucb", pg_store, args.checkpoint_interval,
                                  end_saves=args.saves if rep == 0 else 0)
                runs.setdefault("ours diag-linucb kafka-python (PostgreSQL)", []).append(m)
                if end:
                    end_saves["ours diag-linucb kafka-python (PostgreSQL)"] = end
                print(f"  PostgreSQL repeat {rep + 1}: diag-linucb {m.rate:,.0f}/s", flush=True)

        profile: Counter[str] | None = None
        profile_rate = profile_gc = None
        if args.profile:
            spy = PySpy(tmp_path / "profile.txt")
            if not spy.available():
                print("py-spy not found: no profile")
            else:
                store = sqlite_store("profile")
                m, _ = run_ours(bootstrap, topics, total, "diag-linucb", store, args.checkpoint_interval, profiler=spy)
                err = spy.wait()
                store.close()
                if spy.out.exists():
                    profile, profile_rate, profile_gc = spy.categories(), m.rate, m.us_per_message()["gc"]
                else:
                    print(f"py-spy produced nothing: {err.strip()[-500:]}")

        fresh: dict[str, dict[str, list[float]]] = {}
        fresh["SQLite"] = freshness(bootstrap, sqlite_store("fresh"), clicks, args.seed)
        if pg_url and not args.quick:
            fresh_pg = CheckpointStore(pg_url)
            stores.append(fresh_pg)
            fresh["PostgreSQL"] = freshness(bootstrap, fresh_pg, clicks, args.seed + 1)
        for store in stores:
            store.close()

    # -- report -----------------------------------------------------------------------------------
    def client_of(who: str) -> str:
        return "confluent" if "confluent" in who else "kafka-python"

    raw_median = {c: statistics.median(m.rate for m in runs[f"raw {c}"]) for c in clients}
    raw_assigned = {c: statistics.median(m.rate_since_assigned for m in runs[f"raw {c}"]) for c in clients}
    print(f"\nThroughput: {total:,} messages over 3 topics × 3 partitions; window = first delivered record to "
          f"last record read/processed (checkpoints every {args.checkpoint_interval:g} s inside it); medians. "
          "× raw = against the raw consumer of the same client; "
          "µs per message split into poll (the client: fetch, parse; the adapter), _process_batch and _save; "
          "gc = time in the cyclic garbage collector (spread over the others); '× raw, from assignment' = the same "
          "ratio with windows that start at the partition assignment (the first fetch included)")
    rows = []
    result_runs: dict[str, Any] = {}
    for who, ms_ in runs.items():
        rates = [m.rate for m in ms_]
        median = statistics.median(rates)
        split = {k: statistics.median(m.us_per_message()[k] for m in ms_)
                 for k in ("poll", "process", "checkpoint", "gc")}
        ratio = median / raw_median[client_of(who)]
        ratio_assigned = statistics.median(m.rate_since_assigned for m in ms_) / raw_assigned[client_of(who)]
        target = f"{'meets' if ratio >= TARGET_RATIO else 'MISSES'} {TARGET_RATIO}×" if "diag" in who else ""
        rows.append([who, " ".join(f"{r:,.0f}" for r in rates), median, ratio, ratio_assigned, 1e6 / median,
                     split["poll"], split["process"], split["checkpoint"], split["gc"], target])
        result_runs[who] = {"events_per_second": [round(r) for r in rates], "median": round(median),
                            "ratio_to_raw": round(ratio, 3), "ratio_from_assignment": round(ratio_assigned, 3),
                            "us_per_message": {k: round(v, 2) for k, v in split.items()}}
    print(table(["reader", "runs (msg/s)", "median msg/s", "× raw", "× raw, from assignment", "µs/msg", "poll",
                 "process", "save", "gc", "target"], rows))

    print("\nCheckpoint latency (ConsumerWorker._save: snapshot of 3 shards + one transaction), ms")
    rows = []
    latency: dict[str, Any] = {}

    def latency_row(label: str, values: list[float], state: str) -> None:
        if not values:
            return
        row = {"n": len(values), "p50_ms": round(ms(percentile(values, 50)), 2),
               "p95_ms": round(ms(percentile(values, 95)), 2), "max_ms": round(ms(max(values)), 2)}
        latency[label] = row
        rows.append([label, state, row["n"], row["p50_ms"], row["p95_ms"], row["max_ms"]])

    for who, ms_ in runs.items():
        if who.startswith("raw"):
            continue
        label = who.removeprefix("ours ").replace(" (", ", ").replace(")", "")
        latency_row(f"{label}, during consumption", [s for m in ms_ for s in m.checkpoints],
                    f"0–{ms_[0].open_impressions:,} open impressions")
        if who in end_saves:
            latency_row(f"{label}, final state back to back", end_saves[who],
                        f"{ms_[0].open_impressions:,} open impressions, {ms_[0].join_state_bytes / 1e6:.1f} MB")
    print(table(["database, phase", "join state", "n", "p50", "p95", "max"], rows))

    print("\nFreshness: click send → counted in a committed checkpoint (live worker, checkpoint interval 1 s), ms")
    rows = []
    fresh_out: dict[str, Any] = {}
    for db, values in fresh.items():
        v, a = values["visible"], values["acked"]
        fresh_out[db] = {"n": len(v), "p50_ms": round(ms(percentile(v, 50))), "p95_ms": round(ms(percentile(v, 95))),
                         "max_ms": round(ms(max(v))), "ack_p50_ms": round(ms(percentile(a, 50)), 1)}
        f = fresh_out[db]
        rows.append([db, f["n"], f["p50_ms"], f["p95_ms"], f["max_ms"], f["ack_p50_ms"]])
    print(table(["database", "clicks", "p50", "p95", "max", "send→ack p50"], rows))

    profile_out = None
    if profile:
        samples = sum(profile.values())
        print(f"\nWhere the time goes: py-spy samples of one Diag-LinUCB run ({profile_rate:,.0f} msg/s while "
              f"sampled), worker thread, {samples} samples")
        order = [name for name, _ in CATEGORIES] + ["other"]
        rows = [[name, profile[name], 100.0 * profile[name] / samples,
                 profile[name] / samples * 1e6 / profile_rate] for name in order if profile[name]]
        print(table(["category", "samples", "%", "µs/msg"], rows))
        print(f"(cyclic garbage collection in that run: {profile_gc:.2f} µs/msg, charged to the rows above)")
        profile_out = {name: round(100.0 * profile[name] / samples, 1) for name in order if profile[name]}

    seconds = time.monotonic() - started
    print()
    for client in clients:
        diag = result_runs.get(f"ours diag-linucb {client} (SQLite)")
        print(f"{client}: Diag-LinUCB {diag['median'] if diag else float('nan'):,.0f} msg/s per worker = "
              f"{diag['ratio_to_raw'] if diag else float('nan'):.2f} × its raw consumer "
              f"({raw_median[client]:,.0f} msg/s) (target ≥ {TARGET_RATIO})")
    if len(clients) == 2:
        cross = {}
        for label in ("raw", *(f"ours {learner}" for learner in learners)):
            a = result_runs.get(f"{label} confluent" if label == "raw" else f"{label} confluent (SQLite)")
            b = result_runs.get(f"{label} kafka-python" if label == "raw" else f"{label} kafka-python (SQLite)")
            if a and b:
                cross[label] = round(a["median"] / b["median"], 2)
        print("confluent / kafka-python, same run, medians: " + ", ".join(f"{k} {v:.2f}×" for k, v in cross.items()))
    print(f"total time {seconds:.0f} s; load average {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} now "
          "(other processes skew the figures)")
    emit_json("pipeline_throughput", {
        "events": total, "bytes_per_event": round(size / total), "repeats": repeats, "partitions": PARTITIONS,
        "arm_features": args.arm_features, "kafka_crc32c": crc, "clients": clients,
        "raw_median": {c: round(v) for c, v in raw_median.items()},
        "runs": result_runs, "target_ratio": TARGET_RATIO, "checkpoint_latency": latency, "freshness": fresh_out,
        "profile_percent": profile_out, "seconds": round(seconds, 1), "quick": args.quick,
        "load_average": round(os.getloadavg()[0], 2),
    })


if __name__ == "__main__":
    main()
