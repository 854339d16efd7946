"""``Learner.action_probabilities``: the target-policy probability of every candidate, for every learner."""

from __future__ import annotations

import numpy as np
import pytest

from banditloop.operators.policies import SampledPolicy
from banditloop.operators.registry import LEARNERS, learner_class
from tests.test_learners import ARMS, feed, make, probes, shared_for, stream

#: Thompson-sampling learners: their probabilities are Monte Carlo estimates
SAMPLED = {k for k in LEARNERS if issubclass(learner_class(k), SampledPolicy)}


@pytest.mark.parametrize("kind", list(LEARNERS))
def test_probabilities_are_a_distribution_that_zeroes_retired_arms(kind):
    learner = make(kind, seed=3)
    feed(learner, stream(200, seed=3))
    learner.retire_arm("a2")
    for x in probes(5, seed=4):
        probs = learner.action_probabilities(x, ARMS, shared_for(x, ARMS))
        assert probs.shape == (len(ARMS),)
        assert probs.sum() == pytest.approx(1.0, abs=1e-12)
        assert np.all(probs >= 0) and probs[ARMS.index("a2")] == 0.0


@pytest.mark.parametrize("kind", [k for k in LEARNERS if k not in SAMPLED])
def test_probabilities_equal_the_decisions_own(kind):
    """Exact kinds: the probabilities equal ``choose``'s (randomised) or put 1 on its argmax (deterministic)."""
    learner = make(kind, seed=5)
    feed(learner, stream(300, seed=5))
    for x in probes(10, seed=6):
        shared = shared_for(x, ARMS)
        probs = learner.action_probabilities(x, ARMS, shared)
        d = learner.choose(x, ARMS, shared)
        if d.probabilities is not None:
            assert probs == pytest.approx(d.probabilities, abs=1e-12)
        else:
            assert probs[ARMS.index(d.arm)] == d.propensity == 1.0


@pytest.mark.parametrize("kind", sorted(SAMPLED))
def test_sampled_policies_match_choice_frequencies(kind):
    learner = make(kind, seed=7)
    cands = ARMS[:4]
    feed(learner, stream(40, seed=7, arms=cands))
    x = probes(1, seed=8)[0]
    shared = shared_for(x, cands)
    probs = learner.action_probabilities(x, cands, shared, draws=20_000)
    n = 3000
    counts = np.zeros(len(cands))
    for _ in range(n):
        counts[cands.index(learner.choose(x, cands, shared).arm)] += 1
    assert probs.max() < 0.99, probs  # a non-trivial distribution
    assert np.all(np.abs(counts / n - probs) <= 4.5 * np.sqrt(probs * (1 - probs) / n) + 0.01)


def test_sampled_policy_without_logged_propensities_still_gets_probabilities():
    learner = make("ts", seed=9, propensity_draws=0)
    feed(learner, stream(40, seed=9, arms=ARMS[:3]))
    probs = learner.action_probabilities(None, ARMS[:3])
    assert probs.sum() == pytest.approx(1.0) and np.count_nonzero(probs) > 1
    with pytest.raises(ValueError, match="draws"):
        learner.action_probabilities(None, ARMS[:3], draws=0)


def test_argmax_ties_split_uniformly():
    learner = make("linucb", seed=1)
    probs = learner.action_probabilities(np.ones(4), ARMS[:4])  # fresh arms: all tied
    assert probs == pytest.approx(np.full(4, 0.25))
