"""The delayed-feedback models learn event times through the join (``banditloop.pipeline.event_time``):
conversion delays, elapsed times at ticks on the event-time grid, the close, ESMM's click labels."""

import numpy as np
import pytest

from banditloop.core.events import Click, Conversion, Impression
from banditloop.core.features import FeatureSpec, dense_names
from banditloop.core.reward import RewardSpec
from banditloop.operators.dfm import DelayedFeedbackModel
from banditloop.operators.esmm import ESMM
from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.pipeline.event_time import EventTimeSink
from banditloop.pipeline.join import JoinConfig
from banditloop.pipeline.model import LearnerSink, ModelConfig
from banditloop.pipeline.replay import ReplayOptions, replay_log
from banditloop.pipeline.runner import LearningRun
from banditloop.pipeline.simulate import SimulationOptions, simulate
from banditloop.simulators.world import WorldConfig
from tests.helpers import assert_states_equal, replay_interrupted

H = 3600.0
DIM = 2


def config(learner="dfm", tick=H, click_window=600.0, conversion_window=4 * H, **params):
    return ModelConfig(learner, {"tick": tick, **params}, reward=RewardSpec("conversion"),
                       features=FeatureSpec(dim=DIM + 1, numeric=dense_names("x", DIM)),
                       join=JoinConfig(click_window=click_window, conversion_window=conversion_window,
                                       allowed_lateness=0.0, clock_skew=0.0))


def recording(cfg):
    run = LearningRun(cfg, "m")
    assert isinstance(run.sink, EventTimeSink) and run.join.tick == cfg.learner_params["tick"]
    run.sink.record = True
    return run


def imp(i, ts, arm="a"):
    return Impression(event_id=f"e{i}", ts=ts, impression_id=f"i{i}", arm=arm, context={"x0": 0.5, "x1": -1.0})


def test_ticks_conversion_and_close_by_hand():
    run = recording(config())
    run.process(imp(1, 1800.0))
    run.process(imp(2, 5000.0))
    run.process(Conversion(event_id="c1", ts=9000.0, impression_id="i1"))
    run.join.advance(19401.0)  # i2's window (4 h) ends at 19400
    assert run.sink.learned == [
        ("elapsed", 0.0, 1800.0),                                  # 3600: i1 (i2 not shown yet)
        ("elapsed", 1800.0, 5400.0), ("elapsed", 0.0, 2200.0),     # 7200: i1, i2
        ("conversion", 7200.0, 5400.0),                            # i1 at 9000, last seen at 7200
        ("elapsed", 2200.0, 5800.0),                               # 10800: i2 only (i1 converted)
        ("elapsed", 5800.0, 9400.0), ("elapsed", 9400.0, 13000.0),  # 14400, 18000
        ("close", 13000.0, 4 * H),                                 # 19400: the final elapsed = window
    ]
    assert run.counters()["closed"] == 2 and run.learner.counters["rewards"] == 1.0


def test_the_pipeline_makes_the_calls_a_direct_driver_would():
    run = LearningRun(config(), "m")
    for i, ts in enumerate((100.0, 200.0, 4000.0)):
        run.process(imp(i, ts, arm=f"a{i % 2}"))
    run.process(Conversion(event_id="c", ts=5000.0, impression_id="i1"))
    run.join.advance(30000.0)
    x = run.vectorizer.x({"x0": 0.5, "x1": -1.0})
    m = DelayedFeedbackModel(dim=DIM + 1, tick=H, delay_prior=4 * H / 7, window=4 * H)  # the join's window's
    for i in range(3):
        m.learn_impression(f"a{i % 2}", x)
    m.learn_elapsed_batch(["a0", "a1"], np.array([x, x]), np.zeros(2), np.array([3500.0, 3400.0]))
    m.learn_reward("a1", x, 1.0)
    m.learn_conversion("a1", x, 4800.0, 3400.0)
    for k in (2, 3, 4):  # i0 and i2 (from 7200: shown at 4000)
        e1 = np.array([k * H - 100.0, k * H - 4000.0])
        m.learn_elapsed_batch(["a0", "a0"], np.array([x, x]), np.maximum(e1 - H, [0.0, 0.0]) if k > 2
                              else np.array([H - 100.0, 0.0]), np.minimum(e1, 4 * H))
    m.learn_elapsed_batch(["a0"], x[None, :], np.array([4 * H - 4000.0]), np.array([5 * H - 4000.0]))  # 18000
    m.learn_elapsed("a0", x, 4 * H - 100.0, 4 * H)  # then i0 closes (at 14500; last tick 14400)
    m.learn_elapsed("a0", x, 5 * H - 4000.0, 4 * H)  # and i2 (at 18400; last tick 18000)
    assert_states_equal(run.learner.export_state(), m.export_state(), rtol=0, atol=0)


def test_esmm_learns_click_labels_after_the_click_window():
    run = recording(config("esmm"))
    run.process(imp(1, 1800.0))
    run.process(Click(event_id="k1", ts=1900.0, impression_id="i1"))
    run.process(imp(2, 3000.0))        # its click window ends at 3600, on the grid: label at 7200
    run.join.advance(7300.0)
    clicks = [e for e in run.sink.learned if e[0] == "click"]
    assert clicks == [("click", "i1", True), ("click", "i2", False)]
    assert run.learner.ctr("a", run.vectorizer.x({"x0": 0.5, "x1": -1.0})) != pytest.approx(0.05)
    # a window shorter than the grid step: the label comes with the close
    run = recording(config("esmm", conversion_window=1000.0))
    run.process(imp(1, 100.0))
    run.join.advance(1101.0)
    assert run.sink.learned == [("click", "i1", False), ("close", 0.0, 1000.0)]


def test_late_and_out_of_window_conversions_are_counted_never_learned():
    run = recording(config())
    run.process(imp(1, 0.0))
    run.join.advance(5 * H)  # closed at 4 h as a non-conversion
    learned = list(run.sink.learned)
    assert learned[-1] == ("elapsed", 3 * H, 4 * H)  # the last grid point is the window's end: no close factor
    # the window closed and the impression left the join (a conversion reward keeps it no longer): a
    # conversion within the window arriving after the close is unmatched, counted and dead-lettered
    dead = []
    run.join.dead_letter = lambda event, reason, source: dead.append(reason)
    assert run.process(Conversion(event_id="c", ts=3 * H, impression_id="i1")) == "unmatched"
    # one beyond the window of a still open impression (the watermark trails by the allowed lateness)
    run.join.config = JoinConfig(click_window=600.0, conversion_window=4 * H, allowed_lateness=H)
    run.process(imp(2, 6 * H))
    assert run.process(Conversion(event_id="d", ts=10 * H + 1, impression_id="i2")) == "unmatched"
    assert run.sink.learned[:len(learned)] == learned
    assert not any(e[0] == "conversion" for e in run.sink.learned)
    assert run.counters()["unmatched"] == 2 and len(dead) == 2 and "outside the conversion window" in dead[1]
    assert run.learner.counters["rewards"] == 0.0


def test_no_tick_learns_at_the_close_as_before_and_bad_ticks_are_refused():
    run = LearningRun(config(tick=0.0), "m")
    assert type(run.sink) is LearnerSink and run.join.tick is None
    for bad in (-1.0, float("inf")):
        with pytest.raises(ValueError, match="tick"):
            DelayedFeedbackModel(dim=1, tick=bad)
        with pytest.raises(ValueError, match="tick"):
            ESMM(dim=1, tick=bad)


@pytest.fixture(scope="module")
def conversion_log(tmp_path_factory):
    path = tmp_path_factory.mktemp("conv") / "events.jsonl"
    world = WorldConfig(arms=3, dim=DIM, seed=4, base_ctr=0.3, conversion_rate=0.4, conversion_delay_mean=H,
                        click_delay_mean=30.0, rate=1 / 60.0, reward=RewardSpec("conversion"))
    simulate(world, config("esmm"), "sim", None, SimulationOptions(steps=800, out=path, quiet=True))
    return path


@pytest.mark.parametrize("conversions_at", ["arrival", "tick"])
@pytest.mark.parametrize("learner", ["dfm", "esmm"])
def test_batches_equal_one_at_a_time(conversion_log, tmp_path, learner, conversions_at):
    store = CheckpointStore(f"sqlite:///{tmp_path / 'b.db'}")
    out = {}
    for batch in (1024, 7, 0):
        replay_log(conversion_log, config(learner, conversions_at=conversions_at), f"b{batch}", store,
                   ReplayOptions(quiet=True, learn_batch=batch))
        out[batch] = store.latest(f"b{batch}").state
    assert out[0].counters["rewards"] > 10 and out[0].counters["impressions"] == 800
    for batch in (1024, 7):
        assert_states_equal(out[batch], out[0], rtol=0, atol=0)


@pytest.mark.parametrize("conversions_at", ["arrival", "tick"])
@pytest.mark.parametrize("learner", ["dfm", "esmm"])
def test_restored_mid_stream_continues_identically(conversion_log, tmp_path, monkeypatch, learner, conversions_at):
    store = CheckpointStore(f"sqlite:///{tmp_path / 'r.db'}")
    cfg = config(learner, conversions_at=conversions_at)
    replay_log(conversion_log, cfg, "whole", store, ReplayOptions(quiet=True))
    for cut in (333, 1001):
        out = replay_interrupted(conversion_log, cfg, f"cut{cut}", store, cut, monkeypatch)
        assert out["resumed_from_event"] == cut
        assert_states_equal(store.latest(f"cut{cut}").state, store.latest("whole").state, rtol=0, atol=0)


@pytest.mark.parametrize("cls", [DelayedFeedbackModel, ESMM])
def test_a_state_written_before_event_times_keeps_learning_at_the_close(cls):
    import dataclasses

    from banditloop.operators.registry import learner_from_state

    state = cls(dim=2).export_state()
    assert state.params["tick"] == 21600.0 and learner_from_state(state).tick == 21600.0
    old = dataclasses.replace(state, params={k: v for k, v in state.params.items() if k != "tick"})
    assert learner_from_state(old).tick == 0.0
