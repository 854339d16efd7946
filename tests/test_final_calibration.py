"""simulate --json: ``final_calibration`` of the final model (every window closed) on fresh contexts."""

from __future__ import annotations

import numpy as np

from banditloop.core.features import FeatureSpec, dense_names
from banditloop.core.reward import RewardSpec
from banditloop.operators.predictions import reward_probability
from banditloop.pipeline.model import ModelConfig
from banditloop.pipeline.sim_calibration import true_probabilities
from banditloop.pipeline.simulate import SimulationOptions, simulate
from banditloop.simulators.config import WorldConfig
from banditloop.simulators.world import World

FEATURES = FeatureSpec(dim=4, numeric=dense_names("x", 3))
OPTS = SimulationOptions(steps=6000, checkpoint_interval=None, quiet=True)


def _run(learner: str, kind: str = "click", **params):
    world = WorldConfig(arms=4, dim=3, seed=2, base_ctr=0.1, click_delay_mean=5.0, reward=RewardSpec(kind))
    return simulate(world, ModelConfig(learner, params, features=FEATURES, reward=RewardSpec(kind)), "m", None, OPTS)


def test_final_calibration_of_probability_models_and_none_for_others():
    ftrl = _run("ctr-ftrl")
    assert 0.9 < ftrl["final_calibration"] < 1.1  # what it would serve is calibrated
    assert isinstance(ftrl["final_calibration_all_arms"], float)
    lr = _run("ctr-lr")  # ctr-lr included
    assert lr["final_calibration"] is not None and lr["final_calibration_all_arms"] is not None
    esmm = _run("esmm", "conversion")
    assert set(esmm["final_calibration_heads"]) == {"ctr", "cvr", "ctcvr"}
    assert esmm["final_calibration_heads"]["ctcvr"] == esmm["final_calibration_all_arms"]
    linucb = _run("linucb")
    assert linucb["final_calibration"] is None and linucb["final_calibration_all_arms"] is None


def test_final_calibration_leaves_the_run_unchanged_and_is_deterministic():
    a, b = _run("ctr-ftrl", delay="wait"), _run("ctr-ftrl", delay="wait")
    assert a["final_calibration"] == b["final_calibration"]
    import banditloop.pipeline.simulate as sim

    original = sim.final_calibration
    try:  # without the measurement the run's own figures are the same
        sim.final_calibration = lambda *args, **kw: {}
        c = _run("ctr-ftrl", delay="wait")
    finally:
        sim.final_calibration = original
    for key in ("regret", "reward", "calibration", "impressions", "clicks"):
        assert a[key] == c[key]


def test_wait_model_learns_the_last_window_only_in_the_final_state():
    # clicks an hour late in a 5-minute run: the 'wait' model learns nothing during the run (its windows
    # are still open at the end) and everything once they are closed
    world = WorldConfig(arms=3, dim=3, seed=1, base_ctr=0.2, click_delay_mean=600.0)
    config = ModelConfig("ctr-ftrl", {"delay": "wait", "prior": 0.5}, features=FEATURES)
    out = simulate(world, config, "m", None, OPTS)
    assert out["calibration"] > 1.8  # prior 0.5 against ~0.2: nothing learned while serving
    assert out["final_calibration_all_arms"] < 1.5


def test_reward_probability_picks_the_head_of_the_reward():
    from banditloop.operators.registry import make_learner

    esmm, dfm, ftrl = make_learner("esmm", 2), make_learner("dfm", 2), make_learner("ctr-ftrl", 2)
    assert reward_probability(esmm, "conversion").__name__ == "ctcvr"
    assert reward_probability(esmm, "click").__name__ == "ctr"
    assert reward_probability(dfm, "conversion").__name__ == "cvr"
    assert reward_probability(ftrl, "conversion").__name__ == "ctr"
    assert reward_probability(ftrl, "click+value") is None


def test_true_probabilities_match_the_worlds_own():
    world = World(WorldConfig(arms=3, dim=2, seed=4, conversion_context=0.5, selection_bias=True))
    req = world.next_request()
    p_click, p_conv = true_probabilities(world, req.x, req.candidates)
    np.testing.assert_allclose(p_click, req.truth.p_click, rtol=1e-9)
    np.testing.assert_allclose(p_conv, req.truth.p_conv, rtol=1e-9)


def test_churn_with_arms_replaced_in_the_steps_drawn_ahead():
    # the world draws blocks ahead: an arm active at the last request may already be replaced there
    for kind, learner in (("click", "ctr-ftrl"), ("conversion", "esmm")):
        world = WorldConfig(arms=5, dim=3, seed=3, churn=0.01, candidates=3, reward=RewardSpec(kind))
        config = ModelConfig(learner, features=FEATURES, reward=RewardSpec(kind))
        out = simulate(world, config, "m", None, SimulationOptions(steps=3000, checkpoint_interval=None, quiet=True))
        assert out["final_calibration"] is not None and np.isfinite(out["final_calibration_all_arms"])
