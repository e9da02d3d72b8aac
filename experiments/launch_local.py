"""Runs one training command as N JAX processes on this machine (a copyable launcher).

  python experiments/launch_local.py --num_processes=2 --local_devices=1 -- \\
      python -m w2v_jax.main --config=w2v_jax/configs/tiny.py \\
      --config.parallel.mode=mesh --workdir=/tmp/w2v_2proc

Process i runs the command with ``--config.parallel.coordinator=localhost:PORT
--config.parallel.num_processes=N --config.parallel.process_id=i`` (and
``--config.parallel.local_devices=L`` when given) appended, PORT a free localhost port;
process 0 hosts the coordinator. Each line a process prints comes out prefixed ``[i]``.

Nothing outlives the launcher: every process runs in its own process group, and when one
fails, the time limit passes or the launcher gets SIGINT/SIGTERM, every group is sent
SIGTERM, then SIGKILL after ``--grace_secs``. A training process takes SIGTERM as a
request to stop: all stop at the next step they agree on, with a checkpoint, and exit
143 (`w2v_jax.interrupt`); Ctrl-C to the launcher is the same. A survivor of a failed
process ends in one line (`interrupt.PeerLost`). On a multi-GPU node the same command runs
one process per GPU (``--local_devices`` is for CPUs only); on a TPU pod slice run the
training command itself on every host with ``--config.parallel.coordinator=auto``
(README, "Multi-host").

Exit status: 0 when every process exits 0; otherwise the first failing process's status
(one killed by a signal first), 124 when the time limit passed, 130/143 when interrupted.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from absl import flags

from w2v_jax import cli, errors

_NUM = flags.DEFINE_integer("num_processes", 2, "Processes to start.")
_LOCAL = flags.DEFINE_integer(
    "local_devices", 0, "CPU devices each process simulates (0: leave the command's)."
)
_TIMEOUT = flags.DEFINE_float("timeout_secs", 3600.0, "Kill every process after this long.")
_GRACE = flags.DEFINE_float("grace_secs", 10.0, "SIGTERM to SIGKILL delay when stopping.")


def free_port() -> int:
    """A localhost TCP port nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def commands(command: Sequence[str], num_processes: int, local_devices: int, port: int):
    """The command line of each process."""
    extra = [f"--config.parallel.local_devices={local_devices}"] if local_devices else []
    return [
        [
            *command,
            f"--config.parallel.coordinator=localhost:{port}",
            f"--config.parallel.num_processes={num_processes}",
            f"--config.parallel.process_id={i}",
            *extra,
        ]
        for i in range(num_processes)
    ]


def _relay(index: int, stream, out) -> None:
    for line in stream:
        out.write(f"[{index}] {line}")
        out.flush()


def _stop(procs: list[subprocess.Popen], grace: float) -> None:
    """SIGTERM to every live process group, SIGKILL to any still alive after ``grace``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        live = [p for p in procs if p.poll() is None]
        for p in live:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while any(p.poll() is None for p in live) and time.monotonic() < deadline:
            time.sleep(0.05)
    for p in procs:  # reap every group leader
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass


def launch(
    command: Sequence[str],
    num_processes: int,
    *,
    local_devices: int = 0,
    timeout_secs: float = 3600.0,
    grace_secs: float = 10.0,
    env: dict | None = None,
    out=None,
) -> int:
    """Runs ``command`` as ``num_processes`` processes; returns the exit status (module doc)."""
    out = out or sys.stderr
    port = free_port()
    procs: list[subprocess.Popen] = []
    relays = []
    stopped: list[int] = []

    def on_signal(signum, frame):
        stopped.append(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    status = 0
    try:
        for i, argv in enumerate(commands(command, num_processes, local_devices, port)):
            try:
                p = subprocess.Popen(
                    argv,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    env=env,
                    start_new_session=True,  # its own group: killpg reaches its children
                )
            except OSError as e:  # no such command, not executable
                raise errors.ConfigError(_cannot_start(argv[0], e)) from None
            procs.append(p)
            out.write(f"launch_local: process {i} is pid {p.pid}\n")
            relay = threading.Thread(target=_relay, args=(i, p.stdout, out), daemon=True)
            relay.start()
            relays.append(relay)
        deadline = time.monotonic() + timeout_secs
        while True:
            codes = [p.poll() for p in procs]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:  # a process killed by a signal first: a survivor may end within 0.1 s
                i, code = min(failed, key=lambda f: (f[1] > 0, f[0]))
                status = code if code > 0 else 128 - code
                how = f"was killed by {signal.Signals(-code).name}" if code < 0 else "failed"
                out.write(
                    f"launch_local: process {i} {how} (exit {code}; its message is above, "
                    "if it wrote one); stopping the others\n"
                )
                break
            if all(c == 0 for c in codes):
                break
            if stopped:
                status = 128 + stopped[0]
                out.write(f"launch_local: {signal.Signals(stopped[0]).name}; stopping all\n")
                break
            if time.monotonic() > deadline:
                status = 124
                out.write(f"launch_local: {timeout_secs:g}s passed; stopping all\n")
                break
            time.sleep(0.1)
    finally:
        _stop(procs, grace_secs)
        for relay in relays:
            relay.join(timeout=5)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


def _cannot_start(program: str, error: OSError | None = None) -> str:
    why = error.strerror if error is not None and error.strerror else "no such command"
    return (
        f"cannot run {program!r} ({why}); give the command after --, e.g. "
        "-- python -m w2v_jax.main --config=w2v_jax/configs/tiny.py --workdir=DIR"
    )


def main(argv: list[str]) -> None:
    command = argv[1:]
    if not command:
        raise errors.ConfigError("give the command to run after --, e.g. -- python -m w2v_jax.main")
    if _NUM.value < 1:
        raise errors.ConfigError(f"--num_processes={_NUM.value} must be >= 1")
    if shutil.which(command[0]) is None:  # before any process starts
        raise errors.ConfigError(_cannot_start(command[0]))
    sys.exit(
        launch(
            command,
            _NUM.value,
            local_devices=_LOCAL.value,
            timeout_secs=_TIMEOUT.value,
            grace_secs=_GRACE.value,
        )
    )


if __name__ == "__main__":
    cli.run(main)
