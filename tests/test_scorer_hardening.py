"""The in-process scorer under hostile-but-valid input (issue 13, items 4 and 6): never-seen arms
are limited per request and per second and cannot grow the served model without bound, and a
checkpoint holding values no learner can compute with is refused at reload."""

from __future__ import annotations

import numpy as np
import pytest

from banditloop.core.features import FeatureSpec, dense_names
from banditloop.operators.registry import LEARNERS
from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.pipeline.model import ModelConfig
from banditloop.pipeline.simulate import SimulationOptions, simulate
from banditloop.serving.guards import MAX_STATE_MAGNITUDE, NewArmsRefused, TokenBucket
from banditloop.serving.scorer import Scorer
from banditloop.simulators.world import WorldConfig

DIM = 4
CONTEXT = {"x0": 0.3, "x1": -1.0, "x2": 0.5, "x3": 2.0}
ARMS = [f"a{i}" for i in range(6)]


@pytest.fixture
def store(tmp_path):
    s = CheckpointStore(f"sqlite:///{tmp_path / 's.db'}")
    yield s
    s.close()


def train(store, learner="linucb", steps=600, seed=0, model="m"):
    config = ModelConfig(learner=learner, features=FeatureSpec(dim=DIM + 1, numeric=dense_names("x", DIM)))
    return simulate(WorldConfig(arms=len(ARMS), dim=DIM, seed=seed), config, model, store,
                    SimulationOptions(steps=steps, quiet=True, checkpoint_interval=None))


# -- checkpoints the learner cannot use -------------------------------------------------------------
@pytest.mark.parametrize("learner", sorted(LEARNERS))
def test_huge_finite_values_are_refused_at_reload_for_every_learner(store, learner):
    train(store, learner)
    scorer = Scorer(store, "m")
    assert scorer.reload() and scorer.version == 1  # a real model of this kind passes the range check
    before = scorer.choose(CONTEXT, ARMS).scores
    bad = store.latest("m")
    name = sorted(bad.state.arrays)[0]
    bad.state.arrays[name].reshape(-1)[0] = 1e308  # finite: from_state takes it
    store.save(bad)
    assert scorer.reload() is False
    assert scorer.refused == 1 and scorer.version == 1
    assert "version 2" in scorer.last_error and repr(name) in scorer.last_error
    assert scorer.choose(CONTEXT, ARMS).scores.keys() == before.keys()  # the old version keeps answering
    assert scorer.reload() is False and scorer.refused == 1  # not retried until a newer version exists


def test_values_just_inside_the_range_are_served(store):
    train(store)
    bad = store.latest("m")
    bad.state.arrays["xty"][0, 0] = MAX_STATE_MAGNITUDE / 10
    store.save(bad)
    scorer = Scorer(store, "m")
    assert scorer.reload() and scorer.version == 2


def test_the_issue_reproduction_1e308_no_longer_turns_requests_into_errors(store):
    train(store)
    scorer = Scorer(store, "m")
    scorer.reload()
    bad = store.latest("m")
    bad.state.arrays["xty"][:] = 1e308
    store.save(bad)
    scorer.reload()
    for _ in range(20):  # on main every one of these raised ValueError (HTTP 422)
        assert scorer.choose(CONTEXT, ARMS).version == 1


# -- never-seen arms ----------------------------------------------------------------------------------
def test_new_arms_per_request_are_limited_and_a_refused_request_changes_nothing(store):
    train(store)
    scorer = Scorer(store, "m", max_new_arms=100, max_new_arms_per_request=10)
    scorer.reload()
    known = len(scorer.served.learner.arms)
    with pytest.raises(NewArmsRefused) as refused:
        scorer.choose(CONTEXT, ARMS + [f"n{i}" for i in range(11)])
    assert not refused.value.rate_limited and "11 arms the model has never seen" in str(refused.value)
    assert len(scorer.served.learner.arms) == known and scorer.new_arms_refused == 1
    assert scorer.choose(CONTEXT, ARMS + [f"n{i}" for i in range(10)]).version == 1
    assert len(scorer.served.learner.arms) == known + 10
    # arms seen before are not new any more: the same request again is free
    assert scorer.choose(CONTEXT, ARMS + [f"n{i}" for i in range(10)]).version == 1


def test_new_arms_per_second_are_a_token_bucket_and_known_arms_are_free(store):
    train(store)
    scorer = Scorer(store, "m", max_new_arms=1000, max_new_arms_per_request=50, max_new_arms_per_second=20)
    now = [0.0]
    scorer.new_arm_budget = TokenBucket(20, 50, clock=lambda: now[0])  # the same bucket, on a fake clock
    scorer.reload()
    scorer.choose(CONTEXT, [f"n{i}" for i in range(50)])  # a full request's worth is saved up
    with pytest.raises(NewArmsRefused) as refused:
        scorer.choose(CONTEXT, ["late"])
    assert refused.value.rate_limited and refused.value.retry_after == pytest.approx(0.05)
    assert scorer.choose(CONTEXT, ARMS + [f"n{i}" for i in range(50)]).version == 1  # nothing new: allowed
    now[0] = 1.0  # 20 more tokens
    scorer.choose(CONTEXT, [f"m{i}" for i in range(20)])
    with pytest.raises(NewArmsRefused):
        scorer.choose(CONTEXT, ["m20"])
    assert scorer.new_arms_refused == 2


def test_the_arm_table_is_reset_to_the_checkpoint_and_stays_bounded(store):
    train(store)
    scorer = Scorer(store, "m", max_new_arms=40)
    scorer.reload()
    checkpointed = list(scorer.served.learner.arms)
    known = len(checkpointed)
    expected = scorer.choose(CONTEXT, ARMS).scores
    for i in range(200):
        scorer.choose(CONTEXT, ARMS + [f"r{i}-{j}" for j in range(7)])
        assert len(scorer.served.learner.arms) <= known + 40
    assert scorer.arm_resets >= 200 * 7 // 40 - 1
    assert scorer.choose(CONTEXT, ARMS).scores == pytest.approx(expected, rel=1e-12)  # statistics untouched
    assert scorer.served.learner.arms[:known] == checkpointed


def test_limits_are_validated():
    with pytest.raises(ValueError):
        Scorer("sqlite://", "m", max_new_arms=10, max_new_arms_per_request=11)
    with pytest.raises(ValueError):
        Scorer("sqlite://", "m", max_new_arms_per_second=0)
    with pytest.raises(ValueError):
        TokenBucket(0, 1)


def test_token_bucket_never_exceeds_its_rate_over_time():
    now = [0.0]
    bucket = TokenBucket(rate=10, burst=10, clock=lambda: now[0])
    taken = 0
    for step in range(1000):  # 10 s in steps of 10 ms, asking for 1 token each time
        now[0] = step * 0.01
        taken += bucket.take(1)
    assert taken == pytest.approx(10 + 10 * 9.99, abs=1)
    assert np.isfinite(bucket.available())


def test_a_spare_learner_is_swapped_in_and_prepared_again_off_the_request_path(store):
    import time

    from banditloop.operators.registry import learner_from_state

    train(store, learner="ts")  # a randomised learner: its draws must go on, not restart, after a reset
    scorer = Scorer(store, "m", max_new_arms=10)
    scorer.reload()
    served = scorer.served
    assert served.spare is not None and served.spare is not served.learner
    scorer.start_auto_reload(0.05)
    try:
        scorer.choose(CONTEXT, [f"n{i}" for i in range(10)])
        spare = served.spare
        new = [f"m{i}" for i in range(10)]
        scorer.choose(CONTEXT, new)  # past the allowance: the spare comes in
        assert served.learner is spare and scorer.arm_resets == 1
        # a learner restarted from the checkpoint's random state would have drawn exactly this
        replay = learner_from_state(served.base_state)
        replay.choose(served.vectorizer.x(CONTEXT), new)
        assert served.learner.rng.bit_generator.state != replay.rng.bit_generator.state
        deadline = time.monotonic() + 30
        while served.spare is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert served.spare is not None and served.spare is not served.learner
    finally:
        scorer.close()
