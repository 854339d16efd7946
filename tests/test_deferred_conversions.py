"""``conversions_at="tick"``: conversions learned at the next tick, spread among its survival factors
(``banditloop.operators.deferred_conversions``), checked against the same factors learned one by one."""

import dataclasses

import numpy as np
import pytest

from banditloop.core.events import Conversion, Impression
from banditloop.core.features import FeatureSpec, dense_names
from banditloop.core.reward import RewardSpec
from banditloop.operators.deferred_conversions import interleave_cuts, tick_order
from banditloop.operators.dfm import DelayedFeedbackModel
from banditloop.operators.esmm import ESMM
from banditloop.operators.registry import learner_from_state
from banditloop.pipeline.join import JoinConfig
from banditloop.pipeline.model import ModelConfig
from banditloop.pipeline.runner import LearningRun
from tests.helpers import assert_states_equal

H = 3600.0


def model(cls, conversions_at):
    return cls(dim=2, alpha=0.2, prior=0.02, delay_prior=H, window=8 * H, tick=H, conversions_at=conversions_at)


def tick_items(rng, n):
    arms = [f"a{i % 3}" for i in range(n)]
    e0 = rng.uniform(0, 3 * H, n)
    return arms, rng.normal(size=(n, 2)), e0, e0 + H


def conversions(rng, m):
    return [(f"a{j % 2}", rng.normal(size=2), float(rng.uniform(0, 4 * H)), float(rng.uniform(0, H))) for j in range(m)]


@pytest.mark.parametrize("cls", [DelayedFeedbackModel, ESMM])
@pytest.mark.parametrize("n, m", [(10, 3), (1, 4), (0, 2), (7, 0)])
def test_a_tick_equals_the_factors_one_by_one_in_the_interleaved_order(cls, n, m):
    rng = np.random.default_rng(n * 10 + m)
    arms, X, e0, e1 = tick_items(rng, n)
    convs = conversions(rng, m)
    deferred, by_hand = model(cls, "tick"), model(cls, "arrival")
    for arm, x, delay, c0 in convs:
        deferred.learn_conversion(arm, x, delay, c0)
    assert deferred.deferred == m
    before = deferred.export_state().arrays  # nothing learned before the tick
    assert not any(before[k].any() for k in ("z_bias", "n_bias", "z_shared", "n_shared", "z", "n"))
    deferred.learn_elapsed_batch(arms, X, e0, e1)
    for arm in deferred.arms:  # the same rows in both models
        by_hand.add_arm(arm)
    order = tick_order(n)
    assert sorted(order.tolist()) == list(range(n))
    arms, X, e0, e1 = [arms[i] for i in order], X[order], e0[order], e1[order]
    start = 0
    for cut, (arm, x, delay, c0) in zip(interleave_cuts(n, m), convs, strict=True):
        for i in range(start, cut):
            by_hand.learn_elapsed(arms[i], X[i], e0[i], e1[i])
        start = cut
        by_hand.learn_conversion(arm, x, delay, c0)
    for i in range(start, n):
        by_hand.learn_elapsed(arms[i], X[i], e0[i], e1[i])
    assert deferred.deferred == 0
    mine = deferred.export_state()
    assert mine.arrays["deferred"].shape == (0, 5)
    theirs = by_hand.export_state()
    assert mine.arms == theirs.arms and set(mine.arrays) == {*theirs.arrays, "deferred"}
    for name, arr in theirs.arrays.items():
        np.testing.assert_allclose(mine.arrays[name], arr, rtol=1e-12, atol=1e-15, err_msg=name)


@pytest.mark.parametrize("cls", [DelayedFeedbackModel, ESMM])
def test_kept_conversions_survive_a_checkpoint_and_a_merge(cls):
    rng = np.random.default_rng(1)
    whole = model(cls, "tick")
    convs = conversions(rng, 3)
    for arm, x, delay, c0 in convs[:2]:
        whole.learn_conversion(arm, x, delay, c0)
    restored = learner_from_state(whole.export_state())
    assert restored.deferred == 2
    for m in (whole, restored):
        m.learn_conversion(*convs[2])
        m.learn_elapsed_batch(*tick_items(np.random.default_rng(2), 5))
    assert_states_equal(restored.export_state(), whole.export_state(), rtol=0, atol=0)

    left, right = model(cls, "tick"), model(cls, "tick")
    right.learn_conversion("z", np.ones(2), 60.0, 0.0)  # an arm the left model has not seen
    left.learn_conversion("a0", np.ones(2), 30.0, 0.0)
    merged = left.merge(right)
    assert merged.deferred == 2
    rows = merged.export_state().arrays["deferred"][:, 0].astype(int)
    assert [merged.arms[r] for r in rows] == ["a0", "z"]


def test_bad_kept_conversions_are_refused_before_anything_is_stored():
    state = model(DelayedFeedbackModel, "tick").export_state()
    for bad in (np.array([[5.0, 1.0, 0.0, 0.0, 0.0]]), np.array([[0.0, -1.0, 0.0, 0.0, 0.0]]),
                np.array([[0.0, 1.0, 0.0, np.nan, 0.0]]), np.zeros((1, 4))):
        arms = {**state.arrays, "deferred": bad}
        with pytest.raises(ValueError, match="deferred"):
            learner_from_state(dataclasses.replace(state, arms=["a0"] if bad.shape[1] == 5 else [], arrays=arms))
    with pytest.raises(ValueError, match="conversions_at"):
        DelayedFeedbackModel(dim=1, conversions_at="later")
    with pytest.raises(ValueError, match="finite"):
        model(ESMM, "tick").learn_conversion("a", np.array([np.inf, 0.0]), 10.0)
    kept = model(DelayedFeedbackModel, "tick")
    kept.learn_conversion("a", np.ones(2), 10.0)
    with pytest.raises(ValueError, match="finite"):  # refused before anything is learned or dropped
        kept.learn_elapsed_batch(["a", "b"], np.ones((2, 2)), np.zeros(2), np.array([60.0, np.nan]))
    assert kept.deferred == 1 and not kept.export_state().arrays["n"].any()


def test_through_the_join_a_conversion_waits_for_the_next_grid_point_and_the_end_flushes():
    cfg = ModelConfig("dfm", {"tick": H, "conversions_at": "tick"}, reward=RewardSpec("conversion"),
                      features=FeatureSpec(dim=2, numeric=dense_names("x", 1)),
                      join=JoinConfig(click_window=600.0, conversion_window=4 * H, allowed_lateness=0.0,
                                      clock_skew=0.0))
    run = LearningRun(cfg, "m")
    run.process(Impression(event_id="e1", ts=100.0, impression_id="i1", arm="a", context={"x0": 1.0}))
    run.process(Conversion(event_id="c1", ts=200.0, impression_id="i1"))
    assert run.learner.deferred == 1 and run.learner.counters["rewards"] == 1.0
    run.join.advance(H + 1.0)  # grid point 3600: nothing else pending, the conversion is learned there
    assert run.learner.deferred == 0
    run.process(Impression(event_id="e2", ts=H + 10.0, impression_id="i2", arm="a", context={"x0": 1.0}))
    run.process(Conversion(event_id="c2", ts=H + 20.0, impression_id="i2"))
    assert run.learner.deferred == 1
    run.join.set_watermark(float("inf"))  # the end of a run: every window closes, nothing is kept
    assert run.learner.deferred == 0 and run.learner.counters["rewards"] == 2.0
