"""When to save: every ``every_steps`` steps and every ``every_secs`` seconds."""

from __future__ import annotations

import time


def crossed(before: int, after: int, every: int) -> bool:
    """Whether a multiple of ``every`` (0: none) lies in (before, after]."""
    return bool(every) and after // every > before // every


class Schedule:
    """When to save: every ``every_steps`` steps and every ``every_secs`` seconds.

    Either may be 0 (off). The clock restarts at each save, so a slow run saves at least
    every ``every_secs`` seconds and a fast one at least every ``every_steps`` steps.
    """

    def __init__(self, every_steps: int, every_secs: float, clock=time.monotonic):
        self.every_steps, self.every_secs, self.clock = every_steps, every_secs, clock
        self.last = clock()

    def due(self, before: int, step: int) -> bool:
        """Whether a save is due after the call that took the run from ``before`` to ``step``."""
        return crossed(before, step, self.every_steps) or self.due_by_time()

    def due_by_time(self) -> bool:
        return bool(self.every_secs) and self.clock() - self.last >= self.every_secs

    def saved(self) -> None:
        self.last = self.clock()
