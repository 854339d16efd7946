"""The consumer's watermark policy, without a broker: inputs, idleness and high watermarks."""

from __future__ import annotations

import pytest

from banditloop.core.backoff import Backoff
from banditloop.pipeline.watermark import InputWatermarks

ROLES = ("impressions", "clicks", "conversions")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(ends, clock, lateness=5.0, idleness=30.0, **kw):
    return InputWatermarks(ROLES, allowed_lateness=lateness, idleness=idleness, highwater=ends.get,
                           clock=clock, **kw)


def test_an_input_without_events_holds_the_watermark_back_until_it_is_idle_and_caught_up():
    clock, ends = Clock(), {"impressions": 2, "clicks": 0, "conversions": 0}
    wm = make(ends, clock)
    wm.observe("impressions", 1000.0, offset=2)
    assert wm.target() is None
    clock.now = 29.9
    assert wm.target() is None  # silent, but not for long enough
    clock.now = 31.0
    # all three are silent for > 30 s and caught up: everything available was read
    assert wm.target() == 995.0


def test_a_silent_input_that_lags_is_not_idle():
    clock, ends = Clock(), {"impressions": 1, "clicks": 50, "conversions": 0}
    wm = make(ends, clock)
    wm.observe("impressions", 1000.0, offset=1)
    wm.observe("clicks", 400.0, offset=10)  # 40 clicks not read yet
    clock.now = 100.0
    assert not wm.is_idle("clicks")
    assert wm.is_idle("impressions") and wm.is_idle("conversions")
    assert wm.target() == 395.0
    # unknown high watermark: never idle
    ends.pop("clicks")
    assert not wm.is_idle("clicks")


def test_the_watermark_is_the_minimum_over_active_inputs_minus_lateness():
    clock, ends = Clock(), {}
    wm = make(ends, clock, lateness=10.0)
    wm.observe("impressions", 500.0, offset=1)
    wm.observe("clicks", 300.0, offset=1)
    wm.observe("conversions", 450.0, offset=1)
    assert wm.floor() == 300.0 and wm.target() == 290.0
    assert wm.floor(exclude="clicks") == 450.0
    wm.observe("clicks", 200.0, offset=2)  # an older event does not move the newest time back
    assert wm.max_ts["clicks"] == 300.0 and wm.offsets["clicks"] == 2


def test_restored_offsets_and_times_are_used_and_copied():
    offsets, max_ts = {"impressions": 7}, {"impressions": 70.0, "clicks": 60.0, "conversions": 65.0}
    wm = make({}, Clock(), offsets=offsets, max_ts=max_ts)
    assert wm.target() == 55.0
    wm.observe("impressions", 80.0, offset=8)
    assert offsets == {"impressions": 7} and max_ts["impressions"] == 70.0


def test_backoff_doubles_up_to_its_cap_and_resets():
    b = Backoff(0.25, 1.0)
    assert [b.next() for _ in range(4)] == [0.25, 0.5, 1.0, 1.0]
    b.reset()
    assert b.next() == 0.25
    with pytest.raises(ValueError):
        Backoff(2.0, 1.0)
