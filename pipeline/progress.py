"""Progress bars (tqdm) that appear only on runs longer than a couple of seconds."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int | None, *, desc: str, unit: str = "ev", quiet: bool = False) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, delay=2.0, disable=quiet,
                file=sys.stderr, mininterval=0.5, dynamic_ncols=True)
