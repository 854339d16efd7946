"""The simulated world: reproducible, independent of the policy, and faithful to its own truth."""

from __future__ import annotations

import numpy as np
import pytest

from banditloop.core.events import Click, Conversion, Impression, decode_event, event_ts
from banditloop.core.reward import RewardSpec
from banditloop.simulators.logs import generate_log, read_log
from banditloop.simulators.stream import draw_stream
from banditloop.simulators.world import World, WorldConfig


def _run(world: World, steps: int, choose) -> list:
    out = []
    for _ in range(steps):
        req = world.next_request()
        out.append((req, world.respond(req, choose(req), propensity=1.0, policy="test")))
    return out


def test_same_seed_same_events():
    cfg = WorldConfig(arms=5, dim=4, seed=7, drift=0.01, churn=0.01, candidates=3)
    a = _run(World(cfg), 300, lambda r: r.candidates[0])
    b = _run(World(cfg), 300, lambda r: r.candidates[0])
    assert [e for _, o in a for e in o.events] == [e for _, o in b for e in o.events]
    c = _run(World(WorldConfig(arms=5, dim=4, seed=8, drift=0.01, churn=0.01, candidates=3)), 300,
             lambda r: r.candidates[0])
    assert [r.context for r, _ in a] != [r.context for r, _ in c]


def test_world_draws_do_not_depend_on_the_policy():
    cfg = WorldConfig(arms=6, dim=5, seed=3, drift=0.02, churn=0.02, candidates=4, conversion_rate=0.5)
    first = _run(World(cfg), 500, lambda r: r.candidates[0])
    oracle = _run(World(cfg), 500, lambda r: r.oracle_arm)
    for (ra, oa), (rb, ob) in zip(first, oracle, strict=True):
        assert ra.context == rb.context and ra.candidates == rb.candidates and ra.ts == rb.ts
        assert np.array_equal(ra.truth.expected, rb.truth.expected)
        # common random numbers: the same arm would have had the same outcome under either policy
        assert np.array_equal(ra.realized_rewards(), rb.realized_rewards())
        assert oa.reward == ra.realized_rewards()[0]
        assert ob.reward == rb.realized_rewards()[rb.candidates.index(rb.oracle_arm)]
    # respond draws nothing: responding twice gives the same outcome
    world = World(cfg)
    req = world.next_request()
    assert world.respond(req, req.candidates[1]) == world.respond(req, req.candidates[1])


def test_context_and_stream_match_the_world():
    cfg = WorldConfig(arms=4, dim=3, seed=2)
    world = World(cfg)
    reqs = world.requests(50)
    stream = draw_stream(cfg, 50)
    for t, req in enumerate(reqs):
        assert [req.context[f"x{i}"] for i in range(3)] == req.x.tolist()
        assert np.array_equal(stream.X[t], req.x)
        assert [stream.arms[i] for i in stream.candidates[t]] == req.candidates
        assert np.array_equal(stream.rewards[t], req.realized_rewards())
        assert req.ts == pytest.approx(cfg.start_ts + t / cfg.rate)


def test_ctrs_realistic_and_empirical_ctr_matches_expected():
    cfg = WorldConfig(arms=10, dim=8, seed=11, click_delay_mean=0.0)
    world = World(cfg)
    clicks, expected = 0, 0.0
    n = 40_000
    rng = np.random.default_rng(0)
    for _ in range(n):
        req = world.next_request()
        arm = req.candidates[int(rng.integers(len(req.candidates)))]
        outcome = world.respond(req, arm)
        clicks += outcome.clicked
        expected += world.expected_reward(req, arm)
    mean = expected / n
    assert 0.01 < mean < 0.15
    sd = np.sqrt(mean * (1 - mean) / n)
    assert abs(clicks / n - mean) < 4 * sd
    # arms differ meaningfully given the context: the best arm is far better than a random one
    stream = draw_stream(cfg, 2_000)
    assert stream.oracle_expected().mean() > 1.5 * stream.expected.mean()


def test_delays_have_configured_means():
    cfg = WorldConfig(arms=3, dim=2, seed=5, base_ctr=0.5, conversion_rate=0.5, conversion_spread=0.0,
                      bias_spread=0.0, click_delay_mean=20.0, conversion_delay_mean=600.0)
    world = World(cfg)
    click_delays, conv_delays, values = [], [], []
    for _ in range(20_000):
        req = world.next_request()
        o = world.respond(req, req.candidates[0])
        if o.click is not None:
            click_delays.append(o.click.ts - req.ts)
        if o.conversion is not None:
            conv_delays.append(o.conversion.ts - o.click.ts)
            values.append(o.value)
    assert len(click_delays) > 5000 and len(conv_delays) > 2000
    assert np.mean(click_delays) == pytest.approx(20.0, rel=0.05)
    assert np.mean(conv_delays) == pytest.approx(600.0, rel=0.06)
    assert min(click_delays) >= 0.0 and min(values) >= 0.0


def test_churn_retires_and_creates_arms():
    cfg = WorldConfig(arms=5, dim=3, seed=1, churn=0.01)
    world = World(cfg)
    before = set(world.active_arms)
    retired, added = [], []
    for _ in range(500):
        req = world.next_request()
        retired += req.retired
        added += req.added
        assert len(req.candidates) == 5 and not set(req.candidates) & set(retired)
    assert retired and len(retired) == len(added) == len(world.retired_arms)
    assert set(added).isdisjoint(before) and set(retired) <= before | set(added)
    assert len(set(world.active_arms)) == 5
    unchurned = World(WorldConfig(arms=5, dim=3, seed=1)).requests(500)[-1]
    assert unchurned.candidates == ["a0", "a1", "a2", "a3", "a4"] and not unchurned.retired


def test_drift_changes_theta_and_no_drift_keeps_it():
    drifting = World(WorldConfig(arms=3, dim=4, seed=0, drift=0.05))
    still = World(WorldConfig(arms=3, dim=4, seed=0))
    t0 = drifting.theta("a0")
    assert np.array_equal(t0, still.theta("a0"))
    drifting.requests(200)
    still.requests(200)
    assert np.array_equal(still.theta("a0"), t0)
    moved = np.linalg.norm(drifting.theta("a0") - t0)
    # expected movement: drift * sqrt(steps) * theta_scale (norm over dims, scaled by 1/sqrt(dim))
    assert 0.3 < moved / (0.05 * np.sqrt(199) * 0.8) < 2.0
    # drift does not change the contexts
    assert np.array_equal(World(WorldConfig(arms=3, dim=4, seed=0, drift=0.05)).requests(5)[4].x,
                          World(WorldConfig(arms=3, dim=4, seed=0)).requests(5)[4].x)


def test_oracle_regret_is_zero_and_others_positive():
    cfg = WorldConfig(arms=8, dim=5, seed=4, candidates=5)
    world = World(cfg)
    regret_oracle = regret_first = 0.0
    for _ in range(1000):
        req = world.next_request()
        regret_oracle += world.respond(req, req.oracle_arm).regret
        regret_first += world.respond(req, req.candidates[0]).regret
    assert regret_oracle == 0.0
    assert regret_first > 0.0


@pytest.mark.parametrize("kind", ["conversion", "click+value"])
def test_reward_kinds(kind):
    spec = RewardSpec(kind, weight=0.05)
    cfg = WorldConfig(arms=4, dim=3, seed=9, reward=spec, conversion_rate=0.3)
    world = World(cfg)
    total, expected = 0.0, 0.0
    n = 30_000
    for _ in range(n):
        req = world.next_request()
        o = world.respond(req, req.candidates[1])
        assert o.reward == spec.value(o.clicked, int(o.converted), o.value)
        assert o.converted <= o.clicked
        total += o.reward
        expected += o.expected_reward
    assert total / n == pytest.approx(expected / n, rel=0.15)


def test_candidate_subsampling_and_arm_features():
    cfg = WorldConfig(arms=10, dim=3, seed=6, candidates=4, arm_feature_dim=3)
    world = World(cfg)
    seen = set()
    for _ in range(200):
        req = world.next_request()
        assert len(req.candidates) == 4 == len(set(req.candidates))
        assert set(req.arm_features) == set(req.candidates)
        assert all(set(f) == {"f0", "f1", "f2"} for f in req.arm_features.values())
        seen.update(req.candidates)
    assert seen == set(world.active_arms)
    with pytest.raises(ValueError):
        world.respond(req, next(a for a in world.active_arms if a not in req.candidates))
    with pytest.raises(ValueError):
        world.respond(req, req.candidates[0], propensity=1.5)


def test_log_is_sorted_decodable_and_reproducible(tmp_path):
    cfg = WorldConfig(arms=5, dim=3, seed=12, base_ctr=0.2, conversion_rate=0.3, click_delay_mean=5.0,
                      conversion_delay_mean=60.0)
    summary = generate_log(cfg, "random", 2_000, tmp_path / "log.jsonl.gz")
    lines = read_log(summary.path)
    assert len(lines) == summary.events
    events = [decode_event(line) for line in lines]
    times = [event_ts(e) for e in events]
    assert times == sorted(times)
    imps = [e for e in events if isinstance(e, Impression)]
    assert len(imps) == 2_000 and all(e.propensity == pytest.approx(0.2) for e in imps)
    assert summary.clicks == sum(isinstance(e, Click) for e in events) > 100
    assert summary.conversions == sum(isinstance(e, Conversion) for e in events) > 10
    # feedback always follows its impression
    seen = set()
    for e in events:
        if isinstance(e, Impression):
            seen.add(e.impression_id)
        else:
            assert e.impression_id in seen
    again = generate_log(cfg, "random", 2_000, tmp_path / "again.jsonl")
    assert read_log(again.path) == lines
    oracle = generate_log(cfg, "oracle", 2_000, tmp_path / "oracle.jsonl")
    assert oracle.expected_reward == pytest.approx(oracle.oracle_expected_reward)
    assert oracle.oracle_expected_reward == pytest.approx(summary.oracle_expected_reward)
