"""``/score`` with pCTR, pCVR and expected value, ranking by expected value, and the calibration gauge
(through the starlette TestClient)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from banditloop.cli import main
from banditloop.evaluation.policy import TargetPolicy
from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.serving.http.app import ScoringService, create_app
from banditloop.serving.scorer import Scorer

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx`")
CONTEXT = {"x0": 0.3, "x1": -1.2}
ARMS = ["a0", "a1", "a2"]


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    d = tmp_path_factory.mktemp("values")
    url = f"sqlite:///{d / 'm.db'}"
    common = ["--arms", "3", "--dim", "2", "--steps", "2000", "--db", url, "--quiet", "--json"]
    runs = [("ftrl", "ctr-ftrl", ["--param", "epsilon=0"]), ("ftrl-e", "ctr-ftrl", ["--param", "epsilon=0.2"]),
            ("esmm", "esmm", ["--reward", "conversion"]), ("lin", "linucb", [])]
    for model, learner, extra in runs:
        assert main(["simulate", "--policy", learner, "--model", model, *common, *extra]) == 0
    return url


def _client(db: str, model: str, **kw):
    from starlette.testclient import TestClient

    return TestClient(create_app(ScoringService(Scorer(db, model), reload_interval=None, **kw)))


def _learner(db: str, model: str):
    store = CheckpointStore(db)
    try:
        target = TargetPolicy.from_store(store, model)
    finally:
        store.close()
    return target.learner, target.vectorizer.x(CONTEXT)


def test_click_model_returns_pctr_and_value_per_click(db):
    learner, x = _learner(db, "ftrl")
    with _client(db, "ftrl") as client:
        body = client.post("/score", json={"context": CONTEXT, "candidates": ARMS, "values": {"a1": 2.5}}).json()
    arm = body["arm"]
    assert body["pctr"] == pytest.approx(learner.ctr(arm, x))
    assert "pcvr" not in body
    assert body["expected_value"] == pytest.approx(body["pctr"] * (2.5 if arm == "a1" else 1.0))


def test_esmm_returns_pctr_pcvr_and_their_product_times_value(db):
    learner, x = _learner(db, "esmm")
    with _client(db, "esmm") as client:
        body = client.post("/score", json={"context": CONTEXT, "candidates": ARMS,
                                           "values": dict.fromkeys(ARMS, 40.0)}).json()
    arm = body["arm"]
    assert body["pctr"] == pytest.approx(learner.ctr(arm, x))
    assert body["pcvr"] == pytest.approx(learner.cvr(arm, x))
    assert body["expected_value"] == pytest.approx(body["pctr"] * body["pcvr"] * 40.0)
    assert body["expected_value"] == pytest.approx(learner.ctcvr(arm, x) * 40.0)


def test_models_without_probabilities_answer_without_them(db):
    with _client(db, "lin") as client:
        body = client.post("/score", json={"context": CONTEXT, "candidates": ARMS}).json()
        assert not {"pctr", "pcvr", "expected_value"} & set(body)
        refused = client.post("/score", json={"context": CONTEXT, "candidates": ARMS, "rank_by": "expected_value"})
    assert refused.status_code == 422 and "predicts no expected value" in refused.json()["error"]


def test_rank_by_expected_value_picks_the_argmax_of_pctr_times_value(db):
    learner, x = _learner(db, "ftrl")
    pctr = np.array([learner.ctr(a, x) for a in ARMS])
    worst = ARMS[int(pctr.argmin())]
    values = {worst: 1.01 * pctr.max() / pctr.min()}  # the least clicked arm, worth the most per impression
    with _client(db, "ftrl") as client:
        by_model = client.post("/score", json={"context": CONTEXT, "candidates": ARMS, "values": values}).json()
        by_value = client.post("/score", json={"context": CONTEXT, "candidates": ARMS, "values": values,
                                               "rank_by": "expected_value", "k": 3}).json()
    assert by_model["arm"] == ARMS[int(pctr.argmax())]
    assert by_value["arm"] == worst and by_value["propensity"] == 1.0  # epsilon = 0: greedy on value
    ev = {a: pctr[i] * values.get(a, 1.0) for i, a in enumerate(ARMS)}
    assert by_value["scores"] == pytest.approx(ev)
    assert [s["arm"] for s in by_value["slate"]] == sorted(ARMS, key=lambda a: -ev[a])
    with _client(db, "ftrl", rank_by="expected_value") as client:  # serve --rank-by expected-value
        assert client.post("/score", json={"context": CONTEXT, "candidates": ARMS,
                                           "values": values}).json()["arm"] == worst


def test_epsilon_greedy_exploration_on_value_has_exact_propensities(db):
    with _client(db, "ftrl-e", rank_by="expected_value") as client:
        answers = [client.post("/score", json={"context": CONTEXT, "candidates": ARMS}).json() for _ in range(300)]
    best = max(answers[0]["scores"], key=answers[0]["scores"].get)
    for a in answers:
        assert a["propensity"] == pytest.approx(0.8 + 0.2 / 3 if a["arm"] == best else 0.2 / 3)
    share = sum(a["arm"] == best for a in answers) / len(answers)
    assert 0.75 < share < 0.95  # 0.867 expected


def test_values_are_validated(db):
    with _client(db, "ftrl") as client:
        for values, needle in (({"zz": 1.0}, "not among the candidates"), ({"a0": -1.0}, "values.a0"),
                               ({"a0": "high"}, "invalid request")):
            r = client.post("/score", json={"context": CONTEXT, "candidates": ARMS, "values": values})
            assert r.status_code == 422 and needle in r.json()["error"]
        r = client.post("/score", json={"context": CONTEXT, "candidates": ARMS, "rank_by": "bid"})
        assert r.status_code == 422


def test_metrics_export_the_mean_predicted_probability_of_served_choices(db):
    learner, _ = _learner(db, "ftrl")
    rng = np.random.default_rng(0)
    with _client(db, "ftrl") as client:
        text = client.get("/metrics").text
        assert re.search(r"^banditloop_served_predicted_probability_mean NaN", text, re.M)
        pctrs = []
        for _ in range(20):
            context = {"x0": float(rng.normal()), "x1": float(rng.normal())}
            pctrs.append(client.post("/score", json={"context": context, "candidates": ARMS}).json()["pctr"])
        text = client.get("/metrics").text
    count = float(re.search(r"^banditloop_served_predicted_probability_count_total (\S+)", text, re.M).group(1))
    mean = float(re.search(r"^banditloop_served_predicted_probability_mean (\S+)", text, re.M).group(1))
    assert count == 20 and mean == pytest.approx(np.mean(pctrs))
