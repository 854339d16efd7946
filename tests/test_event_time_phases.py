"""``dfm``'s ``phases``: each pending impression learns its elapsed time every ``tick`` seconds on its own
grid (every ``phases``-th point of a grid of ``tick / phases``), so the ticks' bursts are spread out;
computed by hand, and batched, restored mid-stream and delay-features runs equal their references."""

import numpy as np
import pytest

from banditloop.core.events import Conversion, Impression
from banditloop.core.features import FeatureSpec, dense_names
from banditloop.core.reward import RewardSpec
from banditloop.operators.dfm import DelayedFeedbackModel
from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.pipeline.event_time import EventTimeSink
from banditloop.pipeline.join import JoinConfig
from banditloop.pipeline.model import ModelConfig
from banditloop.pipeline.replay import ReplayOptions, replay_log
from banditloop.pipeline.runner import LearningRun
from banditloop.pipeline.simulate import SimulationOptions, simulate
from banditloop.simulators.world import WorldConfig
from tests.helpers import assert_states_equal, replay_interrupted

H = 3600.0
DIM = 2


def config(tick=H, **params):
    return ModelConfig("dfm", {"tick": tick, **params}, reward=RewardSpec("conversion"),
                       features=FeatureSpec(dim=DIM + 1, numeric=dense_names("x", DIM)),
                       join=JoinConfig(click_window=600.0, conversion_window=4 * H, allowed_lateness=0.0,
                                       clock_skew=0.0))


def imp(i, ts):
    return Impression(event_id=f"e{i}", ts=ts, impression_id=f"i{i}", arm="a", context={"x0": 0.5, "x1": -1.0})


def test_phases_spread_the_ticks_by_hand():
    run = LearningRun(config(phases=4), "m")  # sub-grid of 900 s; each impression every 3600 s from its first
    assert isinstance(run.sink, EventTimeSink) and run.sink.step == 900.0
    run.sink.record = True
    run.process(imp(1, 1000.0))   # sub-grid slot 1: its own grid is slots 5, 9, 13, 17 (window ends 15400)
    run.process(imp(2, 2000.0))   # slot 2: 6, 10, ...
    run.process(Conversion(event_id="c2", ts=7000.0, impression_id="i2"))
    run.join.advance(20000.0)
    assert run.sink.learned == [
        ("elapsed", 0.0, 3500.0),         # 4500: i1
        ("elapsed", 0.0, 3400.0),         # 5400: i2
        ("conversion", 5000.0, 3400.0),   # i2 at 7000, last seen at its own 5400
        ("elapsed", 3500.0, 7100.0),      # 8100: i1
        ("elapsed", 7100.0, 10700.0),     # 11700: i1
        ("elapsed", 10700.0, 14300.0),    # 15300: i1
        ("close", 14300.0, 4 * H),        # i1's window ends at 15400
    ]
    # phases = 1 is the common grid of every impression (as before the option)
    one = LearningRun(config(), "m")
    one.sink.record = True
    one.process(imp(1, 1000.0))
    one.join.advance(20000.0)
    assert one.sink.learned[:2] == [("elapsed", 0.0, 2600.0), ("elapsed", 2600.0, 6200.0)]


def test_bad_phases_are_refused():
    for bad in (0, 1.5, -2, True):
        with pytest.raises(ValueError, match="phases"):
            DelayedFeedbackModel(dim=1, phases=bad)
    assert DelayedFeedbackModel(dim=1, phases=3.0).phases == 3


@pytest.fixture(scope="module")
def conversion_log(tmp_path_factory):
    path = tmp_path_factory.mktemp("conv") / "events.jsonl"
    world = WorldConfig(arms=3, dim=DIM, seed=5, base_ctr=0.3, conversion_rate=0.4, conversion_delay_mean=H,
                        click_delay_mean=30.0, rate=1 / 60.0, reward=RewardSpec("conversion"))
    simulate(world, config(), "sim", None, SimulationOptions(steps=800, out=path, quiet=True))
    return path


PARAMS = {"phases": 6, "delay_features": "bias"}


def test_phases_batched_and_restored_runs_equal_the_whole(conversion_log, tmp_path, monkeypatch):
    store = CheckpointStore(f"sqlite:///{tmp_path / 'p.db'}")
    out = {}
    for batch in (0, 64):
        replay_log(conversion_log, config(**PARAMS), f"b{batch}", store, ReplayOptions(quiet=True, learn_batch=batch))
        out[batch] = store.latest(f"b{batch}").state
    assert out[0].counters["rewards"] > 10 and out[0].params["phases"] == 6
    assert_states_equal(out[64], out[0], rtol=0, atol=0)
    out = replay_interrupted(conversion_log, config(**PARAMS), "cut", store, 501, monkeypatch)
    assert out["resumed_from_event"] == 501
    assert_states_equal(store.latest("cut").state, store.latest("b0").state, rtol=0, atol=0)
    # it learned something else than the common grid
    replay_log(conversion_log, config(delay_features="bias"), "common", store, ReplayOptions(quiet=True))
    assert not np.array_equal(store.latest("common").state.arrays["z"], store.latest("b0").state.arrays["z"])
