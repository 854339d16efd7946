import json
import random

import pytest

from banditloop.core.features import FeatureSpec, dense_names
from banditloop.core.reward import RewardSpec
from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.pipeline.model import ModelConfig
from banditloop.pipeline.replay import ReplayOptions, replay_log
from banditloop.pipeline.simulate import SimulationOptions, simulate
from banditloop.simulators.world import WorldConfig
from tests.helpers import assert_states_equal, replay_interrupted

DIM = 4


def config(learner="linucb", **kw):
    return ModelConfig(learner=learner, features=FeatureSpec(dim=DIM + 1, numeric=dense_names("x", DIM)), **kw)


@pytest.fixture(scope="module")
def sim_log(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim") / "events.jsonl"
    store = CheckpointStore(f"sqlite:///{path.parent / 'sim.db'}")
    summary = simulate(WorldConfig(arms=5, dim=DIM, seed=3, click_delay_mean=50.0), config(), "sim", store,
                       SimulationOptions(steps=3000, out=path, quiet=True))
    state = store.latest("sim").state
    store.close()
    return path, summary, state


def test_simulation_beats_random_and_reports_regret(sim_log):
    _, summary, _ = sim_log
    assert summary["impressions"] == 3000 and summary["clicks"] > 0
    assert summary["expected_reward_per_step"] > summary["random_reward_per_step"]
    assert summary["regret"] == pytest.approx(3000 * (summary["oracle_reward_per_step"]
                                                      - summary["expected_reward_per_step"]))


def test_replay_of_the_simulated_log_equals_the_simulation(sim_log, tmp_path):
    path, summary, sim_state = sim_log
    store = CheckpointStore(f"sqlite:///{tmp_path / 'r.db'}")
    out = replay_log(path, config(), "replayed", store, ReplayOptions(quiet=True))
    assert (out["impressions"], out["clicks"], out["conversions"], out["ignored"]) == (
        summary["impressions"], summary["clicks"], summary["conversions"], summary["ignored"])
    assert out["invalid"] == out["duplicates"] == out["unmatched"] == 0
    assert_states_equal(store.latest("replayed").state, sim_state, rtol=0, atol=0)


def test_file_order_duplicates_and_garbage_do_not_change_what_is_learned(sim_log, tmp_path):
    path, _, sim_state = sim_log
    lines = path.read_text().splitlines()
    rng = random.Random(0)
    copies = rng.sample(lines, 300)
    messy = lines + copies + ["{broken", '{"type":"click"}', ""]
    rng.shuffle(messy)
    messy_path = tmp_path / "messy.jsonl"
    messy_path.write_text("\n".join(messy) + "\n")
    store = CheckpointStore(f"sqlite:///{tmp_path / 'm.db'}")
    dead = tmp_path / "dead.jsonl"
    out = replay_log(messy_path, config(), "messy", store, ReplayOptions(quiet=True, dead_letters=dead))
    # a click reward ignores conversions (counted, not joined): their copies are ignored, not duplicates
    conversions = sum(json.loads(line)["type"] == "conversion" for line in lines)
    copied_conversions = sum(json.loads(line)["type"] == "conversion" for line in copies)
    assert conversions > 0 and copied_conversions > 0
    assert out["invalid"] == 2 and out["duplicates"] == 300 - copied_conversions
    assert out["ignored"] == conversions + copied_conversions and out["conversions"] == 0
    # floats summed in another order: equal to rounding
    assert_states_equal(store.latest("messy").state, sim_state, rtol=1e-12, atol=1e-12)
    reasons = [json.loads(line)["reason"] for line in dead.read_text().splitlines()]
    assert len(reasons) == 2 and all(r.startswith(("not JSON", "schema")) for r in reasons)


def test_same_log_same_parameters_every_time(sim_log, tmp_path):
    path, _, _ = sim_log
    store = CheckpointStore(f"sqlite:///{tmp_path / 'd.db'}")
    for name in ("a", "b"):
        replay_log(path, config("ts"), name, store, ReplayOptions(quiet=True))
    assert_states_equal(store.latest("a").state, store.latest("b").state, rtol=0, atol=0)


def test_resume_continues_where_the_checkpoint_stopped(sim_log, tmp_path, monkeypatch):
    path, _, sim_state = sim_log
    store = CheckpointStore(f"sqlite:///{tmp_path / 'resume.db'}")
    # first run: stop after a mid-way checkpoint by truncating the event list
    out = replay_interrupted(path, config(), "resumable", store, 1700, monkeypatch)
    assert out["resumed_from_event"] == 1700
    assert_states_equal(store.latest("resumable").state, sim_state, rtol=1e-12, atol=1e-12)


def test_checkpoints_in_postgres(sim_log, postgres_url):
    path, _, sim_state = sim_log
    store = CheckpointStore(postgres_url)
    cfg = config(reward=RewardSpec(kind="click"))
    out = replay_log(path, cfg, "pg-model", store, ReplayOptions(quiet=True))
    assert out["version"] == 1
    cp = store.latest("pg-model")
    assert cp.source["events"] == out["events"] and cp.config == cfg.to_dict()
    assert_states_equal(cp.state, sim_state, rtol=0, atol=0)
    assert [m.model for m in store.models()] == ["pg-model"]
    store.close()
