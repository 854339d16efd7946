"""ESMM through the join: a click that joins after the pCTR head learned its impression's label is counted
(``late_click_labels``) and corrected, never lost silently (``banditloop.pipeline.click_labels``)."""

import numpy as np
import pytest

from banditloop.core.events import Click, Conversion, Impression
from banditloop.core.features import FeatureSpec, dense_names
from banditloop.core.reward import RewardSpec
from banditloop.operators.esmm import ESMM
from banditloop.operators.registry import learner_from_state
from banditloop.pipeline.click_labels import ClickLabelJoin
from banditloop.pipeline.join import EventJoin, JoinConfig
from banditloop.pipeline.model import ModelConfig
from banditloop.pipeline.runner import LearningRun
from tests.helpers import assert_states_equal

H = 3600.0
CONTEXT = {"x0": 0.5, "x1": -1.0}


def config(learner="esmm", click_window=600.0, conversion_window=4 * H, lateness=0.0):
    return ModelConfig(learner, {"tick": H}, reward=RewardSpec("conversion"),
                       features=FeatureSpec(dim=3, numeric=dense_names("x", 2)),
                       join=JoinConfig(click_window=click_window, conversion_window=conversion_window,
                                       allowed_lateness=lateness, clock_skew=0.0))


def recording(cfg):
    run = LearningRun(cfg, "m")
    run.sink.record = True
    return run


def imp(i, ts):
    return Impression(event_id=f"e{i}", ts=ts, impression_id=f"i{i}", arm="a", context=CONTEXT)


def click(i, ts):
    return Click(event_id=f"k{i}", ts=ts, impression_id=f"i{i}")


def test_a_click_after_its_label_is_counted_and_corrects_the_negative():
    run = recording(config())
    assert type(run.join) is ClickLabelJoin and run.counters()["late_click_labels"] == 0
    run.process(imp(1, 100.0))
    run.join.advance(2 * H)  # label (unclicked) learned at the 3600 grid point
    before = run.learner.export_state()
    x = run.vectorizer.x(CONTEXT)
    ctr_before = run.learner.ctr("a", x)
    assert run.process(click(1, 200.0)) == "click"  # within the click window, delivered late
    assert ("click", "i1", False) in run.sink.learned and run.sink.learned[-1] == ("late click", "i1")
    assert run.counters()["late_click_labels"] == 1 and run.learner.clicks("a") == 1.0
    # the correction: −log p − (−log(1 − p)), gradient −1 in the logit, on the pCTR head only
    m = learner_from_state(before)
    m.learn_late_click("a", x)
    assert_states_equal(run.learner.export_state(), m.export_state(), rtol=0, atol=0)
    assert run.learner.ctr("a", x) > ctr_before
    assert run.learner.ctcvr("a", x) / run.learner.ctr("a", x) != pytest.approx(1.0)
    # a redelivery is a duplicate: counted once
    assert run.process(click(1, 200.0)) == "duplicate"
    assert run.counters()["late_click_labels"] == 1


def test_a_click_before_its_label_is_learned_as_the_label():
    run = recording(config(lateness=2 * H))  # the watermark trails by 2 h
    run.process(imp(1, 100.0))
    run.process(imp(2, 2.5 * H))  # watermark 0.5 h: the 3600 grid point not yet reached
    assert run.process(click(1, 300.0)) == "click"
    run.join.advance(4 * H)
    assert ("click", "i1", True) in run.sink.learned
    assert run.counters()["late_click_labels"] == 0 and run.learner.clicks("a") == 1.0


def test_after_the_close_and_outside_the_window():
    run = recording(config(click_window=900.0, conversion_window=1000.0))  # the label comes with the close
    run.process(imp(1, 100.0))
    run.join.advance(1200.0)
    assert run.sink.learned == [("click", "i1", False), ("close", 0.0, 1000.0)]
    # the impression left the join with its window (a conversion reward keeps it no longer): unmatched,
    # counted and dead-lettered there
    assert run.process(click(1, 650.0)) == "unmatched"
    assert run.counters()["late_click_labels"] == 0 and run.counters()["unmatched"] == 1
    run2 = recording(config())
    run2.process(imp(1, 100.0))
    run2.join.advance(2 * H)
    assert run2.process(click(1, 100.0 + 601.0)) == "unmatched"  # beyond the click window
    assert run2.counters()["late_click_labels"] == 0 and run2.learner.clicks("a") == 0.0


def test_models_without_click_labels_keep_the_plain_join():
    assert type(LearningRun(config("dfm"), "m").join) is EventJoin
    assert type(LearningRun(ModelConfig("ctr-ftrl"), "m").join) is EventJoin


def _events(seed=0, n=300):
    """Impressions every 5 minutes; clicks within the 10-minute click window but delivered up to 3 hours
    late (many after their label), conversions hours later: in arrival order."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ts = 300.0 * i
        out.append((ts, imp(i, ts)))
        if rng.random() < 0.3:
            out.append((ts + float(rng.uniform(0, 3 * H)), click(i, ts + float(rng.uniform(0, 600.0)))))
            if rng.random() < 0.5:
                c_ts = ts + float(rng.exponential(2 * H))
                out.append((c_ts, Conversion(event_id=f"c{i}", ts=c_ts, impression_id=f"i{i}")))
    out.sort(key=lambda p: p[0])
    return [e for _, e in out]


def test_restored_mid_stream_continues_identically_with_late_clicks():
    events = _events()
    whole = LearningRun(config(lateness=600.0), "m")
    for e in events:
        whole.process(e)
    assert whole.counters()["late_click_labels"] > 10
    for cut in (100, 271):
        first = LearningRun(config(lateness=600.0), "m")
        for e in events[:cut]:
            first.process(e)
        first.flush()
        run = LearningRun(first.config, "m", learner=learner_from_state(first.learner.export_state()))
        run.join.import_state(first.join.export_state())
        for e in events[cut:]:
            run.process(e)
        assert run.counters() == whole.counters()
        assert_states_equal(run.learner.export_state(), whole.learner.export_state(), rtol=0, atol=0)


def test_a_join_state_without_the_counter_loads_with_zero():
    run = LearningRun(config(), "m")
    run.process(imp(1, 100.0))
    old = EventJoin(sink=run.sink, reward=run.config.reward, config=run.config.join, tick=H)
    old.import_state(run.join.export_state())
    old.counters.pop("late_click_labels", None)
    again = LearningRun(config(), "m")
    again.join.import_state(old.export_state())
    assert again.counters()["late_click_labels"] == 0 and again.counters()["impressions"] == 1


def test_learn_late_click_turns_a_negative_into_a_positive_in_expectation():
    x = np.array([1.0, 0.3, -0.2])
    labelled, corrected = ESMM(dim=3, ctr_prior=0.2), ESMM(dim=3, ctr_prior=0.2)
    rng = np.random.default_rng(1)
    for _ in range(3000):
        clicked = rng.random() < 0.3
        labelled.learn_click("a", x, clicked)
        corrected.learn_click("a", x, False)  # every label learned before its click arrived
        if clicked:
            corrected.learn_late_click("a", x)
    assert labelled.ctr("a", x) == pytest.approx(0.3, abs=0.03)
    assert corrected.ctr("a", x) == pytest.approx(0.3, abs=0.03)

