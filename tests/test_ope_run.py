"""Off-policy evaluation over event logs: rewards from the join, exclusions counted, fixed targets
(fresh learners and checkpoints), progressive targets, and the ``evaluate`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from banditloop.cli import main
from banditloop.evaluation.policy import TargetPolicy
from banditloop.evaluation.run import EvaluationOptions, collect, evaluate_log
from banditloop.pipeline.logs import load_log
from banditloop.pipeline.model import ModelConfig

T0 = 1_767_225_600.0


def imp(i: int, arm: str, *, ts: float | None = None, **extra) -> dict:
    event = {"type": "impression", "event_id": f"e{i}", "ts": T0 + (i if ts is None else ts),
             "impression_id": f"i{i}", "arm": arm, "context": {"x": 1.0}, "candidates": ["a", "b"],
             "propensity": 0.5}
    event.update(extra)
    return {k: v for k, v in event.items() if v is not None}


def click(i: int, delay: float = 5.0) -> dict:
    return {"type": "click", "event_id": f"c{i}", "ts": T0 + i + delay, "impression_id": f"i{i}"}


def write(path, events: list[dict], raw: list[str] = ()) -> str:
    with open(path, "w") as fh:
        for e in events:
            fh.write(json.dumps(e) + "\n")
        for line in raw:
            fh.write(line + "\n")
    return str(path)


@pytest.fixture
def small_log(tmp_path):
    """Six usable uniform impressions (clicks on i0, i2 and i3), plus one of each excluded kind."""
    events = [imp(0, "a"), imp(1, "b"), imp(2, "a"), imp(3, "b"), imp(4, "a"), imp(5, "b"),
              click(0), click(2), click(3), click(2),  # the second click on i2 is a duplicate
              imp(6, "a", propensity=None), imp(7, "b", position=1), imp(8, "a", candidates=None),
              click(6), click(7)]
    bad = json.dumps({**imp(9, "a"), "propensity": 0.0})
    return write(tmp_path / "log.jsonl", events, [bad])


def test_rewards_come_from_the_join_and_exclusions_are_counted(small_log):
    out = evaluate_log(small_log, TargetPolicy.fresh(ModelConfig(learner="random")))
    assert out["used"] == 6 and out["impressions"] == 9
    assert out["excluded"] == {"no_propensity": 1, "no_candidates": 1, "slate_position": 1,
                               "invalid_propensity": 1, "duplicates": 1, "late": 0, "unmatched": 0}
    assert out["uniform_logging"] is True and "note" not in out["replay"]
    # target = logger (uniform over two arms): IPS is the empirical mean of the usable impressions
    assert out["logging"]["value"] == pytest.approx(3 / 6)
    assert out["ips"]["value"] == pytest.approx(3 / 6) and out["snips"]["value"] == pytest.approx(3 / 6)
    assert out["ips"]["ess"] == pytest.approx(6.0) and out["ips"]["lift"] == pytest.approx(0.0, abs=1e-12)
    for name in ("replay", "ips", "snips", "dr", "dr_cv", "clipped_ips", "switch_dr"):
        assert out[name]["ci_low"] <= out[name]["value"] <= out[name]["ci_high"]


def test_a_click_outside_its_window_is_no_reward(tmp_path):
    log = write(tmp_path / "late.jsonl", [imp(0, "a"), imp(1, "a"), click(0, delay=7200.0), click(1)])
    out = evaluate_log(log, TargetPolicy.fresh(ModelConfig(learner="random")))
    assert out["logging"]["value"] == pytest.approx(0.5)  # only i1's click counts (1 h window)
    assert out["excluded"]["unmatched"] == 1


def _train(tmp_path, db: str) -> None:
    """A checkpointed greedy model that prefers arm a (clicked 3 of 3) over b (0 of 3)."""
    train = write(tmp_path / "train.jsonl", [imp(0, "a"), imp(1, "a"), imp(2, "a"), imp(3, "b"), imp(4, "b"),
                                             imp(5, "b"), click(0), click(1), click(2),
                                             imp(5000, "b")])  # its time closes the others' windows
    assert main(["replay", train, "--learner", "egreedy", "--param", "epsilon=0", "--model", "greedy",
                 "--db", db, "--quiet", "--json"]) == 0


def test_a_checkpointed_deterministic_target_by_hand(tmp_path, small_log, capsys):
    db = f"sqlite:///{tmp_path / 'cp.db'}"
    _train(tmp_path, db)
    capsys.readouterr()
    assert main(["evaluate", small_log, "--model", "greedy", "--db", db, "--json", "--plot",
                 str(tmp_path / "ope.png")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["policy"].startswith("greedy:") and out["learner"] == "egreedy"
    # target plays a with probability 1: IPS = (1/6) Σ_{logged a} r / 0.5 = (1/6)(2 + 0 + 2)... i0, i2 clicked
    assert out["ips"]["value"] == pytest.approx((2.0 + 2.0 + 0.0) / 6)
    assert out["snips"]["value"] == pytest.approx(2 / 3)  # 2 clicks among the 3 impressions of a
    assert out["replay"]["value"] == pytest.approx(2 / 3) and out["replay"]["n"] == 3
    assert out["ips"]["ess"] == pytest.approx(3.0)
    assert (tmp_path / "ope.png").stat().st_size > 1000


def test_progressive_probabilities_are_taken_before_learning(tmp_path):
    # i0's click window (1 h) has closed by i5000: context-free learners learn a mean from closed windows
    log = write(tmp_path / "p.jsonl", [imp(0, "a"), click(0), imp(5000, "a"), imp(5001, "b")])
    target = TargetPolicy.fresh(ModelConfig(learner="egreedy", learner_params={"epsilon": 0.0}))
    data, _ = collect(load_log(log).events, target, EvaluationOptions(progressive=True))
    assert data.cand_prob[0] == pytest.approx([0.5, 0.5])  # an empty learner: a tie
    assert data.cand_prob[1] == pytest.approx([1.0, 0.0])  # it learned i0's click on a (window closed)
    assert data.target_pscore.tolist() == pytest.approx([0.5, 1.0, 0.0])
    assert target.learner.counters["impressions"] == 3  # it learned every logged impression
    fixed = TargetPolicy.fresh(ModelConfig(learner="egreedy", learner_params={"epsilon": 0.0}))
    data, _ = collect(load_log(log).events, fixed, EvaluationOptions(progressive=False))
    assert np.allclose(data.cand_prob, 0.5) and fixed.learner.counters["impressions"] == 0


def test_evaluate_on_a_simulated_log_and_user_errors(tmp_path, capsys):
    from banditloop.simulators.config import WorldConfig
    from banditloop.simulators.logs import generate_log

    log = tmp_path / "sim.jsonl.gz"
    generate_log(WorldConfig(seed=2, arms=4, dim=3), "random", 3000, log)
    assert main(["evaluate", str(log), "--learner", "linucb", "--dim", "4", "--numeric", "x0,x1,x2",
                 "--progressive", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "snips" in text and "uniformly random log: True" in text
    assert main(["evaluate", str(log), "--learner", "random", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["used"] == 3000 and out["ips"]["value"] == pytest.approx(out["logging"]["value"], abs=1e-12)
    # DR and dr_cv share the control-variate EL interval (solved once), each keeps its own value
    assert {"value", "ci_low", "ci_high"} <= set(out["dr_cv"]) and out["dr_cv"]["interval"] == "el"
    assert (out["dr_cv"]["ci_low"], out["dr_cv"]["ci_high"]) == (out["dr"]["ci_low"], out["dr"]["ci_high"])
    assert out["dr"]["ci_low"] < out["dr"]["value"] < out["dr"]["ci_high"]
    for argv in (["evaluate", str(log)], ["evaluate", str(log), "--learner", "random", "--model", "m"],
                 ["evaluate", str(tmp_path / "none.jsonl"), "--learner", "random"],
                 ["evaluate", str(log), "--model", "absent", "--db", f"sqlite:///{tmp_path / 'e.db'}"]):
        assert main(argv) == 2
    assert "--learner NAME or --model NAME" in capsys.readouterr().err


class _Captured:
    """Stands in for the Kafka publisher: keeps what the scorer would publish."""

    def __init__(self) -> None:
        self.events: list = []

    def publish(self, event, ack: bool = False):
        self.events.append(event)

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def queue_size(self) -> int:
        return 0


@pytest.mark.filterwarnings("ignore:Using `httpx`")
def test_evaluate_a_log_the_scorer_wrote(tmp_path, capsys):
    """Impressions as ``serve`` publishes them (slates of 2, propensities from the model): position 0 is
    used and positions 1 are counted; the served model evaluated on its own log has weights 1, so its
    IPS estimate is the logged mean exactly."""
    from starlette.testclient import TestClient

    from banditloop.core.events import encode_event
    from banditloop.serving.http.app import ScoringService, create_app
    from banditloop.serving.scorer import Scorer

    train = write(tmp_path / "train.jsonl", [imp(i, "a" if i % 3 else "b") for i in range(30)]
                  + [click(i) for i in range(0, 30, 3)])
    db = f"sqlite:///{tmp_path / 'served.db'}"
    assert main(["replay", train, "--learner", "egreedy", "--param", "epsilon=0.3", "--model", "served",
                 "--db", db, "--quiet", "--json"]) == 0
    capsys.readouterr()
    captured = _Captured()
    service = ScoringService(Scorer(db, "served"), publisher=captured, reload_interval=None)
    rng = np.random.default_rng(0)
    with TestClient(create_app(service)) as client:
        for _ in range(200):
            body = {"context": {"x": float(rng.normal())}, "candidates": ["a", "b", "c"], "k": 2}
            assert client.post("/score", json=body).status_code == 200
    assert len(captured.events) == 400
    lines = [encode_event(e) for e in captured.events]
    clicked = [e for e in captured.events if e.position == 0 and rng.random() < 0.3]
    lines += [json.dumps({"type": "click", "event_id": f"c-{e.impression_id}", "ts": e.ts + 1.0,
                          "impression_id": e.impression_id}).encode() for e in clicked]
    log = tmp_path / "served.jsonl"
    log.write_bytes(b"\n".join(lines) + b"\n")
    assert main(["evaluate", str(log), "--model", "served", "--db", db, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["used"] == 200 and out["excluded"]["slate_position"] == 200
    assert out["logging"]["value"] == pytest.approx(len(clicked) / 200)
    assert out["ips"]["value"] == pytest.approx(out["logging"]["value"], rel=1e-12)
    assert out["ips"]["ess"] == pytest.approx(200.0)
