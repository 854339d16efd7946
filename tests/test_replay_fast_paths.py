"""The replay's fast paths learn bit for bit what the general paths do (issue 12: per-event cost)."""

import pytest

from banditloop.core.events import Click, Conversion, Impression
from banditloop.core.features import FeatureSpec
from banditloop.core.reward import RewardSpec
from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.pipeline.join_config import JoinConfig
from banditloop.pipeline.model import LearnerSink, ModelConfig
from banditloop.pipeline.replay import ReplayOptions, replay_log
from banditloop.pipeline.runner import LearningRun
from banditloop.pipeline.simulate import SimulationOptions, simulate
from banditloop.simulators.world import WorldConfig
from tests.helpers import assert_states_equal


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    path = tmp_path_factory.mktemp("fast") / "events.jsonl"
    config = ModelConfig("random", features=FeatureSpec(dim=6))
    simulate(WorldConfig(arms=6, dim=5, seed=11, click_delay_mean=30.0, conversion_rate=0.3), config, "sim", None,
             SimulationOptions(steps=2500, out=path, quiet=True))
    return path


def _replay(log, config, batch):
    store = CheckpointStore("sqlite://")
    out = replay_log(log, config, "m", store, ReplayOptions(quiet=True, learn_batch=batch))
    cp = store.latest("m")
    store.close()
    return cp.state, cp.join_state, {k: v for k, v in out.items() if "second" not in k}


def _general(monkeypatch):
    """The general path: every sink call gets an impression built from the columns."""
    monkeypatch.setattr(LearnerSink, "arm_only", property(lambda self: False))


@pytest.mark.parametrize("learner, params", [("ts", {}), ("ts", {"pending": "failure"}), ("kl-ucb", {}),
                                             ("discounted-ts", {})])
@pytest.mark.parametrize("windows", [{}, {"click_window": 600.0, "conversion_window": 600.0}])
def test_a_sink_that_reads_the_arm_only_learns_what_the_general_path_learns(log, monkeypatch, learner, params,
                                                                             windows):
    config = ModelConfig(learner, params, features=FeatureSpec(dim=7), join=JoinConfig(**windows))
    assert LearningRun(config, "m").sink.arm_only
    fast = {batch: _replay(log, config, batch) for batch in (0, 7, 1024)}
    _general(monkeypatch)
    assert not LearningRun(config, "m").sink.arm_only
    for batch in (0, 7, 1024):
        general = _replay(log, config, batch)
        assert_states_equal(fast[batch][0], general[0], rtol=0, atol=0)
        assert fast[batch][1] == general[1]  # the join state, byte for byte
        assert fast[batch][2] == general[2]


def _events():
    """Held feedback (a click before its impression), duplicates, a conflict, a late click, closes."""
    return [
        Click(event_id="c0", ts=8.0, impression_id="i0"),
        Impression(event_id="e0", ts=10.0, impression_id="i0", arm="a"),
        Impression(event_id="e1", ts=11.0, impression_id="i1", arm="b", context={"x": 1.0}),
        Impression(event_id="e1", ts=11.0, impression_id="i1", arm="b", context={"x": 1.0}),
        Impression(event_id="e1b", ts=11.0, impression_id="i1", arm="c"),
        Click(event_id="c1", ts=20.0, impression_id="i1"),
        Conversion(event_id="v1", ts=25.0, impression_id="i1", value=2.0),
        Impression(event_id="e2", ts=30.0, impression_id="i2", arm="a"),
        Impression(event_id="e3", ts=200.0, impression_id="i3", arm="c"),
        Click(event_id="c2", ts=201.0, impression_id="i2"),
        Impression(event_id="e4", ts=900.0, impression_id="i4", arm="b"),
    ]


@pytest.mark.parametrize("reward", ["click", "conversion"])
@pytest.mark.parametrize("batch", [0, 3])
def test_arm_only_join_event_by_event(monkeypatch, reward, batch):
    config = ModelConfig("ts", features=FeatureSpec(dim=4), reward=RewardSpec(kind=reward),
                         join=JoinConfig(click_window=100.0, conversion_window=300.0, allowed_lateness=0.0))
    results = []
    for general in (False, True):
        if general:
            _general(monkeypatch)
        dead = []
        run = LearningRun(config, "m", dead_letter=lambda raw, reason, source, dead=dead: dead.append(reason))
        run.sink.batch = batch
        outcomes = [run.process(ev) for ev in _events()]
        run.flush()
        results.append((outcomes, run.counters(), dead, run.learner.export_state(), run.join.export_state()))
    (o1, c1, d1, s1, j1), (o2, c2, d2, s2, j2) = results
    assert o1 == o2 and c1 == c2 and d1 == d2 and j1 == j2
    assert_states_equal(s1, s2, rtol=0, atol=0)
    assert c1["closed"] > 0 and c1["conflicts"] == 1 and c1["duplicates"] == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_due_queue_take_is_in_order_of_due(monkeypatch, seed):
    """``DueQueue.take`` (with its one-entry fast path) returns what ``in_order(*due(...))`` does, through
    compactions, out-of-order pushes and evicted slots."""
    import random

    from banditloop.pipeline import open_due
    from banditloop.pipeline.open_due import DueQueue, in_order
    from banditloop.pipeline.open_store import CLOSED, OpenStore

    monkeypatch.setattr(open_due, "_COMPACT", 8)
    rng = random.Random(seed)
    queues = [DueQueue(), DueQueue()]
    store = OpenStore()
    taken: list[list[list[int]]] = [[], []]
    t = 0.0
    for n in range(3000):
        t += rng.choice([0.0, 0.5, 1.0, 1.0, 2.0])
        ts = t - (rng.random() * 5 if rng.random() < 0.05 else 0.0)  # now and then out of order
        slot = store.add(f"i{n}", f"e{n}", ts, "a", None, 0, 1)
        for q in queues:
            q.push(ts, slot, store.gen[slot])
        if rng.random() < 0.1:
            store.remove(slot)  # evicted early: skipped when taken
        watermark = t - rng.choice([3.0, 10.0])
        for which, after, skip in ((0, 2.0, CLOSED), (1, 2.0, 0)):
            if queues[0].next[which] + after < watermark:
                taken[0].append(list(queues[0].take(which, after, watermark, store, skip)))
                taken[1].append(list(in_order(*queues[1].due(which, after, watermark), after, store, skip)))
                assert queues[0].next == queues[1].next and queues[0].heads == queues[1].heads
    assert taken[0] == taken[1] and sum(map(len, taken[0])) > 1000


def test_content_digests_are_those_of_earlier_versions():
    """Checkpointed join states hold these digests: the faster ``content_digest`` must give the same ones."""
    from banditloop.core.digest import content_digest

    events = [Impression(event_id="e1", ts=1700000000.5, impression_id="i1", arm="a3",
                         context={"x1": 0.25, "x0": -1.0, "c": "fr"}, candidates=["a1", "a3"], propensity=0.5,
                         arm_features={"a3": {"p": 2.0}}),
              Impression(event_id="e2", ts=10.0, impression_id="i2", arm="b"),
              Click(event_id="c1", ts=130.0, impression_id="i1"),
              Conversion(event_id="v1", ts=140.0, impression_id="i1", value=19.9),
              Conversion(event_id="v2", ts=140.0, impression_id="i1")]
    assert [content_digest(e) for e in events] == [1168709777834641578, -3349739299102429776, -920267937093405401,
                                                   -3323054460460446912, -4438380898816908886]
