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
from tests.helpers import assert_states_equal, replay_interrupted

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
    run = LearningRun(model(prior_alpha=1.0, prior_beta=1.0), "m",
                      dead_letter=lambda raw, why, source: dead.append(why))
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
    # a click for a closed impression is dead-lettered: the negative learned at the close stands (with a
    # click reward the impression left the join state at its close, so the click finds no impression)
    clicks = run.join.counters["clicks"]
    assert run.process(clk(1, 109.0)) == "unmatched"
    assert ts.posterior("a") == (2.0, 2.0)
    assert len(dead) == 1 and "expired impression" in dead[0]
    assert run.join.counters["clicks"] == clicks and run.join.counters["unmatched"] == 1
    # redelivered: refused again (the impression is gone, so it is not recognised as a duplicate)
    assert run.process(clk(1, 109.0)) == "unmatched" and ts.posterior("a") == (2.0, 2.0)


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
    store = CheckpointStore(f"sqlite:///{tmp_path / 'resume.db'}")
    out = replay_interrupted(path, model(), "resumable", store, 1900, monkeypatch)
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


def test_ucb1_wait_counts_only_closed_windows():
    from banditloop.operators.ucb1 import UCB1

    learner = UCB1(c=1.0, pending="wait")
    for arm, r in (("a", 1.0), ("a", 0.0), ("b", 1.0), ("b", 0.0)):
        learner.learn_one(arm, None, r)
    before = learner.score(None, ["a", "b"])
    log_n = np.log(4.0)
    np.testing.assert_allclose(before, 0.5 + np.sqrt(2 * log_n / 2))
    for _ in range(4):
        learner.learn_impression("a")
    np.testing.assert_array_equal(learner.score(None, ["a", "b"]), before)  # pending: nothing moves
    for r in (1.0, 0.0, 0.0, 0.0):
        learner.learn_close("a", None, r)
    a, b = learner.score(None, ["a", "b"])
    assert a == pytest.approx(2 / 6 + np.sqrt(2 * np.log(8.0) / 6))
    assert b == pytest.approx(0.5 + np.sqrt(2 * np.log(8.0) / 2))
    with pytest.raises(ValueError, match="pending"):
        UCB1(pending="failure")


# -- logistic Thompson sampling --------------------------------------------------------------------
def _irls(X: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """L2-regularised logistic regression by iteratively reweighted least squares (textbook form)."""
    w = np.zeros(X.shape[1])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-X @ w))
        s = p * (1.0 - p)
        z = X @ w + (y - p) / s
        w_new = np.linalg.solve(X.T @ (s[:, None] * X) + lam * np.eye(X.shape[1]), X.T @ (s * z))
        if np.max(np.abs(w_new - w)) < 1e-14:
            return w_new
        w = w_new
    return w


def test_logistic_ts_mode_after_one_batch_is_the_l2_logistic_map():
    from sklearn.linear_model import LogisticRegression

    from banditloop.operators.logistic_ts import LogisticTS

    rng = np.random.default_rng(21)
    n, d, lam = 300, 4, 2.5
    X = np.column_stack([np.ones(n), rng.normal(size=(n, d - 1))])
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ np.array([-1.0, 1.5, -0.5, 0.0]))))).astype(float)
    learner = LogisticTS(dim=d, prior_precision=lam, update_every=n)
    for i in range(n):
        learner.learn_one("a", X[i], float(y[i]))
        if i < n - 1:  # nothing is learned before the batch is complete
            np.testing.assert_array_equal(learner.posterior("a")[0], np.zeros(d))
    m, q = learner.posterior("a")
    expected = _irls(X, y, lam)
    np.testing.assert_allclose(m, expected, rtol=1e-10, atol=1e-12)
    sk = LogisticRegression(C=1.0 / lam, fit_intercept=False, tol=1e-12, max_iter=10_000).fit(X, y)
    np.testing.assert_allclose(m, sk.coef_[0], rtol=1e-5, atol=1e-6)
    p = 1 / (1 + np.exp(-X @ expected))
    np.testing.assert_allclose(q, lam + (X * X).T @ (p * (1 - p)), rtol=1e-10)


def test_logistic_ts_full_covariance_mode_after_one_batch_is_the_l2_logistic_map():
    from banditloop.operators.logistic_ts import LogisticTS

    rng = np.random.default_rng(22)
    n, d, lam = 300, 4, 2.5
    X = np.column_stack([np.ones(n), rng.normal(size=(n, d - 1))])
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ np.array([-1.0, 1.5, -0.5, 0.0]))))).astype(float)
    learner = LogisticTS(dim=d, prior_precision=lam, update_every=n, covariance="full", propensity_draws=0)
    for i in range(n):
        learner.learn_one("a", X[i], float(y[i]))
    m, Q = learner.posterior("a")
    expected = _irls(X, y, lam)
    np.testing.assert_allclose(m, expected, rtol=1e-10, atol=1e-12)
    p = 1 / (1 + np.exp(-X @ expected))
    np.testing.assert_allclose(Q, lam * np.eye(d) + X.T @ (X * (p * (1 - p))[:, None]), rtol=1e-10)
    x = X[0]  # draws of w·x: mean m·x, variance xᵀ Q⁻¹ x
    draws = learner._draws(x, ["a"], 20000)[:, 0]
    assert draws.mean() == pytest.approx(m @ x, abs=0.01)
    assert draws.var() == pytest.approx(x @ np.linalg.solve(Q, x), rel=0.05)
    # saved and loaded: the covariance is rebuilt from Q, not stored
    state = learner.export_state()
    assert "cov" not in state.arrays
    again = LogisticTS.from_state(state)
    np.testing.assert_allclose(again._arrays["cov"][0], np.linalg.inv(Q), rtol=1e-10)


def test_logistic_ts_full_covariance_merge_multiplies_the_gaussian_factors():
    from banditloop.operators.logistic_ts import LogisticTS

    rng = np.random.default_rng(4)
    a, b = (LogisticTS(dim=3, prior_precision=2.0, update_every=5, covariance="full", seed=s) for s in (0, 1))
    for learner in (a, b):
        for _ in range(40):
            learner.learn_one(["x", "y"][rng.integers(2)], rng.normal(size=3), float(rng.random() < 0.3))
    merged = a.merge(b)
    (ma, Qa), (mb, Qb) = a.posterior("x"), b.posterior("x")
    mm, Qm = merged.posterior("x")
    np.testing.assert_allclose(Qm, Qa + Qb - 2.0 * np.eye(3))
    np.testing.assert_allclose(mm, np.linalg.solve(Qa + Qb - 2.0 * np.eye(3), Qa @ ma + Qb @ mb))
    np.testing.assert_allclose(merged._arrays["cov"][merged.arm_index["x"]], np.linalg.inv(Qm), rtol=1e-10)
    with pytest.raises(ValueError, match="covariance"):
        LogisticTS(dim=3, covariance="banded")


def test_logistic_ts_learns_positives_on_arrival_and_negatives_at_the_close():
    from banditloop.operators.logistic_ts import LogisticTS

    x = np.array([1.0, 0.5])
    learner = LogisticTS(dim=2, prior_precision=1.0)
    learner.learn_impression("a", x)
    learner.learn_impression("a", x)
    np.testing.assert_array_equal(learner.posterior("a")[0], 0.0)  # pending: no failure learned
    learner.learn_reward("a", x, 1.0)
    after_click = learner.posterior("a")[0]
    assert after_click @ x > 0
    learner.learn_close("a", x, 1.0)  # its window closes: nothing more to learn
    np.testing.assert_array_equal(learner.posterior("a")[0], after_click)
    learner.learn_close("a", x, 0.0)  # the other one closes without a click: a negative
    reference = LogisticTS(dim=2, prior_precision=1.0)
    reference.learn_one("a", x, 1.0)
    reference.learn_one("a", x, 0.0)
    np.testing.assert_allclose(learner.posterior("a")[0], reference.posterior("a")[0])


def test_logistic_ts_merge_multiplies_the_gaussian_factors():
    from banditloop.operators.logistic_ts import LogisticTS

    rng = np.random.default_rng(3)
    a, b = (LogisticTS(dim=3, prior_precision=2.0, update_every=5, seed=s) for s in (0, 1))
    for learner, arms in ((a, ["x", "y"]), (b, ["x", "z"])):
        for _ in range(40):
            learner.learn_one(arms[rng.integers(2)], rng.normal(size=3), float(rng.random() < 0.3))
    a.learn_one("x", np.ones(3), 1.0)  # something still buffered in a
    buffered = LogisticTS.from_state(a.export_state())
    buffered.flush()
    merged = a.merge(b)
    (ma, qa), (mb, qb) = buffered.posterior("x"), b.posterior("x")
    mm, qm = merged.posterior("x")
    np.testing.assert_allclose(qm, qa + qb - 2.0)
    np.testing.assert_allclose(mm, (qa * ma + qb * mb) / (qa + qb - 2.0))
    for arm, source in (("y", buffered), ("z", b)):  # an arm of one shard keeps its posterior
        np.testing.assert_allclose(merged.posterior(arm)[0], source.posterior(arm)[0])
        np.testing.assert_allclose(merged.posterior(arm)[1], source.posterior(arm)[1])
    assert int(a.export_state().arrays["buffered"][0]) == 1  # the inputs are unchanged


# -- per-arm priors and warm start ----------------------------------------------------------------------
def test_per_arm_priors_and_warm_start_from_another_model():
    from banditloop.operators.beta_ts import BetaTS, priors_from_state

    old = BetaTS(seed=3)
    rng = np.random.default_rng(8)
    for _ in range(400):
        arm = ["a", "b"][rng.integers(2)]
        old.learn_one(arm, None, float(rng.random() < (0.3 if arm == "a" else 0.1)))
    priors = priors_from_state(old.export_state(), strength=20.0)
    for arm in ("a", "b"):
        a, b = old.posterior(arm)
        assert priors[arm] == pytest.approx([20 * a / (a + b), 20 * b / (a + b)])
    new = BetaTS(prior_alpha=1.0, prior_beta=3.0, arm_priors=priors)
    assert new.params()["arm_priors"] == priors
    new.learn_one("a", None, 1.0)
    assert new.posterior("a") == pytest.approx((priors["a"][0] + 1.0, priors["a"][1]))
    new.learn_one("c", None, 0.0)  # an arm without its own prior gets the global one
    assert new.posterior("c") == (1.0, 4.0)
    restored = BetaTS.from_state(new.export_state())
    assert restored.posterior("a") == new.posterior("a") and restored.posterior("c") == new.posterior("c")
    other = BetaTS(prior_alpha=1.0, prior_beta=3.0, arm_priors=priors, seed=1)
    other.learn_one("b", None, 1.0)
    merged = new.merge(other)
    assert merged.posterior("b") == pytest.approx((priors["b"][0] + 1.0, priors["b"][1]))
    assert merged.posterior("a") == pytest.approx(new.posterior("a"))
    with pytest.raises(ValueError):
        BetaTS(arm_priors={"a": [1.0, -1.0]})


def test_count_learner_states_saved_before_windows_closed_still_load():
    from banditloop.core.state_codec import LearnerState
    from banditloop.operators.ucb1 import UCB1

    learner = UCB1()
    for arm, r in (("a", 1.0), ("a", 0.0), ("b", 0.0)):
        learner.learn_one(arm, None, r)
    state = learner.export_state()
    old = LearnerState(kind=state.kind, params=state.params, arms=state.arms, retired=state.retired,
                       arrays={k: v for k, v in state.arrays.items() if k in ("n", "reward_sum")},
                       counters=state.counters, rng=state.rng)
    restored = UCB1.from_state(old)
    np.testing.assert_array_equal(restored.score(None, ["a", "b"]), learner.score(None, ["a", "b"]))


def test_beta_ts_states_saved_before_pending_modes_resume_in_the_failure_mode():
    from banditloop.core.state_codec import LearnerState
    from banditloop.operators.beta_ts import BetaTS

    state = BetaTS(pending="failure").export_state()
    old = LearnerState(kind="ts", params={k: v for k, v in state.params.items()
                                          if k in ("dim", "seed", "prior_alpha", "prior_beta", "propensity_draws")},
                       arms=state.arms, retired=state.retired, arrays=state.arrays, counters=state.counters,
                       rng=state.rng)
    restored = BetaTS.from_state(old)
    assert restored.pending == "failure" and not restored.learns_at_close
    assert BetaTS.from_state(BetaTS().export_state()).pending == "wait"
