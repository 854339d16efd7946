"""What a simulated run cannot show, said before it runs (``simulate`` prints it and reports ``warnings``).

A simulation is short in event time: 10,000 requests at 10 per second are 1,000 seconds. The join's
default windows are set for production (a click within 1 hour, a conversion within 7 days), and so are
``dfm``'s and ``esmm``'s ticks (1/28 of the window). A learner that learns an impression without feedback
only when its window closes, or its elapsed time only at a tick, learns none of that inside a shorter run:
it sees the clicks and conversions that arrive and nothing of the impressions that did not pay, so its
regret and ``calibration`` describe a model fed positives only (or its prior). When windows do close in
the run but an hour late where clicks take seconds, the negatives lag just as long (at 50,000 steps,
``logistic-ts``'s regret is 2,681 with the 1-hour click window and 938 with a 208 s one,
``benchmarks/README.md``). The run is still correct and replays the same; its figures answer another
question. These checks name the case and the setting that changes it: windows that cover the world's
delays (:func:`~banditloop.simulators.conversions.covering_windows`) when they fit in the run, else a
longer run.

>>> from banditloop.pipeline.model import ModelConfig
>>> from banditloop.simulators.config import WorldConfig
>>> config = ModelConfig("ts")  # the join's default 1-hour click window
>>> print(feedback_warnings(config.new_learner(), config, WorldConfig(rate=10.0), steps=10_000)[0])
... # doctest: +NORMALIZE_WHITESPACE
no click window closes during the run (windows of 3600 s, the run spans 1000 s of event time): ts learns an
impression without a click when its window closes, so until the run ends it learns only the clicks that
arrive; --click-window 208 covers 99.9 % of this world's click delays
"""

from __future__ import annotations

import math

from banditloop.operators.base import Learner
from banditloop.pipeline.model import ModelConfig
from banditloop.simulators.config import WorldConfig
from banditloop.simulators.conversions import COVERAGE, covering_windows

#: windows are worth a word when they are at least this share of the run ...
LATE_SHARE = 0.1
#: ... and at least this many times the window that covers the world's delays
LATE_FACTOR = 2.0


def feedback_warnings(learner: Learner, config: ModelConfig, world: WorldConfig, steps: int) -> list[str]:
    """One sentence per thing the run cannot show: no feedback window closes inside it, or they close late
    (a tenth of the run or more, twice a window that covers the world's delays or more), for learners that
    learn at the close; no tick falls inside it, for learners that learn elapsed times at ticks."""
    span = steps / world.rate  # seconds of event time the requests cover
    kind = config.reward.kind
    window = config.join.close_after(kind)
    name = config.learner
    tick = float(getattr(learner, "tick", 0.0)) if learner.learns_event_times else 0.0
    if tick > 0.0:
        if tick < span:
            return []
        return [f"no tick falls inside the run (tick {tick:g} s, the run spans {span:g} s of event time): {name} "
                f"learns the elapsed time of impressions without a {kind} only at ticks, so until the run ends it "
                f"learns only the {kind}s that arrive (nothing with conversions_at=tick); set --param "
                f"tick=SECONDS below {span:g}"]
    if not learner.learns_at_close or window < LATE_SHARE * span:  # windows short against the run
        return []
    click, conversion = covering_windows(world)
    covering = math.ceil(click if kind == "click" else conversion)
    flag = "--click-window" if kind == "click" else "--conversion-window"
    suggestion = f"{flag} {covering} covers {COVERAGE:.1%} of this world's {kind} delays".replace("%", " %")
    if window < span:  # windows close in the run, but late: worth saying only when a covering one is far shorter
        if window < LATE_FACTOR * covering:
            return []
        return [f"the {kind} windows ({window:g} s) are {100 * window / span:.0f} % of the run ({span:g} s of event "
                f"time) and {window / covering:.0f}× the {covering} s within which this world's {kind}s arrive: "
                f"{name} learns an impression without a {kind} when its window closes, {window:g} s after it; "
                f"{suggestion}"]
    remedy = suggestion if covering < span else "run longer than a window (more --steps, a lower --rate)"
    return [f"no {kind} window closes during the run (windows of {window:g} s, the run spans {span:g} s of event "
            f"time): {name} learns an impression without a {kind} when its window closes, so until the run ends "
            f"it learns only the {kind}s that arrive; {remedy}"]
