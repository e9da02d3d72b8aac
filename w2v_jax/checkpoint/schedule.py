"""When to save: every ``every_steps`` steps and every ``every_secs`` seconds."""

from __future__ import annotations

import time


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
        return self.due_by_steps(before, step) or self.due_by_time()

    def due_by_steps(self, before: int, step: int) -> bool:
        return bool(self.every_steps) and step // self.every_steps > before // self.every_steps

    def due_by_time(self) -> bool:
        return bool(self.every_secs) and self.clock() - self.last >= self.every_secs

    def saved(self) -> None:
        self.last = self.clock()
