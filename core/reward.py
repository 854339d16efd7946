"""What counts as reward: a click, a conversion, or a click plus the weighted value of conversions.

The pipeline learns from feedback that trickles in (a click seconds after the impression, a
conversion hours later), so a reward is a function of everything seen so far for one impression:
whether it was clicked, how many conversions arrived and their summed value. Because
:meth:`RewardSpec.value` is a plain function of those totals, the increment to learn when new
feedback arrives is ``value(after) - value(before)``; learners add increments (``learn_reward``).

The simulator (:mod:`banditloop.simulators.world`) uses the same spec for its expected rewards, so regret is
measured in the unit the learners optimise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RewardKind = Literal["click", "conversion", "click+value"]
REWARD_KINDS: tuple[str, ...] = ("click", "conversion", "click+value")


@dataclass(frozen=True)
class RewardSpec:
    """How feedback becomes a reward.

    * ``"click"``: 1 if the impression was clicked, else 0;
    * ``"conversion"``: 1 if at least one conversion arrived, else 0 (duplicates do not count twice);
    * ``"click+value"``: ``clicked + weight * value_sum``, a click plus the weighted conversion value.

    ``weight`` is used by ``"click+value"`` only.

    >>> RewardSpec("click+value", weight=0.1).value(clicked=True, conversions=1, value_sum=20.0)
    3.0
    """

    kind: RewardKind = "click"
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in REWARD_KINDS:
            raise ValueError(f"unknown reward kind {self.kind!r}; choose from {', '.join(REWARD_KINDS)}")
        if not self.weight >= 0.0:  # also rejects NaN
            raise ValueError("weight must be >= 0")

    @property
    def binary(self) -> bool:
        """Rewards are 0 or 1 (Bernoulli learners can use them unclipped)."""
        return self.kind != "click+value"

    def value(self, clicked: bool, conversions: int, value_sum: float) -> float:
        """The reward of one impression given all its feedback so far."""
        if self.kind == "click":
            return 1.0 if clicked else 0.0
        if self.kind == "conversion":
            return 1.0 if conversions > 0 else 0.0
        return (1.0 if clicked else 0.0) + self.weight * float(value_sum)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "weight": self.weight}

    @classmethod
    def from_dict(cls, data: dict) -> RewardSpec:
        return cls(kind=data.get("kind", "click"), weight=float(data.get("weight", 1.0)))
