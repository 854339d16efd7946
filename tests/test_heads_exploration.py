"""Exploration of ``dfm`` and ``esmm`` (``exploration``, ``epsilon``, ``temperature``): greedy by default,
exactly as before the option; ε-greedy and softmax with exact propensities; kept through a checkpoint."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from banditloop.cli import main
from banditloop.operators.dfm import DelayedFeedbackModel
from banditloop.operators.esmm import ESMM
from banditloop.operators.registry import learner_from_state

ARMS = ["a", "b", "c", "d"]
MODELS = [DelayedFeedbackModel, ESMM]


def trained(cls, **params):
    """A model whose arms score differently: arm ``c`` converts most."""
    model = cls(dim=2, seed=5, **params)
    x = np.array([1.0, 0.5])
    for i in range(400):
        arm = ARMS[i % 4]
        if isinstance(model, ESMM):
            model.learn_click(arm, x, True)
        if arm == "c" or i % 20 == 0:
            model.learn_conversion(arm, x, delay=60.0)
        else:
            model.learn_elapsed(arm, x, 0.0, 30 * 86400.0)
    return model, x


@pytest.mark.parametrize("cls", MODELS)
def test_default_is_greedy_and_draws_nothing_without_ties(cls):
    model, x = trained(cls)
    scores = model.score(x, ARMS)
    before = model.rng.bit_generator.state
    decision = model.choose(x, ARMS)
    assert decision.arm == ARMS[int(np.argmax(scores))] == "c"
    assert decision.propensity == 1.0
    assert model.rng.bit_generator.state == before  # the generator is untouched, as before the option
    np.testing.assert_array_equal(model.propensities(x, ARMS, scores), [0.0, 0.0, 1.0, 0.0])


@pytest.mark.parametrize("cls", MODELS)
def test_default_splits_ties_as_the_greedy_rule(cls):
    model = cls(dim=2, seed=1)
    picks = {model.choose(np.ones(2), ARMS).arm for _ in range(60)}
    assert picks == set(ARMS)  # fresh arms tie: uniform over them
    assert model.choose(np.ones(2), ARMS).propensity == 0.25


@pytest.mark.parametrize("cls", MODELS)
def test_epsilon_greedy_propensities_are_exact_and_followed(cls):
    epsilon = 0.3
    model, x = trained(cls, epsilon=epsilon)
    probs = model.propensities(x, ARMS, model.score(x, ARMS))
    expected = np.full(4, epsilon / 4)
    expected[2] += 1.0 - epsilon
    np.testing.assert_allclose(probs, expected)
    draws = [model.choose(x, ARMS) for _ in range(8000)]
    share = np.mean([d.arm == "c" for d in draws])
    assert share == pytest.approx(expected[2], abs=0.02)  # 5 sd of a binomial share at n = 8000
    assert sorted({round(d.propensity, 12) for d in draws}) == pytest.approx([epsilon / 4, expected[2]])


@pytest.mark.parametrize("cls", MODELS)
def test_softmax_propensities(cls):
    model, x = trained(cls, exploration="softmax", temperature=0.01)
    scores = model.score(x, ARMS)
    e = np.exp((scores - scores.max()) / 0.01)
    np.testing.assert_allclose(model.propensities(x, ARMS, scores), e / e.sum())
    decision = model.choose(x, ARMS)
    assert decision.propensity == pytest.approx((e / e.sum())[ARMS.index(decision.arm)])


@pytest.mark.parametrize("cls", MODELS)
def test_exploration_survives_a_checkpoint_and_old_states_load_greedy(cls):
    model, x = trained(cls, epsilon=0.2)
    restored = learner_from_state(model.export_state())
    assert (restored.exploration, restored.epsilon, restored.temperature) == ("egreedy", 0.2, 0.05)
    assert [restored.choose(x, ARMS).arm for _ in range(50)] == [model.choose(x, ARMS).arm for _ in range(50)]
    state = model.export_state()
    old = dataclasses.replace(state, params={k: v for k, v in state.params.items()
                                             if k not in ("exploration", "epsilon", "temperature")})
    assert learner_from_state(old).choose(x, ARMS).propensity == 1.0


@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize(("params", "message"), [({"epsilon": 1.5}, "epsilon must be in"),
                                                 ({"epsilon": math.nan}, "epsilon must be in"),
                                                 ({"exploration": "ucb"}, "exploration must be one of"),
                                                 ({"temperature": 0.0}, "temperature must be > 0")])
def test_bad_exploration_is_refused(cls, params, message):
    with pytest.raises(ValueError, match=message):
        cls(dim=2, **params)


def test_simulate_logs_the_exploring_propensities(tmp_path, capsys):
    log = tmp_path / "run.jsonl"
    code = main(["simulate", "--policy", "dfm", "--steps", "400", "--quiet", "--json", "--param", "epsilon=0.5",
                 "--click-window", "30", "--db", f"sqlite:///{tmp_path / 'm.db'}", "--out", str(log)])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["impressions"] == 400
    props = [json.loads(line)["propensity"] for line in log.read_text().splitlines()
             if json.loads(line)["type"] == "impression"]
    # ε/K for an explored arm, (1 − ε) + ε/K for a sole best, (1 − ε)/T + ε/K for one of T tied best
    assert 0.05 in props and 0.55 in props
    assert all(p == 0.05 or any(p == pytest.approx(0.5 / t + 0.05) for t in range(1, 11)) for p in props)
