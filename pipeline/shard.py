"""One partition number owned by a consume worker: its learning run and its inputs' positions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from banditloop.core.events import Click, Conversion, Event, Impression
from banditloop.pipeline.runner import LearningRun
from banditloop.pipeline.watermark import InputWatermarks


def shard_name(partition: int) -> str:
    return f"p{partition}"


@dataclass
class Shard:
    """One partition number: its learning run and, per input, next offset, newest event time and
    activity (:class:`InputWatermarks`)."""

    partition: int
    run: LearningRun
    inputs: InputWatermarks
    dirty: bool = False

    def source(self) -> dict[str, Any]:
        return {"kind": "kafka", "partition": self.partition, "offsets": dict(self.inputs.offsets),
                "max_ts": dict(self.inputs.max_ts)}

    def advance_watermark(self) -> None:
        """Move the join's watermark to what the inputs now allow (it never goes back)."""
        target = self.inputs.target()
        if target is None:
            return
        join = self.run.join
        before = join.watermark
        join.set_watermark(target)
        if join.watermark != before:
            self.dirty = True


#: the event type each input role carries
EXPECTED_TYPE: dict[str, type[Event]] = {"impressions": Impression, "clicks": Click, "conversions": Conversion}
