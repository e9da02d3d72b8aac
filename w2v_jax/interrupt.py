"""Ctrl-C and SIGTERM as a request to stop cleanly: finish the call, save, then stop.

`Catcher` is a context manager the training loop enters: while it is active, the first
SIGINT or SIGTERM only sets ``requested``; the loop checks it after each call, saves a
checkpoint and raises `Interrupted`. A second signal restores the default behaviour
(SIGINT: KeyboardInterrupt at once), so a stuck run can still be stopped. Outside the
main thread (where Python cannot install handlers) it does nothing.
"""

from __future__ import annotations

import signal
import threading

from absl import logging

# Exit status of a program stopped by a signal: 128 + the signal's number (the shell's).
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(KeyboardInterrupt):
    """The run stopped on a signal after saving its checkpoint.

    A KeyboardInterrupt, so code that records ordinary failures (``except Exception``,
    as the sweep does) lets it through and the whole program stops.
    """

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum, self.message = signum, message

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 1)


class Catcher:
    """``with interrupt.Catcher() as stop: ... if stop.requested: ...``"""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        if self.requested:  # the second signal: give the default behaviour back
            self._restore()
            signal.raise_signal(signum)
            return
        self.signum = signum
        logging.warning(
            "%s received: finishing this step and saving a checkpoint (again to stop now)",
            signal.Signals(signum).name,
        )

    def __enter__(self) -> Catcher:
        if threading.current_thread() is threading.main_thread():
            for signum in EXIT_CODES:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __exit__(self, *exc) -> None:
        self._restore()
