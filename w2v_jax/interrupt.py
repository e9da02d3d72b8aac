"""Ctrl-C and SIGTERM as a request to stop cleanly: finish the call, save, then stop.

While the training loop is inside a `Catcher`, the first SIGINT or SIGTERM only sets
``requested`` (its handler replaces JAX's preemption notifier's for SIGTERM, which only
records the notice); the loop saves a checkpoint and raises `Interrupted`, several
processes at one agreed step (`resume.Checkpoints.agree`). A second signal restores the
default behaviour, so a stuck run can still be stopped. Outside the main thread it does
nothing. docs/reliability.md, "Several processes", says how processes stop together.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading

import jax
from absl import logging

from w2v_jax import errors

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


class PeerLost(errors.UserError):
    """Another process of the run stopped (killed, or failed with its own message), so a
    collective this process ran failed: one line, not JAX's Gloo traceback."""


# What XLA's collectives (Gloo on CPU) and JAX's coordination service say when a peer
# is gone: its sockets closed or reset, or its heartbeats stopped.
_PEER_GONE = (
    "Gloo", "Connection reset by peer", "Connection closed", "Connection refused",
    "Socket closed", "heartbeat", "UNAVAILABLE",
)  # fmt: skip


def peer_lost(error: BaseException) -> PeerLost | None:
    """``error`` as one line when it is a peer's failure seen by this process (a
    `jax.errors.JaxRuntimeError` of a collective, several processes); None otherwise (a
    bug, which keeps its traceback)."""
    if not isinstance(error, jax.errors.JaxRuntimeError) or jax.process_count() == 1:
        return None
    text = " ".join(str(error).split())
    if not any(mark in text for mark in _PEER_GONE):
        return None
    return PeerLost(
        f"process {jax.process_index()}: another process of the run stopped, so this one "
        f"stops too (see that process's message above; here: {text[:160]}); rerun the same "
        "command to resume from the last checkpoint"
    )


def exit_without_peers(code: int = 1) -> None:
    """Ends this process, when it exits, without JAX's shutdown barrier (which waits 300 s
    for every process, while a peer may be dead or waiting for this one): for a process of
    several that failed. Its closed sockets make a peer's collective fail at once, in one
    line (`peer_lost`). Registered after JAX's own exit handler, so it runs first, once the
    error is printed and every non-daemon thread (a save in flight) has ended; the process
    exits with ``code`` (docs/reliability.md, "Sharded checkpoints recover ...")."""
    atexit.register(_exit_now, code)


def _exit_now(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


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
            # None: a handler not set from Python (JAX's preemption notifier, in C++)
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()

    def __exit__(self, *exc) -> None:
        self._restore()
