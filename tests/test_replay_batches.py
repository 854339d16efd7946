"""Replay applies the learner's updates in batches (``LearnerSink.batch``): bit for bit the same."""

import pytest

from banditloop.core.features import FeatureSpec
from banditloop.core.reward import RewardSpec
from banditloop.pipeline.model import ModelConfig
from banditloop.pipeline.replay import ReplayOptions, replay_log
from banditloop.pipeline.simulate import SimulationOptions, simulate
from banditloop.simulators.world import WorldConfig
from tests.helpers import assert_states_equal


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    path = tmp_path_factory.mktemp("batches") / "events.jsonl"
    config = ModelConfig("random", features=FeatureSpec(dim=6))
    simulate(WorldConfig(arms=6, dim=5, seed=5, click_delay_mean=30.0, conversion_rate=0.3), config, "sim", None,
             SimulationOptions(steps=3000, out=path, quiet=True))
    return path


@pytest.mark.parametrize("learner, params, extra", [
    ("diag-linucb", {}, {}),
    ("diag-linucb", {}, {"ips_clip": 5.0}),
    ("ts", {}, {}),
    ("ts", {"pending": "failure"}, {}),
    ("discounted-ts", {}, {}),
    ("linucb", {}, {"reward": RewardSpec(kind="click+value")}),
    ("hybrid-linucb", {}, {}),
    ("kl-ucb", {}, {}),
])
def test_batched_replay_learns_bit_for_bit_what_one_event_at_a_time_does(log, learner, params, extra):
    config = ModelConfig(learner, params, features=FeatureSpec(dim=7), **extra)
    states = {}
    for batch in (0, 1, 7, 1024):
        from banditloop.pipeline.checkpoints import CheckpointStore
        store = CheckpointStore("sqlite://")
        out = replay_log(log, config, "m", store, ReplayOptions(quiet=True, learn_batch=batch))
        states[batch] = (store.latest("m").state, {k: v for k, v in out.items() if "second" not in k})
        store.close()
    for batch in (1, 7, 1024):
        assert_states_equal(states[batch][0], states[0][0], rtol=0, atol=0)
        assert states[batch][1] == states[0][1]
