import numpy as np
import pytest

from banditloop.operators.linucb import LinUCB


def test_merge_refuses_different_hyper_parameters():
    a, b = LinUCB(3, alpha=1.0), LinUCB(3, alpha=2.0)
    with pytest.raises(ValueError, match="hyper-parameters"):
        a.merge(b)
    LinUCB(3, seed=1).merge(LinUCB(3, seed=2))  # seeds may differ between shards


@pytest.mark.parametrize("reward", [float("nan"), float("inf")])
def test_non_finite_rewards_are_refused(reward):
    learner = LinUCB(3)
    with pytest.raises(ValueError, match="finite"):
        learner.learn_one("a", np.ones(3), reward)
    assert learner.counters["impressions"] == 0


def test_fresh_arms_tie_and_are_explored_uniformly():
    rng = np.random.default_rng(0)
    arms = [f"a{i}" for i in range(5)]
    for _ in range(20):  # some contexts give fresh arms scores that differ in the last bits (batched BLAS)
        learner = LinUCB(16, seed=3)
        x = rng.normal(size=16)
        picks = [learner.choose(x, arms) for _ in range(500)]
        assert all(d.propensity == pytest.approx(0.2) for d in picks)
        counts = {a: sum(d.arm == a for d in picks) for a in arms}
        assert all(50 < c < 150 for c in counts.values()), counts
