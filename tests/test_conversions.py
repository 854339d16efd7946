"""Conversions in the simulated world: delay distributions keep their mean and have long tails, the
default world is unchanged, and the selection-bias world converts its clicked population more."""

from __future__ import annotations

import numpy as np
import pytest

from banditloop.simulators.conversions import conversion_delays, conversion_probabilities, delay_survival
from banditloop.simulators.world import World, WorldConfig

DAY = 86400.0


@pytest.mark.parametrize(("dist", "shape"), [("exponential", 1.0), ("lognormal", 1.5), ("weibull", 0.6)])
def test_delays_have_the_configured_mean_and_survival(dist, shape):
    e = np.random.default_rng(0).standard_exponential(400_000)
    d = conversion_delays(dist, DAY, shape, e)
    assert d.mean() == pytest.approx(DAY, rel=0.03)
    for t in (0.2 * DAY, DAY, 5 * DAY):
        assert (d > t).mean() == pytest.approx(float(delay_survival(dist, DAY, shape, t)), abs=0.004)
    # monotone in the exponential variate: the same impressions convert first under every distribution
    order = np.argsort(e[:1000])
    assert np.all(np.diff(d[:1000][order]) >= 0)


def test_long_tails():
    assert float(delay_survival("lognormal", DAY, 1.5, 7 * DAY)) > 2 * float(delay_survival("exponential", DAY, 1.0,
                                                                                           7 * DAY))
    assert float(delay_survival("weibull", DAY, 0.6, 7 * DAY)) > 5 * float(delay_survival("exponential", DAY, 1.0,
                                                                                          7 * DAY))


def test_default_world_draws_exponential_delays_as_before():
    world = World(WorldConfig(seed=1, conversion_delay_mean=DAY))
    req = world.next_request()
    again = World(WorldConfig(seed=1, conversion_delay_mean=DAY, conversion_delay="weibull",
                              conversion_delay_shape=1.0)).next_request()
    np.testing.assert_allclose(req.truth.conv_delay, again.truth.conv_delay, rtol=1e-12)


def test_selection_bias_by_hand():
    q = 1 / (1 + np.exp(2.0))
    p = conversion_probabilities(np.array([-30.0, 0.0, 30.0]), np.array([-2.0] * 3), selection_bias=True)
    assert p[0] == pytest.approx(q, rel=1e-9) and p[1] == pytest.approx(2 * q / (1 + q), rel=1e-12)
    assert p[2] == pytest.approx(1.0, rel=1e-9)
    plain = conversion_probabilities(np.array([-30.0, 0.0]), np.array([-2.0] * 2), selection_bias=False)
    np.testing.assert_allclose(plain, [q, q])


def test_clicked_population_converts_more_under_selection_bias():
    cfg = WorldConfig(seed=2, selection_bias=True, base_ctr=0.1, theta_scale=2.0)
    world = World(cfg)
    clicked, unclicked = [], []
    for _ in range(3000):
        t = world.next_request().truth
        hit = t.u_click < t.p_click
        clicked.extend(t.p_conv[hit])
        unclicked.extend(t.p_conv[~hit])
    assert np.mean(clicked) > 1.15 * np.mean(unclicked)


def test_bad_delay_settings_are_refused():
    with pytest.raises(ValueError, match="conversion_delay"):
        WorldConfig(conversion_delay="gamma")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        WorldConfig(conversion_delay_shape=0.0)
