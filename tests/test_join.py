from dataclasses import dataclass, field

import pytest

from banditloop.core.events import Click, Conversion, Impression, decode_event
from banditloop.core.reward import RewardSpec
from banditloop.pipeline.join import EventJoin, JoinConfig


@dataclass
class Recorder:
    impressions: list = field(default_factory=list)
    rewards: list = field(default_factory=list)
    closes: list = field(default_factory=list)

    def on_impression(self, imp):
        self.impressions.append(imp.impression_id)

    def on_reward(self, imp, delta):
        self.rewards.append((imp.impression_id, delta))

    def on_close(self, imp):
        self.closes.append((imp.impression_id, imp.applied))


def impression(i, ts, arm="a"):
    return Impression(event_id=f"imp-{i}", ts=ts, impression_id=f"i{i}", arm=arm, context={"x": 1.0})


def click(i, ts, eid=None):
    return Click(event_id=eid or f"clk-{i}", ts=ts, impression_id=f"i{i}")


def conversion(i, ts, value=None, eid=None):
    return Conversion(event_id=eid or f"cnv-{i}", ts=ts, impression_id=f"i{i}", value=value)


def make(reward=None, **cfg):
    sink = Recorder()
    dead = []
    join = EventJoin(sink=sink, reward=reward or RewardSpec(), config=JoinConfig(**cfg),
                     dead_letter=lambda raw, reason, source: dead.append((decode_event(raw).event_id, reason)))
    return join, sink, dead


def feed(join, events):
    out = []
    for ev in events:
        join.advance(ev.ts)
        out.append(join.process(ev))
    return out


def test_click_after_impression_rewards_once_even_when_duplicated():
    join, sink, _ = make()
    assert feed(join, [impression(1, 0), click(1, 5), click(1, 5), click(1, 6, eid="second-click")]) == [
        "impression", "click", "duplicate", "click"]
    assert sink.rewards == [("i1", 1.0)]  # a second click changes nothing under the click reward
    assert join.counters["duplicates"] == 1 and join.counters["clicks"] == 2


def test_feedback_before_its_impression_is_held_then_applied():
    join, sink, _ = make()
    assert join.process(click(1, 10)) == "held"
    assert join.counters["held"] == 1
    join.process(impression(1, 8))
    assert sink.rewards == [("i1", 1.0)] and join.counters["held"] == 0


def test_held_feedback_expires_into_unmatched_with_a_dead_letter():
    join, sink, dead = make(allowed_lateness=10, clock_skew=0)
    feed(join, [click(9, 100), impression(1, 200)])
    assert join.counters["unmatched"] == 1 and not sink.rewards
    assert dead == [("clk-9", "unmatched click: no impression arrived within the allowed lateness")]


def test_windows_and_unknown_impressions():
    join, sink, dead = make(reward=RewardSpec(kind="click+value"), click_window=60, conversion_window=3600,
                            allowed_lateness=0)
    out = feed(join, [impression(1, 0), click(1, 61), conversion(1, 3000, value=2.0)])
    assert out == ["impression", "unmatched", "conversion"]
    assert "outside the click window" in dead[0][1]
    join2, _, dead2 = make(allowed_lateness=0, clock_skew=0)
    feed(join2, [impression(1, 100), click(7, 50)])
    assert join2.counters["unmatched"] == 1 and "unknown or expired" in dead2[0][1]


def test_a_click_reward_ignores_conversions_and_evicts_at_the_click_window():
    join, sink, dead = make(click_window=60, conversion_window=3600, allowed_lateness=0)
    out = feed(join, [impression(1, 0), click(1, 30), conversion(1, 40, value=2.0), conversion(7, 50),
                      impression(2, 100)])
    assert sink.closes == [("i1", 1.0)] and list(join.open) == ["i2"]  # i1 closed and left at once
    assert join.counters["evicted"] == 1
    out += feed(join, [conversion(1, 3000)])
    assert out == ["impression", "click", "ignored", "ignored", "impression", "ignored"]
    assert (join.counters["conversions"], join.counters["ignored"], join.counters["held"]) == (0, 3, 0)
    assert sink.rewards == [("i1", 1.0)] and not dead  # neither joined, held nor dead-lettered


@pytest.mark.parametrize("kind", ["conversion", "click+value"])
def test_a_reward_that_reads_conversions_keeps_the_impression_for_their_window(kind):
    join, sink, dead = make(reward=RewardSpec(kind=kind), click_window=60, conversion_window=3600,
                            allowed_lateness=0)
    out = feed(join, [impression(1, 0), impression(2, 100), conversion(1, 3000, value=1.0), impression(3, 3700)])
    assert out == ["impression", "impression", "conversion", "impression"]
    assert sink.rewards == [("i1", 1.0)] and not dead
    assert sorted(join.open) == ["i2", "i3"] and join.counters["evicted"] == 1


def test_click_plus_value_reward_moves_by_increments():
    join, sink, _ = make(reward=RewardSpec(kind="click+value", weight=0.5))
    feed(join, [impression(1, 0), conversion(1, 10, value=4.0), click(1, 12), conversion(1, 20, value=2.0, eid="c2")])
    assert sink.rewards == [("i1", 2.0), ("i1", 1.0), ("i1", 1.0)]
    assert sum(d for _, d in sink.rewards) == 1.0 + 0.5 * 6.0


def test_clipped_reward_for_bernoulli_learners():
    sink = Recorder()
    join = EventJoin(sink=sink, reward=RewardSpec(kind="click+value", weight=1.0), clip_reward=True)
    feed(join, [impression(1, 0), click(1, 1), conversion(1, 2, value=5.0)])
    assert sink.rewards == [("i1", 1.0)]


def test_late_impressions_and_eviction_bound_the_state():
    join, _, dead = make(click_window=10, conversion_window=20, allowed_lateness=5)
    feed(join, [impression(i, float(i)) for i in range(1000)])
    assert len(join.open) <= 27  # retention 20 + lateness 5 (+ boundary)
    assert join.counters["evicted"] == 1000 - len(join.open)
    assert feed(join, [impression(5000, 100.0)]) == ["late"]
    assert dead[-1] == ("imp-5000", "late impression: older than the watermark")


def test_duplicate_impression_is_counted_not_applied():
    join, sink, _ = make()
    assert feed(join, [impression(1, 0), impression(1, 0)]) == ["impression", "duplicate"]
    assert sink.impressions == ["i1"]


@pytest.mark.parametrize("cut", [1, 3, 5, 7])
def test_export_import_mid_stream_changes_nothing(cut):
    events = [click(2, 3), impression(1, 0), click(1, 2), impression(2, 2.5), conversion(1, 30, value=1.0),
              click(3, 31), impression(3, 30.5), click(1, 40, eid="x")]
    whole, sink_whole, _ = make(reward=RewardSpec(kind="click+value"))
    feed(whole, events)
    first, sink_first, _ = make(reward=RewardSpec(kind="click+value"))
    feed(first, events[:cut])
    second, sink_second, _ = make(reward=RewardSpec(kind="click+value"))
    second.import_state(first.export_state())
    feed(second, events[cut:])
    assert sink_first.rewards + sink_second.rewards == sink_whole.rewards
    assert second.counters == whole.counters


def test_non_finite_reward_is_dead_lettered_and_never_applied():
    join, sink, dead = make(reward=RewardSpec(kind="click+value", weight=1e300))
    feed(join, [impression(1, 0), conversion(1, 5, value=1e9), click(1, 6)])
    assert sink.rewards == [("i1", 1.0)]  # the click still counts; the overflowing conversion does not
    assert join.counters["conversions"] == 0 and join.counters["unmatched"] == 1
    assert "not finite" in dead[0][1]
