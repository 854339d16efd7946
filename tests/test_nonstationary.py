"""The simulator's literature settings (batched feedback, context-free Bernoulli arms, change points)."""

from __future__ import annotations

import numpy as np
import pytest

from banditloop.core.events import Impression
from banditloop.core.features import FeatureSpec, dense_names
from banditloop.operators.registry import make_learner
from banditloop.pipeline.join import JoinConfig
from banditloop.pipeline.model import ModelConfig
from banditloop.pipeline.simulate import SimulationOptions, simulate
from banditloop.simulators.world import World, WorldConfig


def test_context_free_arms_from_beta_ignore_the_context():
    world = World(WorldConfig(arms=400, dim=3, seed=1, arm_means=(2.0, 6.0)))
    reqs = world.requests(3)
    p = [r.truth.p_click for r in reqs]
    np.testing.assert_allclose(p[0], p[1])
    np.testing.assert_allclose(p[0], p[2])
    assert abs(p[0].mean() - 0.25) < 0.02  # Beta(2, 6) has mean 1/4
    assert abs(p[0].std() - np.sqrt(2 * 6 / (64 * 9))) < 0.02


def test_fixed_probabilities_and_a_change_point():
    probs = (0.5, 0.4, 0.4)
    world = World(WorldConfig(arms=3, dim=2, seed=2, arm_probabilities=probs, change_points=((5, 0, 0.1),)))
    reqs = world.requests(8)
    for r in reqs[:5]:
        np.testing.assert_allclose(r.truth.p_click, probs)
        assert r.oracle_arm == r.candidates[0]
    for r in reqs[5:]:
        np.testing.assert_allclose(r.truth.p_click, (0.1, 0.4, 0.4))
        assert r.oracle_expected_reward == pytest.approx(0.4)


def test_batched_feedback_timestamps():
    world = World(WorldConfig(arms=3, dim=2, seed=3, base_ctr=0.5, feedback_batch=4, rate=2.0))
    reqs = world.requests(12)
    assert [r.ts - reqs[0].ts for r in reqs] == [0.0] * 4 + [2.0] * 4 + [4.0] * 4
    for r in reqs:
        out = world.respond(r, r.candidates[0])
        if out.click is not None:
            assert out.click.ts == r.ts + 1.0  # half a batch later, before the next batch


def test_simulated_batches_are_learned_at_their_end():
    """Through the join (pending impressions wait, windows close between batches), Thompson sampling
    makes exactly the decisions of a learner that learns each batch with ``learn_batch`` at its end."""
    delta, steps = 25, 600
    cfg = WorldConfig(arms=4, dim=1, seed=4, arm_probabilities=(0.3, 0.5, 0.45, 0.2), feedback_batch=delta)
    window = cfg.feedback_batch_window
    model = ModelConfig(learner="ts", features=FeatureSpec(dim=2, numeric=dense_names("x", 1)),
                        join=JoinConfig(click_window=window, conversion_window=window, allowed_lateness=0.0,
                                        clock_skew=0.0))
    chosen: list[str] = []
    simulate(cfg, model, "batched", None, SimulationOptions(
        steps=steps, quiet=True, on_event=lambda e: chosen.append(e.arm) if isinstance(e, Impression) else None))
    world = World(cfg)
    learner = make_learner("ts", 2, seed=0)
    reference: list[str] = []
    batch: list[tuple[str, float]] = []
    for step in range(steps):
        req = world.next_request()
        arm = learner.choose(np.array([1.0, req.x[0]]), req.candidates).arm
        reference.append(arm)
        batch.append((arm, world.respond(req, arm).reward))
        if (step + 1) % delta == 0:
            learner.learn_batch([a for a, _ in batch], None, np.array([r for _, r in batch]))
            batch = []
    assert chosen == reference
    assert chosen[-200:].count("a3") < 20  # and it learned something: the worst arm (0.2) is left


def test_pending_failure_semantics_costs_regret_under_batched_feedback():
    cfg = WorldConfig(arms=5, dim=1, seed=5, arm_probabilities=(0.5, 0.4, 0.4, 0.4, 0.4), feedback_batch=200)
    window = cfg.feedback_batch_window
    out = {}
    for pending in ("wait", "failure"):
        model = ModelConfig(learner="ts", learner_params={"pending": pending, "propensity_draws": 0},
                            features=FeatureSpec(dim=2, numeric=dense_names("x", 1)),
                            join=JoinConfig(click_window=window, conversion_window=window, allowed_lateness=0.0,
                                            clock_skew=0.0))
        out[pending] = simulate(cfg, model, pending, None, SimulationOptions(steps=6000, quiet=True))["regret"]
    assert out["wait"] < 0.7 * out["failure"]


# -- forgetting -------------------------------------------------------------------------------------
@pytest.mark.parametrize("gamma", [0.9, 0.99])
def test_discounted_ts_forgets_at_the_documented_rate(gamma):
    """The outcome learned k outcomes ago weighs γᵏ (k ≥ 1), whichever arm the later outcomes are for
    and whether they come one by one, in a batch or through impression / click / close."""
    one, batch, joined = (make_learner("discounted-ts", 1, discount=gamma, prior_alpha=1.0, prior_beta=1.0)
                          for _ in range(3))
    rewards = [1.0] + [0.0, 1.0] * 10
    arms = ["a"] + ["b", "c"] * 10
    for arm, r in zip(arms, rewards, strict=True):
        one.learn_one(arm, None, r)
        joined.learn_impression(arm)
        if r:
            joined.learn_reward(arm, None, r)
        joined.learn_close(arm, None, r)
    batch.learn_batch(arms, None, np.array(rewards))
    k = len(arms)
    for learner in (one, batch, joined):
        assert learner.posterior("a") == pytest.approx((1.0 + gamma**k, 1.0), rel=1e-12)
        b_failures = sum(gamma ** (k - i) for i in range(1, k, 2))
        assert learner.posterior("b") == pytest.approx((1.0, 1.0 + b_failures), rel=1e-12)


def test_discounted_ucb_forgets_at_the_documented_rate():
    learner = make_learner("discounted-ucb", 1, discount=0.9)
    learner.learn_one("a", None, 1.0)
    for _ in range(9):
        learner.learn_one("b", None, 0.0)
    assert learner.counts("a") == pytest.approx((0.9**10, 0.9**10), rel=1e-12)
    n_b = sum(0.9**k for k in range(1, 10))
    assert learner.counts("b") == pytest.approx((n_b, 0.0), rel=1e-12)
    # the mean of a is still 1, and its bonus has grown back: it is played again
    assert learner.choose(None, ["a", "b"]).arm == "a"


def _play(kind: str, world: World, steps: int, **params) -> list[str]:
    learner = make_learner(kind, 1, seed=1, **params)
    chosen = []
    for _ in range(steps):
        req = world.next_request()
        arm = learner.choose(None, req.candidates).arm
        learner.learn_one(arm, None, world.respond(req, arm).reward)
        chosen.append(arm)
    return chosen


@pytest.mark.parametrize(("kind", "params"), [("discounted-ts", {"discount": 0.99, "propensity_draws": 0}),
                                              ("discounted-ucb", {"discount": 0.99, "c": 0.5})])
def test_discounted_learners_follow_a_change_point(kind, params):
    """Arm a0 is the better one until step 3000, then much the worse: the discounted learner moves to
    a1 within a few hundred steps, the stationary one is still showing a0 long after."""
    cfg = WorldConfig(arms=2, dim=1, seed=9, arm_probabilities=(0.6, 0.4), change_points=((3000, 0, 0.2),))
    stationary = {"discounted-ts": ("ts", {"propensity_draws": 0}), "discounted-ucb": ("ucb1", {"c": 0.5})}[kind]
    moving = _play(kind, World(cfg), 4000, **params)
    still = _play(stationary[0], World(cfg), 4000, **stationary[1])
    assert moving[2500:3000].count("a0") > 400  # before the change both found a0
    assert moving[3500:].count("a1") > 400
    assert still[3000:3500].count("a0") > moving[3000:3500].count("a0") + 100


def test_discounted_linucb_is_the_weighted_ridge_of_russac_et_al():
    """V = λI + Σ γᵏxxᵀ, Ṽ = λI + Σ γ²ᵏxxᵀ, b = Σ γᵏ r x (k: outcomes learned since), score
    θ·x + α sqrt(xᵀV⁻¹ṼV⁻¹x) with θ = V⁻¹b; one by one, in a batch, or impression / reward / close."""
    rng = np.random.default_rng(12)
    d, gamma, lam, alpha = 3, 0.95, 0.7, 0.4
    X = rng.normal(size=(60, d))
    arms = [f"a{i}" for i in rng.integers(2, size=60)]
    r = (rng.random(60) < 0.4).astype(float)
    one, batch, joined = (make_learner("discounted-linucb", d, discount=gamma, ridge=lam, alpha=alpha)
                          for _ in range(3))
    for i in range(60):
        one.learn_one(arms[i], X[i], r[i])
        joined.learn_impression(arms[i], X[i])
    for i in range(60):  # the windows close in order, after all impressions
        if r[i]:
            joined.learn_reward(arms[i], X[i], r[i])
        joined.learn_close(arms[i], X[i], r[i])
    batch.learn_batch(arms, X, r)
    probe = rng.normal(size=d)
    for arm in ("a0", "a1"):
        idx = [i for i in range(60) if arms[i] == arm]
        k = np.array([60 - i for i in idx], dtype=float)
        V = lam * np.eye(d) + (X[idx].T * gamma**k) @ X[idx]
        V2 = lam * np.eye(d) + (X[idx].T * gamma ** (2 * k)) @ X[idx]
        b = (gamma**k * r[idx]) @ X[idx]
        Vinv = np.linalg.inv(V)
        expected = Vinv @ b @ probe + alpha * np.sqrt(probe @ Vinv @ V2 @ Vinv @ probe)
        for learner in (one, batch, joined):
            assert learner.score(probe, [arm])[0] == pytest.approx(expected, rel=1e-9)


def test_simulate_command_expresses_the_literature_settings(tmp_path):
    """``simulate --feedback-batch --arm-probabilities --change-point`` end to end: Thompson sampling
    learns each batch through the join (windows closed between batches), beats the old scheme."""
    import json
    import subprocess
    import sys

    def run(*extra: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "banditloop.cli", "simulate", "--policy", "ts", "--arms", "3",
                              "--dim", "1", "--steps", "3000", "--arm-probabilities", "0.5", "0.4", "0.4",
                              "--feedback-batch", "300", "--change-point", "2000:0:0.1", "--no-checkpoint",
                              "--json", *extra], cwd=tmp_path, capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    wait, failure = run(), run("--param", "pending=failure")
    assert wait["impressions"] == 3000 and wait["rewarded"] == wait["clicks"] > 0
    assert wait["oracle_reward_per_step"] == pytest.approx((2000 * 0.5 + 1000 * 0.4) / 3000)
    assert wait["regret"] < failure["regret"]
