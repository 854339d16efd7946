"""Periodic checkpoints driven by APScheduler.

The scheduler thread never touches learner state: it only raises a flag, and the processing loop
checkpoints at the next event boundary (where parameters, join state and source position agree).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a timer starts: a run without checkpoints never loads APScheduler (~0.1 s)
    from apscheduler.schedulers.background import BackgroundScheduler


class CheckpointTimer:
    def __init__(self, interval_seconds: float | None) -> None:
        self.interval = interval_seconds
        self._due = threading.Event()
        self._scheduler: BackgroundScheduler | None = None

    def start(self) -> CheckpointTimer:
        if self.interval and self.interval > 0 and self._scheduler is None:
            from apscheduler.schedulers.background import BackgroundScheduler

            self._scheduler = BackgroundScheduler(daemon=True)
            self._scheduler.add_job(self._due.set, "interval", seconds=self.interval,
                                    id="checkpoint", max_instances=1, coalesce=True)
            self._scheduler.start()
        return self

    def due(self) -> bool:
        """True once per elapsed interval (the flag is cleared when read)."""
        if self._due.is_set():
            self._due.clear()
            return True
        return False

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    def __enter__(self) -> CheckpointTimer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
