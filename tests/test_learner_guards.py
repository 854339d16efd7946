import numpy as np
import pytest

from operators.linucb import LinUCB


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
