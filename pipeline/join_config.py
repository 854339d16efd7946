"""The join's windows (:class:`JoinConfig`), apart from :mod:`banditloop.pipeline.join` to keep it short."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class JoinConfig:
    """Join windows in seconds of event time: feedback joins its impression when it is at most
    ``clock_skew`` earlier and ``click_window``/``conversion_window`` later; the watermark trails the
    newest event time by ``allowed_lateness``.

    >>> JoinConfig(click_window=1800.0).to_dict()["click_window"]
    1800.0
    """

    click_window: float = 3600.0
    conversion_window: float = 7 * 86400.0
    allowed_lateness: float = 60.0
    clock_skew: float = 5.0

    def __post_init__(self) -> None:
        for name in ("click_window", "conversion_window", "allowed_lateness", "clock_skew"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")

    @cached_property  # read for every impression and watermark move; the config is frozen
    def retention(self) -> float:
        return max(self.click_window, self.conversion_window)

    def close_after(self, reward_kind: str) -> float:
        """Seconds after an impression at which its feedback window closes for a ``reward_kind`` reward:
        the click window for clicks, else the longest window (a conversion follows its click).

        >>> JoinConfig(click_window=600.0, conversion_window=86400.0).close_after("click")
        600.0
        """
        return self.click_window if reward_kind == "click" else self.retention

    def to_dict(self) -> dict:
        return {"click_window": self.click_window, "conversion_window": self.conversion_window,
                "allowed_lateness": self.allowed_lateness, "clock_skew": self.clock_skew}
