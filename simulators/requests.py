"""What the world hands a policy (:class:`Request`) and what showing an arm led to (:class:`Outcome`);
see :mod:`banditloop.simulators.world`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from banditloop.core.events import Click, Conversion, Impression
from banditloop.simulators.blocks import Truth

__all__ = ["Request", "Outcome"]


@dataclass(slots=True)
class Request:
    """One ad request. ``context``, ``arm_features`` and ``x`` are shared with the world: treat as read-only.

    ``x`` is the context as a vector (``context["x{i}"] == x[i]``). ``retired`` and ``added`` list
    the arms that churned out and in just before this request (empty without churn).
    """

    step: int
    ts: float
    impression_id: str
    context: dict[str, float | str]  # numbers only; typed as the event model's features
    candidates: list[str]
    arm_features: dict[str, dict[str, float | str]]
    x: np.ndarray
    retired: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    truth: Truth = field(default=None, repr=False)  # type: ignore[assignment]

    def expected_reward(self, arm: str) -> float:
        """Expected reward of showing ``arm`` here, under the world's :class:`~banditloop.core.reward.RewardSpec`."""
        return float(self.truth.block.expected[self.truth.row, self._position(arm)])

    def expected_rewards(self) -> np.ndarray:
        """Expected reward of every candidate, in candidate order."""
        return self.truth.expected.copy()

    def realized_rewards(self) -> np.ndarray:
        """The reward each candidate *would* realise if shown (common random numbers), in candidate order."""
        return self.truth.rewards.copy()

    @property
    def oracle_arm(self) -> str:
        return self.candidates[int(self.truth.block.oracle[self.truth.row])]

    @property
    def oracle_expected_reward(self) -> float:
        return float(self.truth.block.oracle_expected[self.truth.row])

    def _position(self, arm: str) -> int:
        try:
            return self.truth.index[arm]
        except KeyError:
            raise ValueError(f"arm {arm!r} is not a candidate of request {self.step}") from None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What showing one arm led to: the events (with event times) and the truth behind them."""

    impression: Impression
    click: Click | None
    conversion: Conversion | None
    clicked: bool
    converted: bool
    value: float
    #: realised reward under the world's reward spec
    reward: float
    expected_reward: float
    oracle_arm: str
    oracle_expected_reward: float

    @property
    def regret(self) -> float:
        """Expected reward lost against the best candidate (0 for the oracle's choice)."""
        return self.oracle_expected_reward - self.expected_reward

    @property
    def events(self) -> list[Impression | Click | Conversion]:
        """The impression and its feedback, in event-time order."""
        return [e for e in (self.impression, self.click, self.conversion) if e is not None]
