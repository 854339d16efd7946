"""``banditloop serve`` as a real server process on a loopback port, driven with httpx.

Every server is ``python -m banditloop.cli serve ...`` in its own session (process group), so the
tests can check that SIGTERM leaves nothing behind. Nothing here asserts on latency: waits poll
with generous deadlines.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from banditloop.core.events import Click, Conversion, Impression, decode_event, encode_event
from banditloop.core.features import FeatureSpec, dense_names
from banditloop.pipeline.broker import free_port
from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.pipeline.model import ModelConfig
from banditloop.pipeline.simulate import SimulationOptions, simulate
from banditloop.serving.scorer import Scorer
from banditloop.simulators.world import WorldConfig

ROOT = Path(__file__).resolve().parents[1]
DIM = 4
ARMS = [f"a{i}" for i in range(6)]
CONTEXT = {"x0": 0.3, "x1": -1.0, "x2": 0.5, "x3": 2.0}
START_TIMEOUT = 60.0
RELOAD = "0.2"


def config(learner: str = "linucb") -> ModelConfig:
    return ModelConfig(learner=learner, features=FeatureSpec(dim=DIM + 1, numeric=dense_names("x", DIM)))


def train(db: str, model: str = "m", seed: int = 0, learner: str = "linucb", steps: int = 1500) -> int:
    store = CheckpointStore(db)
    try:
        return simulate(WorldConfig(arms=len(ARMS), dim=DIM, seed=seed), config(learner), model, store,
                        SimulationOptions(steps=steps, quiet=True, checkpoint_interval=None))["version"]
    finally:
        store.close()


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Server:
    """One ``banditloop serve`` subprocess."""

    def __init__(self, tmp: Path, db: str, model: str, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"serve-{self.port}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env = {k: v for k, v in env.items() if not k.startswith("BANDITLOOP_")}  # only what the test says
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "banditloop.cli", "serve", "--db", db, "--model", model, "--port", str(self.port),
             "--reload-interval", RELOAD, *extra],
            cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        # every POST body of these tests is JSON (the server refuses other content types with 415)
        self.client = httpx.Client(base_url=self.url, timeout=30.0, headers={"content-type": "application/json"})
        wait_for(self._answers, START_TIMEOUT, 0.1, f"the server to listen ({self.log()[-2000:]})")

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return self.client.get("/healthz").status_code in (200, 503)
        except httpx.TransportError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self) -> dict:
        return self.client.get("/healthz").json()

    def score(self, **body) -> httpx.Response:
        return self.client.post("/score", json=body)

    def metric(self, name: str, labels: str = "") -> float | None:
        """The value of one series of /metrics (``labels`` as printed, e.g. ``model="m"``)."""
        wanted = f"{name}{{{labels}}}" if labels else name
        for line in self.client.get("/metrics").text.splitlines():
            if line.startswith(wanted + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait; the process group must be empty afterwards."""
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                raise AssertionError(f"server ignored SIGTERM:\n{self.log()}") from None
        return self.proc.returncode

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)


@pytest.fixture
def start_server(tmp_path):
    servers: list[Server] = []

    def start(db: str, model: str = "m", *extra: str) -> Server:
        server = Server(tmp_path, db, model, *extra)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()


@pytest.fixture(scope="module")
def trained_db(tmp_path_factory) -> str:
    db = f"sqlite:///{tmp_path_factory.mktemp('served') / 'checkpoints.db'}"
    assert train(db) == 1
    return db


@pytest.fixture(scope="module")
def server(trained_db, tmp_path_factory):
    """A server shared by the read-only tests (small limits so that the limit tests stay cheap)."""
    srv = Server(tmp_path_factory.mktemp("server"), trained_db, "m", "--max-candidates", "100",
                 "--max-features", "64", "--max-k", "10", "--max-body-bytes", "65536")
    wait_for(lambda: srv.health().get("version") == 1, what="model version 1")
    yield srv
    srv.kill()


# -- scoring ------------------------------------------------------------------------------------
def test_score_answers_the_arm_scores_propensity_model_and_a_fresh_impression_id(server, trained_db):
    r = server.score(context=CONTEXT, candidates=ARMS, request_id="req-1", user_id="u1")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["arm"] in ARMS and set(body["scores"]) == set(ARMS)
    assert body["model"] == "m" and body["version"] == 1 and body["policy"] == "m:1"
    assert body["propensity"] == 1.0 and body["request_id"] == "req-1"
    assert len(body["impression_id"]) == 32 and int(body["impression_id"], 16) >= 0
    assert body["slate"] == [{"arm": body["arm"], "position": 0, "propensity": 1.0,
                              "impression_id": body["impression_id"]}]
    # the same answer as the in-process scorer on the same checkpoint
    local = Scorer(trained_db, "m")
    local.reload()
    expected = local.choose(CONTEXT, ARMS)
    assert body["arm"] == expected.arm
    assert body["scores"] == pytest.approx(expected.scores, rel=1e-12)
    assert server.score(context=CONTEXT, candidates=ARMS).json()["impression_id"] != body["impression_id"]


def test_slate_of_k_arms_in_score_order_with_propensities_and_impression_ids(server):
    body = server.score(context=CONTEXT, candidates=ARMS, k=3).json()
    slate = body["slate"]
    assert [item["position"] for item in slate] == [0, 1, 2]
    arms = [item["arm"] for item in slate]
    assert arms[0] == body["arm"] and len(set(arms)) == 3
    scores = body["scores"]
    assert arms == sorted(ARMS, key=lambda a: -scores[a])[:3]
    assert [item["propensity"] for item in slate] == [1.0, 1.0, 1.0]  # LinUCB: deterministic ranking
    assert len({item["impression_id"] for item in slate}) == 3 and slate[0]["impression_id"] == body["impression_id"]


def test_candidate_subsets_integer_ids_and_tied_new_arms(server):
    body = server.score(context=CONTEXT, candidates=["a4", "a1"]).json()
    assert body["arm"] in ("a4", "a1") and set(body["scores"]) == {"a4", "a1"}
    # two arms the model has never seen score the same: the choice is a coin flip and says so
    body = server.score(context=CONTEXT, candidates=[7, 8], k=2).json()
    assert set(body["scores"]) == {"7", "8"} and body["propensity"] == 0.5
    assert [item["propensity"] for item in body["slate"]] == [0.5, 0.5]


def test_healthz_and_metrics(server):
    health = server.client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["version"] == 1 and health.json()["learner"] == "linucb"
    server.score(context=CONTEXT, candidates=ARMS)
    text = server.client.get("/metrics").text
    for series in ('banditloop_http_requests_total{endpoint="/score",status="200"}',
                   'banditloop_http_request_duration_seconds_bucket{endpoint="/score",le="0.005"}',
                   'banditloop_model_version{model="m"} 1.0', 'banditloop_model_age_seconds{model="m"}',
                   'banditloop_model_reloads_total{model="m"} 1.0',
                   'banditloop_model_refused_reloads_total{model="m"} 0.0',
                   'banditloop_publish_errors_total{reason="queue_full"} 0.0'):
        assert series in text, series


def test_no_model_yet_is_503_not_500(start_server, tmp_path):
    srv = start_server(f"sqlite:///{tmp_path / 'empty.db'}", "absent", "--wait-for-model")
    health = srv.client.get("/healthz")
    assert health.status_code == 503 and health.json()["status"] == "no model"
    r = srv.score(context=CONTEXT, candidates=ARMS)
    assert r.status_code == 503 and "no checkpoint" in r.json()["error"]
    assert srv.stop() == 0


def test_cold_start_serves_an_untrained_model_until_the_first_checkpoint(start_server, tmp_path):
    db = f"sqlite:///{tmp_path / 'cold.db'}"
    srv = start_server(db, "m", "--cold-start")
    health = srv.client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "cold start" and health.json()["version"] == 0
    body = srv.score(context=CONTEXT, candidates=ARMS, k=2).json()
    assert body["version"] == 0 and body["policy"] == "m:0"
    assert [item["propensity"] for item in body["slate"]] == pytest.approx([1 / len(ARMS)] * 2)  # uniform
    # the first checkpoint replaces it, although its features differ from the untrained model's
    train(db)
    wait_for(lambda: srv.health().get("version") == 1, what="the first checkpoint")
    assert srv.health()["status"] == "ok" and srv.metric("banditloop_model_refused_reloads_total", 'model="m"') == 0
    assert srv.score(context=CONTEXT, candidates=ARMS).json()["propensity"] == 1.0


# -- validation ---------------------------------------------------------------------------------
def _body(**fields) -> bytes:
    return json.dumps({"context": CONTEXT, "candidates": ARMS, **fields}).encode()


def _malformed() -> list[tuple[str, bytes]]:
    deep = b"[" * 5000 + b"]" * 5000
    cases = [
        ("empty body", b""),
        ("not JSON", b"nope"),
        ("truncated", b'{"candidates": ["a0"'),
        ("trailing garbage", b'{"candidates": ["a0"]} x'),
        ("invalid UTF-8", b'{"candidates": ["\xff\xfe"]}'),
        ("NaN literal", b'{"candidates": ["a0"], "context": {"x0": NaN}}'),
        ("Infinity literal", b'{"candidates": ["a0"], "context": {"x0": Infinity}}'),
        ("array body", b"[]"),
        ("null body", b"null"),
        ("string body", b'"score me"'),
        ("deeply nested", deep),
        ("nested in context", b'{"candidates": ["a0"], "context": {"x0": ' + deep + b"}}"),
        ("no candidates", json.dumps({"context": CONTEXT}).encode()),
        ("candidates not a list", _body(candidates="a0")),
        ("empty candidates", _body(candidates=[])),
        ("null candidate", _body(candidates=[None])),
        ("float candidate", _body(candidates=[1.5])),
        ("bool candidate", _body(candidates=[True])),
        ("object candidate", _body(candidates=[{"id": "a0"}])),
        ("empty candidate id", _body(candidates=[""])),
        ("long candidate id", _body(candidates=["a" * 300])),
        ("huge integer id", b'{"candidates": [123456789012345678901234567890]}'),
        ("duplicate candidates", _body(candidates=["a0", "a0"])),
        ("too many candidates", _body(candidates=[f"c{i}" for i in range(101)])),
        ("thousands of candidates", _body(candidates=list(range(5000)))),
        ("context not an object", _body(context=[1, 2])),
        ("nested context", _body(context={"x0": {"y": 1}})),
        ("list in context", _body(context={"x0": [1]})),
        ("null in context", _body(context={"x0": None})),
        ("bool in context", _body(context={"x0": True})),
        ("overflowing number", b'{"candidates": ["a0"], "context": {"x0": 1e999}}'),
        ("too large a number", _body(context={"x0": 1e12})),
        ("empty feature name", _body(context={"": 1.0})),
        ("too many features", _body(context={f"f{i}": 1.0 for i in range(65)})),
        ("long string value", _body(context={"x0": "v" * 2000})),
        ("k zero", _body(k=0)),
        ("k negative", _body(k=-1)),
        ("k float", _body(k=1.5)),
        ("k string", _body(k="2")),
        ("k bool", _body(k=True)),
        ("k above the candidates", _body(k=7)),
        ("k above the limit", _body(candidates=[f"c{i}" for i in range(20)], k=11)),
        ("unknown field", _body(candidate=["a0"])),
        ("arm features of a non-candidate", _body(arm_features={"zz": {"p": 1.0}})),
        ("arm features not objects", _body(arm_features={"a0": 1.0})),
        ("non-finite arm feature", b'{"candidates": ["a0"], "arm_features": {"a0": {"p": -1e999}}}'),
        ("user_id not a string", _body(user_id=5)),
        ("long user_id", _body(user_id="u" * 300)),
        ("request_id list", _body(request_id=[])),
        ("oversized body", _body(context={"x0": "v" * 1000}, pad="p" * 200_000)),
    ]
    rng = random.Random(7)
    valid = _body()
    for i in range(10):  # corrupted copies of a valid body
        raw = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        cases.append((f"random corruption {i}", bytes(raw)))
    for i in range(5):
        cases.append((f"random bytes {i}", bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))))
    return cases


def test_malformed_requests_are_4xx_with_a_message_and_the_server_survives(server):
    statuses = {}
    for name, raw in _malformed():
        r = server.client.post("/score", content=raw, headers={"content-type": "application/json"})
        if name.startswith("random corruption") and r.status_code == 200:
            continue  # a byte flip can leave a valid request (e.g. another feature name)
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
        message = r.json()["error"]
        assert isinstance(message, str) and message, name
        statuses[name] = r.status_code
    assert statuses["not JSON"] == 400 and statuses["NaN literal"] == 400 and statuses["oversized body"] == 413
    assert statuses["too many candidates"] == 422 and statuses["k above the candidates"] == 422
    assert server.proc.poll() is None
    assert server.score(context=CONTEXT, candidates=ARMS).status_code == 200
    assert server.metric("banditloop_http_requests_total", 'endpoint="/score",status="500"') is None


def test_specific_messages(server):
    def error(**fields):
        r = server.client.post("/score", content=_body(**fields))
        assert r.status_code == 422
        return r.json()["error"]

    assert "k: 7 requested but only 6 candidates" in error(k=7)
    assert "`$.context" in error(context={"x0": {"nested": 1}})
    assert "at most 100" in error(candidates=[f"c{i}" for i in range(101)])
    assert "duplicate" in error(candidates=["a0", "a0"])
    assert "unknown field `candidate`" in error(candidate=["a0"])
    assert "not a finite number" in error(context={"x0": 1e12})


def test_streamed_oversized_body_wrong_methods_and_unknown_paths(server):
    def chunks():
        for _ in range(100):
            yield b" " * 4096

    r = server.client.post("/score", content=chunks())  # chunked: no Content-Length
    assert r.status_code == 413 and "limit" in r.json()["error"]
    assert server.client.get("/score").status_code == 405
    r = server.client.get("/nothing-here")
    assert r.status_code == 404 and r.json() == {"error": "Not Found"}
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:  # httpx refuses to send it
        sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}")
        assert sock.recv(4096).startswith(b"HTTP/1.1 4")
    assert server.score(context=CONTEXT, candidates=ARMS).status_code == 200


def test_feedback_without_bootstrap_is_503_with_a_reason(server):
    click = Click(event_id="c1", ts=time.time(), impression_id="i1")
    r = server.client.post("/feedback", content=encode_event(click))
    assert r.status_code == 503 and "--bootstrap" in r.json()["error"]


# -- hot reload ---------------------------------------------------------------------------------
def _scores(db: str, model: str = "m") -> dict[str, float]:
    local = Scorer(db, model)
    local.reload()
    try:
        return local.choose(CONTEXT, ARMS).scores
    finally:
        local.store.close()


def test_hot_reload_serves_new_versions_whole_and_refuses_bad_ones(start_server, tmp_path):
    db = f"sqlite:///{tmp_path / 'reload.db'}"
    train(db, seed=0)
    expected = {1: _scores(db)}
    srv = start_server(db)
    wait_for(lambda: srv.health().get("version") == 1, what="version 1")

    # hammer /score while a new version is written and swapped in: every answer must be exactly
    # one version's answer (no mix of old and new parameters)
    answers: list[dict] = []
    stop = threading.Event()

    def hammer():
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            while not stop.is_set():
                answers.append(client.post("/score", json={"context": CONTEXT, "candidates": ARMS}).json())

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        assert train(db, seed=1) == 2
        expected[2] = _scores(db)
        wait_for(lambda: srv.health().get("version") == 2, what="version 2 to be served")
        wait_for(lambda: any(a["version"] == 2 for a in answers), what="an answer from version 2")
    finally:
        stop.set()
        thread.join()
    assert {a["version"] for a in answers} <= {1, 2}
    for a in answers:
        assert a["scores"] == pytest.approx(expected[a["version"]], rel=1e-12), a["version"]
    assert srv.metric("banditloop_model_reloads_total", 'model="m"') == 2.0

    # a version whose state holds NaN, one whose bytes are garbage, one of another learner
    store = CheckpointStore(db)
    try:
        bad = store.latest("m")
        bad.state.arrays["xtx"][0, 0, 0] = np.nan
        store.save(bad)
    finally:
        store.close()
    wait_for(lambda: srv.metric("banditloop_model_refused_reloads_total", 'model="m"') == 1.0, what="a refusal")
    health = srv.health()
    assert health["version"] == 2 and "NaN" in health["last_error"]
    _save_garbage(db)
    wait_for(lambda: srv.metric("banditloop_model_refused_reloads_total", 'model="m"') == 2.0, what="a refusal")
    train(db, seed=2, learner="diag-linucb", steps=200)
    wait_for(lambda: srv.metric("banditloop_model_refused_reloads_total", 'model="m"') == 3.0, what="a refusal")
    assert "incompatible" in srv.health()["last_error"]
    time.sleep(1.0)  # several polls: a refused version is not retried (nor logged) again
    assert srv.metric("banditloop_model_refused_reloads_total", 'model="m"') == 3.0
    assert srv.log().count("refusing checkpoint") == 3
    body = srv.score(context=CONTEXT, candidates=ARMS).json()
    assert body["version"] == 2 and body["scores"] == pytest.approx(expected[2], rel=1e-12)
    assert srv.stop() == 0


def _save_garbage(db: str) -> None:
    """A checkpoint whose state bytes are garbage, written atomically (a reader never sees it valid)."""
    import banditloop.core.state_codec as codec  # the store imports encode_state from here when it writes

    store = CheckpointStore(db)
    original = codec.encode_state
    codec.encode_state = lambda state: (b"garbage", original(state)[1])
    try:
        store.save(store.latest("m"))
    finally:
        codec.encode_state = original
        store.close()


def test_serves_the_merge_of_shards(start_server, tmp_path):
    from banditloop.pipeline.logs import load_log
    from banditloop.pipeline.runner import LearningRun

    db = f"sqlite:///{tmp_path / 'shards.db'}"
    store = CheckpointStore(db)
    try:
        simulate(WorldConfig(arms=len(ARMS), dim=DIM, seed=3), config(), "whole", store,
                 SimulationOptions(steps=1500, quiet=True, out=tmp_path / "log.jsonl", checkpoint_interval=None))
        shards = [LearningRun(config(), "sharded", shard=f"p{i}") for i in range(2)]
        for ev in load_log(tmp_path / "log.jsonl").events:
            shards[int(ev.impression_id.encode().hex(), 16) % 2].process(ev)
        store.save_many([run.snapshot({"kind": "test"}) for run in shards])
    finally:
        store.close()
    srv = start_server(db, "sharded")
    wait_for(lambda: srv.health().get("version") is not None, what="the sharded model")
    assert srv.health()["shards"] == ["p0", "p1"]
    body = srv.score(context=CONTEXT, candidates=ARMS).json()
    assert body["scores"] == pytest.approx(_scores(db, "whole"), rel=1e-9)


# -- shutdown -----------------------------------------------------------------------------------
def test_sigterm_stops_cleanly_with_no_orphans(start_server, trained_db):
    # with a Kafka address where nothing listens: the publisher thread is still retrying when stopped
    srv = start_server(trained_db, "m", "--bootstrap", f"127.0.0.1:{free_port()}", "--feedback-timeout", "1")
    assert srv.score(context=CONTEXT, candidates=ARMS).status_code == 200  # Kafka down never blocks /score
    assert srv.health()["kafka"] is False
    click = Click(event_id="c1", ts=time.time(), impression_id="i1")
    r = srv.client.post("/feedback", content=encode_event(click))
    assert r.status_code == 503 and "acknowledge" in r.json()["error"]
    pgid = srv.proc.pid
    assert srv.stop() == 0
    assert "Application shutdown complete" in srv.log()
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)  # nothing left in the server's process group


# -- Kafka --------------------------------------------------------------------------------------
def _consume(bootstrap: str, topic: str, wanted: set[str], timeout: float = 60.0) -> dict[str, tuple[bytes, bytes]]:
    """``{impression_id: (key, value)}`` for the wanted impression ids found on ``topic``."""
    from kafka import KafkaConsumer

    found: dict[str, tuple[bytes, bytes]] = {}
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None, consumer_timeout_ms=1000)
    try:
        deadline = time.monotonic() + timeout
        while not wanted <= set(found) and time.monotonic() < deadline:
            for record in consumer:
                event = decode_event(record.value)
                if event.impression_id in wanted:
                    found[event.impression_id] = (record.key, record.value)
                if wanted <= set(found):
                    break
    finally:
        consumer.close()
    return found


@pytest.mark.kafka
def test_score_publishes_impressions_and_feedback_publishes_clicks(start_server, trained_db, kafka_bootstrap):
    suffix = uuid.uuid4().hex[:8]
    topics = {"impressions": f"imp-{suffix}", "clicks": f"clk-{suffix}", "conversions": f"cnv-{suffix}",
              "dead-letter": f"dlq-{suffix}"}
    srv = start_server(trained_db, "m", "--bootstrap", kafka_bootstrap, "--partitions", "2",
                       "--impressions-topic", topics["impressions"], "--clicks-topic", topics["clicks"],
                       "--conversions-topic", topics["conversions"], "--dead-letter-topic", topics["dead-letter"])
    wait_for(lambda: srv.health()["kafka"], 60, what="the Kafka producer to connect")
    arm_features = {"a0": {"price": 9.5}, "a1": {"price": 3.0, "brand": "x"}}
    body = srv.score(context=CONTEXT, candidates=ARMS, k=2, user_id="u7", arm_features=arm_features).json()
    slate = {item["impression_id"]: item for item in body["slate"]}

    found = _consume(kafka_bootstrap, topics["impressions"], set(slate))
    assert set(found) == set(slate)
    for imp_id, (key, value) in found.items():
        event = decode_event(value)
        item = slate[imp_id]
        assert isinstance(event, Impression) and key == imp_id.encode()
        assert event.arm == item["arm"] and event.position == item["position"]
        assert event.propensity == item["propensity"] == 1.0 and event.policy == "m:1"
        assert event.context == CONTEXT and event.user_id == "u7" and event.candidates == ARMS
        assert event.arm_features == arm_features and event.event_id == f"{imp_id}:i"

    click = Click(event_id=f"click-{suffix}", ts=time.time(), impression_id=body["impression_id"])
    r = srv.client.post("/feedback", content=encode_event(click))
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": True, "type": "click", "event_id": click.event_id,
                        "impression_id": body["impression_id"]}
    conversion = Conversion(event_id=f"conv-{suffix}", ts=time.time(), impression_id=body["impression_id"], value=4.5)
    assert srv.client.post("/feedback", content=encode_event(conversion)).status_code == 202
    clicks = _consume(kafka_bootstrap, topics["clicks"], {body["impression_id"]})
    assert decode_event(clicks[body["impression_id"]][1]) == decode_event(encode_event(click))
    conversions = _consume(kafka_bootstrap, topics["conversions"], {body["impression_id"]})
    assert decode_event(conversions[body["impression_id"]][1]).value == 4.5

    # invalid feedback is refused before Kafka
    assert srv.client.post("/feedback", content=b'{"type": "click"}').status_code == 422
    assert srv.client.post("/feedback", content=b"nope").status_code == 400
    impression = decode_event(found[body["impression_id"]][1])
    assert srv.client.post("/feedback", content=encode_event(impression)).status_code == 422
    wait_for(lambda: srv.metric("banditloop_events_published_total", 'type="impression"') == 2.0,
             what="two acknowledged impressions")
    assert srv.metric("banditloop_events_published_total", 'type="click"') == 1.0
    assert srv.metric("banditloop_publish_errors_total", 'reason="kafka"') == 0.0
    assert srv.stop() == 0


# -- slate propensities (in process) ------------------------------------------------------------
def test_slate_propensities_follow_the_documented_definition(tmp_path):
    from banditloop.serving.http.slate import loggable, slate_propensities
    from banditloop.serving.served import ScoreResult

    def result(scores, ranking, propensity, probabilities=None):
        return ScoreResult(model="m", version=1, arm=ranking[0], ranking=tuple(ranking), scores=scores,
                           propensity=propensity, probabilities=probabilities)

    # argmax without ties: the ranking is deterministic
    assert slate_propensities(result({"a": 3.0, "b": 2.0, "c": 1.0}, "abc", 1.0)) == [1.0, 1.0, 1.0]
    # three arms tied at the top, in candidate order a, b, c; d below. If b was drawn (1/3), a follows
    # at position 1 (it is there whenever b or c was drawn: 2/3), then c at position 2 (whenever a or b
    # was drawn: 2/3), then d, deterministic
    tied = {"a": 5.0, "b": 5.0, "c": 5.0, "d": 1.0}
    assert slate_propensities(result(tied, "bacd", 1 / 3)) == pytest.approx([1 / 3, 2 / 3, 2 / 3, 1.0])
    assert slate_propensities(result(tied, "abcd", 1 / 3)) == pytest.approx([1 / 3, 1 / 3, 2 / 3, 1.0])
    # randomised: the probability of being chosen first
    probs = {"a": 0.8, "b": 0.15, "c": 0.05}
    assert slate_propensities(result({"a": 1.0, "b": 0.5, "c": 0.1}, "abc", 0.8, probs)) == [0.8, 0.15, 0.05]
    # unknown propensity (Thompson sampling without Monte Carlo draws)
    assert slate_propensities(result({"a": 1.0, "b": 0.5}, "ab", float("nan"))) == [None, None]
    assert loggable(0.0) is None and loggable(None) is None and loggable(0.25) == 0.25

    # every learner kind through the in-process scorer: one propensity per shown arm, in [0, 1]
    db = f"sqlite:///{tmp_path / 'kinds.db'}"
    for learner in ("egreedy", "ts", "lints", "hybrid-linucb", "random", "ucb1"):
        train(db, model=learner, learner=learner, steps=300)
        scorer = Scorer(db, learner)
        scorer.reload()
        res = scorer.choose(CONTEXT, ARMS, {"a0": {"price": 2.0}}, k=4)
        props = slate_propensities(res)
        assert len(props) == 4 and props[0] == pytest.approx(res.propensity), learner
        assert all(p is None or 0.0 <= p <= 1.0 for p in props), (learner, props)
        scorer.store.close()


@pytest.mark.kafka
def test_the_loop_closes_scorer_to_kafka_to_learners_and_back(start_server, tmp_path, kafka_bootstrap):
    """Cold start -> impressions and clicks on Kafka -> ``banditloop consume`` learns and checkpoints
    -> the scorer serves the learners' model: every impression and click served here is in it."""
    from banditloop.serving.served import merge_checkpoints

    suffix = uuid.uuid4().hex[:8]
    topic_args = ["--impressions-topic", f"imp-{suffix}", "--clicks-topic", f"clk-{suffix}",
                  "--conversions-topic", f"cnv-{suffix}", "--dead-letter-topic", f"dlq-{suffix}"]
    db = f"sqlite:///{tmp_path / 'loop.db'}"
    srv = start_server(db, "loop", "--cold-start", "--bootstrap", kafka_bootstrap, "--partitions", "2",
                       *topic_args)
    wait_for(lambda: srv.health()["kafka"], 60, what="the Kafka producer to connect")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = (tmp_path / "consume.log").open("wb")
    consumer = subprocess.Popen(
        [sys.executable, "-m", "banditloop.cli", "consume", "--bootstrap", kafka_bootstrap, "--group", f"g-{suffix}",
         "--learner", "linucb", "--model", "loop", "--db", db, "--checkpoint-interval", "0.5", "--quiet",
         "--dim", str(DIM + 1), "--numeric", ",".join(dense_names("x", DIM)), *topic_args],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        rng = random.Random(3)
        clicks = 0
        for _ in range(200):
            context = {f"x{i}": rng.uniform(-1, 1) for i in range(DIM)}
            body = srv.score(context=context, candidates=ARMS).json()
            assert body["version"] == 0 and body["propensity"] == pytest.approx(1 / len(ARMS))
            if body["arm"] == "a0":
                click = Click(event_id=f"c-{body['impression_id']}", ts=time.time(),
                              impression_id=body["impression_id"])
                assert srv.client.post("/feedback", content=encode_event(click)).status_code == 202
                clicks += 1
        assert clicks > 0
        store = CheckpointStore(db)

        def learned() -> dict | None:
            checkpoints = store.latest_per_shard("loop")
            return merge_checkpoints(checkpoints)[1].counters if checkpoints else None

        wait_for(lambda: (learned() or {}).get("impressions") == 200 and learned().get("rewards") == clicks, 120,
                 0.5, what=f"the learners to checkpoint 200 impressions and {clicks} clicks")
        store.close()
        wait_for(lambda: (srv.health().get("version") or 0) >= 1, 30, what="the scorer to load the learners' model")
        health = srv.health()
        assert health["status"] == "ok" and health["learner"] == "linucb" and health["arms"] == len(ARMS)
        body = srv.score(context=CONTEXT, candidates=ARMS).json()
        assert body["policy"] == f"loop:{body['version']}" and body["propensity"] == 1.0
    finally:
        consumer.send_signal(signal.SIGTERM)
        try:
            consumer.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(consumer.pid, signal.SIGKILL)
            consumer.wait()
        log.close()
    assert consumer.returncode == 0, (tmp_path / "consume.log").read_text()[-3000:]
    assert srv.stop() == 0
