"""Clicks that join after the pCTR head learned their impression's click label (``esmm`` through the join).

With event times (:mod:`banditloop.pipeline.event_time`) a model with ``click_labels`` (``esmm``) learns
each impression's click label once, at the first grid point after its click window (``ts +
click_window``), or at the close if that comes first, from ``imp.clicked`` at that moment. A click that
belongs to the impression (within the click window) but is delivered later than the allowed lateness can
still join the open impression after that moment: with a conversion reward it changes no reward, so the
join hands nothing to the sink, and the pCTR head would keep the negative it learned, unnoticed.

:class:`ClickLabelJoin` is the join ``LearningRun`` uses for such models, through the join's public hook
``EventJoin.on_click`` (a click made an impression clicked). When that happens after the label was
learned, it counts it (``late_click_labels``, a join counter: checkpointed with the join state, 0 in
states written before it) and has the sink correct the label (``EventTimeSink.learn_late_click``, the
learner's ``learn_late_click``): the pCTR head learns ``−log p − (−log(1 − p))``, the loss of the true
label less the loss of the negative it learned, so the sum of what the head learned for that impression
is its true term ``−log p`` (the same bookkeeping as the delayed feedback factors). Whether the label
was learned follows from the impression's time, the grid and the watermark (no per-impression state):
the impression is closed, or the watermark has passed the grid point of its label.
Clicks the join refuses (outside the click window: ``unmatched``) are counted there as before.
"""

from __future__ import annotations

import math

from banditloop.pipeline.event_time import EventTimeSink
from banditloop.pipeline.join import EventJoin, OpenImpression

COUNTER = "late_click_labels"


class ClickLabelJoin(EventJoin):
    """:class:`EventJoin` that corrects click labels learned before their click joined (see the module
    docstring); its sink is an ``EventTimeSink`` and ``tick`` its grid.

    >>> from banditloop.core.events import Click, Impression
    >>> from banditloop.core.reward import RewardSpec
    >>> from banditloop.pipeline.join import JoinConfig
    >>> from banditloop.pipeline.model import ModelConfig
    >>> from banditloop.pipeline.runner import LearningRun
    >>> config = ModelConfig("esmm", {"tick": 3600.0}, reward=RewardSpec("conversion"),
    ...                      join=JoinConfig(click_window=600.0, allowed_lateness=0.0))
    >>> run = LearningRun(config, "example")
    >>> run.process(Impression(event_id="e", ts=0.0, impression_id="i", arm="a"))
    'impression'
    >>> run.join.advance(7200.0)             # the label (not clicked) is learned at the 3600 s grid point
    >>> run.process(Click(event_id="c", ts=60.0, impression_id="i"))   # its click, delivered late
    'click'
    >>> run.counters()["late_click_labels"], run.learner.clicks("a")
    (1, 1.0)
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self.counters[COUNTER] = 0

    def label_learned(self, imp: OpenImpression) -> bool:
        """The click label of ``imp`` was learned: at its grid point (passed by the watermark) or at the close."""
        if imp.closed:
            return True
        w, tick = self.watermark, self.tick
        if w is None or not tick:
            return False
        return math.floor(w / tick) >= math.floor((imp.ts + self.config.click_window) / tick) + 1

    def on_click(self, imp: OpenImpression) -> None:
        if self.label_learned(imp):
            self.counters[COUNTER] += 1
            sink = self.sink
            assert isinstance(sink, EventTimeSink)
            sink.learn_late_click(imp)
