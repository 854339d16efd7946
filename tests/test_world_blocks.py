"""The world drawn in blocks: the same requests and outcomes whatever the block size, accessors that
answer for the last request, and the array paths of ``simulate`` equal to their per-step versions."""

from __future__ import annotations

import numpy as np
import pytest

from banditloop.core.features import FeatureSpec, dense_names
from banditloop.pipeline.model import ModelConfig, Vectorizer
from banditloop.pipeline.simulate import RegretTracker, _dense_context
from banditloop.simulators.stream import draw_stream
from banditloop.simulators.world import World, WorldConfig

CONFIGS = [
    WorldConfig(arms=5, dim=4, seed=7, drift=0.01, churn=0.01, candidates=3),
    WorldConfig(arms=6, dim=3, seed=2, churn=0.05, conversion_rate=0.5, click_delay_mean=5.0),
    WorldConfig(arms=30, dim=2, seed=1, arm_means=(2.0, 6.0), drift=0.02, churn=0.002),
    WorldConfig(arms=3, dim=2, seed=3, arm_probabilities=(0.5, 0.4, 0.4), change_points=((5, 0, 0.1), (40, 2, 0.9)),
                feedback_batch=4, rate=2.0),
]


def _world(cfg: WorldConfig, block: int | None) -> World:
    world = World(cfg)
    if block is not None:
        world._block_steps = block
    return world


@pytest.mark.parametrize("cfg", CONFIGS, ids=range(len(CONFIGS)))
def test_block_size_changes_nothing(cfg):
    one, some, default = _world(cfg, 1), _world(cfg, 7), _world(cfg, None)
    for _ in range(300):
        reqs = [w.next_request() for w in (one, some, default)]
        for req in reqs[1:]:
            assert (req.context, req.candidates, req.ts, req.retired, req.added, req.arm_features) == (
                reqs[0].context, reqs[0].candidates, reqs[0].ts, reqs[0].retired, reqs[0].added, reqs[0].arm_features)
            assert np.array_equal(req.realized_rewards(), reqs[0].realized_rewards())
            assert np.allclose(req.expected_rewards(), reqs[0].expected_rewards(), rtol=1e-14, atol=0)
        arm = reqs[0].candidates[-1]
        outcomes = [w.respond(r, arm, propensity=0.5) for w, r in zip((one, some, default), reqs, strict=True)]
        assert outcomes[0].events == outcomes[1].events == outcomes[2].events
        # the accessors answer for the last request, although a block was drawn ahead
        assert one.active_arms == some.active_arms == default.active_arms
        assert one.retired_arms == some.retired_arms == default.retired_arms
        for a in one.active_arms[:2]:
            assert np.array_equal(one.theta(a), default.theta(a)) and one.arm_bias(a) == default.arm_bias(a)
            assert one.arm_features(a) == some.arm_features(a)
            x = np.ones(cfg.dim)
            assert one.click_probability(x, a) == pytest.approx(default.click_probability(x, a), rel=1e-14)


def test_stream_is_the_world_in_blocks():
    cfg = CONFIGS[0]
    world = _world(cfg, 1)
    stream = draw_stream(cfg, 2_100)
    for t in range(2_100):
        req = world.next_request()
        assert [stream.arms[i] for i in stream.candidates[t]] == req.candidates
        assert np.array_equal(stream.X[t], req.x) and np.array_equal(stream.rewards[t], req.realized_rewards())
    retired = [stream.arms[a] for _, a in stream.retirements]
    assert retired == world.retired_arms


def test_tracker_arrays_add_as_steps():
    rng = np.random.default_rng(0)
    cols = rng.random((4, 1_000))
    one, many = RegretTracker(every=7), RegretTracker(every=7)
    for t in range(1_000):
        one.add(*cols[:, t])
        if (t + 1) % 7 == 0:
            one.curve.append((t + 1, one.regret, one.reward / (t + 1)))
    many.add_steps(*cols[:, :333])
    many.add_steps(*cols[:, 333:])
    assert one.summary() == many.summary() and one.curve == many.curve


@pytest.mark.parametrize("spec", [
    FeatureSpec(dim=5, numeric=dense_names("x", 4)),
    FeatureSpec(dim=9, numeric=dense_names("x", 4)),  # hashed slots stay zero
    FeatureSpec(dim=6, numeric=("age", *reversed(dense_names("x", 4))), bias=False),
])
def test_dense_contexts_equal_the_featurizer(spec):
    cfg = WorldConfig(arms=3, dim=4, seed=0)
    config = ModelConfig("linucb", features=spec)
    template, slots = _dense_context(config, cfg)
    vectorizer = Vectorizer(config)
    world = World(cfg)
    for _ in range(50):
        req = world.next_request()
        x = template.copy()
        x[slots] = req.x
        assert np.array_equal(x, vectorizer.x(req.context))
    assert _dense_context(ModelConfig("linucb", features=FeatureSpec(dim=8, numeric=("x0",))), cfg) is None


def test_micro_batched_simulation_replays_to_the_same_model(tmp_path):
    """``batch``: choices of 8 requests scored together with frozen parameters; the log still replays
    to the very same parameters, and the regret stays that of a learning policy."""
    from banditloop.pipeline.checkpoints import CheckpointStore
    from banditloop.pipeline.replay import ReplayOptions, replay_log
    from banditloop.pipeline.simulate import SimulationOptions, simulate
    from tests.helpers import assert_states_equal

    config = ModelConfig("linucb", features=FeatureSpec(dim=5, numeric=dense_names("x", 4)))
    world = WorldConfig(arms=5, dim=4, seed=3, click_delay_mean=50.0, churn=0.001)
    store = CheckpointStore(f"sqlite:///{tmp_path / 's.db'}")
    summary = simulate(world, config, "sim", store,
                       SimulationOptions(steps=3000, out=tmp_path / "log.jsonl", quiet=True, batch=8))
    replay_log(tmp_path / "log.jsonl", config, "replayed", store, ReplayOptions(quiet=True))
    assert_states_equal(store.latest("replayed").state, store.latest("sim").state, rtol=0, atol=0)
    store.close()
    single = simulate(world, config, "single", None, SimulationOptions(steps=3000, quiet=True))
    assert summary["impressions"] == 3000
    assert summary["random_regret"] == single["random_regret"]  # the same world
    assert summary["regret"] < 0.85 * summary["random_regret"]
    assert abs(summary["regret"] - single["regret"]) < 0.25 * single["regret"], (summary["regret"], single["regret"])
