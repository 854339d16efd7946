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
