"""Progress bars (tqdm) on stderr that appear only on runs longer than two seconds.

``smoothing=0``: the rate shown is the average since the bar started, so the last one a bar shows
agrees with the rate in the command's summary for the same phase (not a recent-window estimate).

A quiet run (``--quiet``, ``--json``) gets a :class:`NullBar` instead, with the attributes and methods
of a disabled tqdm bar that the commands use, and tqdm is not imported at all (~30 ms of start-up).

>>> with progress_bar(10, desc="example", quiet=True) as bar:
...     bar.update(4)
...     bar.set_postfix(regret="1.0")
>>> bar.total, bar.n
(10, 0)
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm


class NullBar:
    """What a disabled tqdm bar does: nothing (``n`` stays at 0, as tqdm's does when disabled)."""

    disable = True

    def __init__(self, total: int | None) -> None:
        self.total: Any = total  # as tqdm's (untyped), so callers may do arithmetic on it
        self.n = 0

    def update(self, n: float = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_description(self, *args: Any, **kwargs: Any) -> None:
        pass

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NullBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress_bar(total: int | None, *, desc: str, unit: str = "ev", quiet: bool = False) -> tqdm | NullBar:
    if quiet:
        return NullBar(total)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, delay=2.0, disable=quiet,
                file=sys.stderr, mininterval=0.5, dynamic_ncols=True, smoothing=0)
