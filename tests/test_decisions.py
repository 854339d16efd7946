"""Pending-feedback semantics: what a learner learns when an impression is seen, when its feedback
arrives and when its window closes, through the join and sink that replay, simulation and live
consumption share; and that replay equals the simulation (and a resumed replay) under them."""

from __future__ import annotations

import numpy as np
import pytest

from banditloop.core.events import Click, Impression
from banditloop.core.features import FeatureSpec, dense_names
from banditloop.core.reward import RewardSpec
from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.pipeline.join import JoinConfig
from banditloop.pipeline.model import ModelConfig
from banditloop.pipeline.replay import ReplayOptions, replay_log
from banditloop.pipeline.runner import LearningRun
from banditloop.pipeline.simulate import SimulationOptions, simulate
from banditloop.simulators.world import WorldConfig
from tests.helpers import assert_states_equal

DIM = 3


def model(learner: str = "ts", reward: str = "click", **params) -> ModelConfig:
    return ModelConfig(learner=learner, learner_params=params,
                       features=FeatureSpec(dim=DIM + 1, numeric=dense_names("x", DIM)),
                       reward=RewardSpec(kind=reward),
                       join=JoinConfig(click_window=100.0, conversion_window=1000.0, allowed_lateness=0.0,
                                       clock_skew=0.0))


def imp(i: int, ts: float, arm: str = "a") -> Impression:
    return Impression(event_id=f"i{i}", ts=ts, impression_id=f"imp{i}", arm=arm,
                      context={"x0": 0.1, "x1": 0.2, "x2": 0.3})


def clk(i: int, ts: float) -> Click:
    return Click(event_id=f"c{i}", ts=ts, impression_id=f"imp{i}")


def test_a_pending_impression_is_not_a_failure_for_thompson_sampling():
    dead: list[str] = []
    run = LearningRun(model(prior_alpha=1.0, prior_beta=1.0), "m", dead_letter=lambda ev, why: dead.append(why))
    ts = run.learner
    run.process(imp(0, 0.0))
    run.process(imp(1, 10.0))
    assert ts.posterior("a") == (1.0, 1.0)  # two impressions pending: nothing learned yet
    run.process(clk(0, 50.0))
    assert ts.posterior("a") == (2.0, 1.0)  # the click is learned when it arrives
    run.process(imp(2, 105.0, arm="b"))  # watermark 105 > 0 + 100: impression 0 closes, with its click
    assert ts.posterior("a") == (2.0, 1.0)
    run.process(imp(3, 111.0, arm="b"))  # 111 > 10 + 100: impression 1 closes without a click
    assert ts.posterior("a") == (2.0, 2.0)
    assert run.join.counters["closed"] == 2
    # a click for a closed impression is late: the negative learned at the close stands
    assert run.process(clk(1, 109.0)) == "late"
    assert ts.posterior("a") == (2.0, 2.0)
    assert len(dead) == 1 and "window closed" in dead[0]


def test_legacy_failure_mode_counts_pending_impressions_as_failures():
    run = LearningRun(model(pending="failure"), "m")
    run.process(imp(0, 0.0))
    run.process(imp(1, 10.0))
    assert run.learner.posterior("a") == (1.0, 3.0)
    run.process(clk(0, 50.0))
    assert run.learner.posterior("a") == (2.0, 2.0)
    run.process(imp(2, 200.0, arm="b"))  # both windows close: nothing more to learn
    assert run.learner.posterior("a") == (2.0, 2.0)


def test_conversion_rewards_close_at_the_conversion_window():
    run = LearningRun(model(reward="conversion"), "m")
    run.process(imp(0, 0.0))
    run.process(imp(1, 500.0, arm="b"))  # past the click window, inside the conversion window
    assert run.learner.posterior("a") == (1.0, 1.0)
    run.process(imp(2, 1001.0, arm="b"))
    assert run.learner.posterior("a") == (1.0, 2.0)


def test_join_state_keeps_closed_flags_across_a_checkpoint():
    run = LearningRun(model(), "m")
    run.process(imp(0, 0.0))
    run.process(imp(1, 150.0))  # impression 0 closed (a failure), impression 1 pending
    restored = LearningRun.from_checkpoint(
        type("C", (), {"config": run.config.to_dict(), "state": run.learner.export_state(),
                       "join_state": run.join.export_state(), "counters": run.counters(), "model": "m",
                       "shard": "0", "version": 1})())
    for r in (run, restored):
        r.process(imp(2, 400.0, arm="b"))  # closes impression 1 once; impression 0 not again
        assert r.learner.posterior("a") == (1.0, 3.0)
        assert r.join.counters["closed"] == 2


@pytest.fixture(scope="module")
def ts_log(tmp_path_factory):
    """A closed loop with Thompson sampling whose windows close during the run (clicks ~20 s late,
    click window 100 s, 10 requests/s), and its log."""
    path = tmp_path_factory.mktemp("ts") / "events.jsonl"
    store = CheckpointStore(f"sqlite:///{path.parent / 'sim.db'}")
    summary = simulate(WorldConfig(arms=4, dim=DIM, seed=5, click_delay_mean=20.0, base_ctr=0.2),
                       model(), "sim", store, SimulationOptions(steps=3000, out=path, quiet=True))
    state = store.latest("sim").state
    store.close()
    return path, summary, state


def test_replay_equals_the_simulation_when_windows_close(ts_log, tmp_path):
    path, summary, sim_state = ts_log
    assert summary["clicks"] > 100
    s, f = sim_state.arrays["successes"].sum(), sim_state.arrays["failures"].sum()
    # clicks inside the window are successes; failures only for windows closed by the last event
    assert s == summary["rewarded"] and 0 < f <= summary["impressions"] - s
    store = CheckpointStore(f"sqlite:///{tmp_path / 'r.db'}")
    out = replay_log(path, model(), "replayed", store, ReplayOptions(quiet=True))
    assert out["impressions"] == summary["impressions"] and out["late"] == 0
    assert_states_equal(store.latest("replayed").state, sim_state, rtol=0, atol=0)


def test_resumed_replay_equals_one_replay_when_windows_close(ts_log, tmp_path, monkeypatch):
    path, _, sim_state = ts_log
    import banditloop.pipeline.replay as replay_module

    store = CheckpointStore(f"sqlite:///{tmp_path / 'resume.db'}")
    real_load = replay_module.load_log

    def truncated(*args, **kwargs):
        loaded = real_load(*args, **kwargs)
        loaded.events = loaded.events[:1900]
        return loaded

    monkeypatch.setattr(replay_module, "load_log", truncated)
    replay_log(path, model(), "resumable", store, ReplayOptions(quiet=True))
    monkeypatch.setattr(replay_module, "load_log", real_load)
    out = replay_log(path, model(), "resumable", store, ReplayOptions(quiet=True, resume=True))
    assert out["resumed_from_event"] == 1900
    assert_states_equal(store.latest("resumable").state, sim_state, rtol=0, atol=0)


# -- KL-UCB ----------------------------------------------------------------------------------------
def test_kl_ucb_index_solves_the_kl_equation():
    from scipy.optimize import brentq

    from banditloop.operators.kl_ucb import KLUCB, bernoulli_kl

    learner = KLUCB(c=3.0)
    plays = {"a": [1, 0, 0, 1, 1, 0, 0], "b": [0, 0, 0], "c": [1, 1], "d": [0] * 40 + [1] * 3}
    for arm, rewards in plays.items():
        for r in rewards:
            learner.learn_one(arm, None, float(r))
    t = sum(len(r) for r in plays.values())
    budget = np.log(t) + 3.0 * np.log(np.log(t))
    got = learner.score(None, list(plays))
    for i, rewards in enumerate(plays.values()):
        p, n = float(np.mean(rewards)), len(rewards)
        f = lambda q, p=p, n=n: n * float(bernoulli_kl(np.array([p]), np.array([q]))[0]) - budget  # noqa: E731
        expected = 1.0 if f(1.0 - 1e-12) <= 0 else brentq(f, p, 1.0 - 1e-12, xtol=1e-14)
        assert got[i] == pytest.approx(expected, abs=1e-9)
    assert learner.score(None, ["new"])[0] == 1.0


def test_kl_ucb_pending_semantics():
    from banditloop.operators.kl_ucb import KLUCB

    for pending in ("wait", "shrink"):
        learner = KLUCB(pending=pending)
        for arm, r in (("a", 1.0), ("a", 0.0), ("b", 0.0), ("b", 1.0), ("b", 0.0)):
            learner.learn_one(arm, None, r)
        before = learner.score(None, ["a", "b"])
        for _ in range(5):
            learner.learn_impression("a")
        during = learner.score(None, ["a", "b"])
        if pending == "wait":  # pending impressions change nothing
            np.testing.assert_array_equal(during, before)
        else:  # a's bonus shrinks with its impressions (b's grows a little with log t), a's mean stays
            assert during[0] < before[0] and during[1] > before[1]
            assert during[0] > 0.5
        for _ in range(5):
            learner.learn_close("a", None, 0.0)  # the windows close without clicks: now they count
        after = learner.score(None, ["a", "b"])
        assert after[0] < min(before[0], during[0])


def test_ucb1_pending_impressions_shrink_the_bonus_not_the_mean():
    from banditloop.operators.ucb1 import UCB1

    learner = UCB1(c=1.0)
    for arm, r in (("a", 1.0), ("a", 0.0), ("b", 1.0), ("b", 0.0)):
        learner.learn_one(arm, None, r)
    for _ in range(4):
        learner.learn_impression("a")
    a, b = learner.score(None, ["a", "b"])
    log_n = np.log(8.0)
    assert a == pytest.approx(0.5 + np.sqrt(2 * log_n / 6))  # mean of the closed impressions, 6 shown
    assert b == pytest.approx(0.5 + np.sqrt(2 * log_n / 2))
    learner.learn_reward("a", None, 1.0)  # a click arrives: learned in the mean when the window closes
    assert learner.score(None, ["a"])[0] == pytest.approx(a)
    for r in (1.0, 0.0, 0.0, 0.0):
        learner.learn_close("a", None, r)
    assert learner.score(None, ["a"])[0] == pytest.approx(2 / 6 + np.sqrt(2 * log_n / 6))
