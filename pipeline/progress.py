"""Progress bars (tqdm) on stderr that appear only on runs longer than two seconds.

``smoothing=0``: the rate shown is the average since the bar started, so the last one a bar shows
agrees with the rate in the command's summary for the same phase (not a recent-window estimate).
"""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int | None, *, desc: str, unit: str = "ev", quiet: bool = False) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, delay=2.0, disable=quiet,
                file=sys.stderr, mininterval=0.5, dynamic_ncols=True, smoothing=0)
