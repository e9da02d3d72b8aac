"""Before JAX starts: joining a multi-process run, and XLA:GPU's determinism flag.

`jax.distributed.initialize` from ``config.parallel`` (its fields: ``configs/default.py``,
"parallelism"); ``XLA_FLAGS`` from ``config.deterministic``. Every process runs the same
program, and a ``jit`` over a mesh of all processes' devices is one SPMD computation whose
collectives cross processes (NCCL on GPUs, ICI on TPUs, Gloo over TCP on CPUs). Process 0
hosts the coordinator, which the others reach at ``parallel.coordinator`` (host:port;
``"auto"``: JAX detects a Cloud TPU pod slice, SLURM or Open MPI).

`initialize` must run before anything touches a JAX backend; `trainer.train_and_evaluate`
calls it first. Calling it again with the same settings does nothing.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
import time
from typing import NamedTuple

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from w2v_jax import errors


class Options(NamedTuple):
    """Which multi-process run this process joins (see the module doc)."""

    coordinator: str  # "" (one process), "host:port" or "auto"
    num_processes: int
    process_id: int
    local_devices: int  # CPU: simulated devices per process; 0 = JAX's default
    init_timeout_secs: int
    deterministic: bool  # GPUs: XLA:GPU's deterministic scatters and reductions


# XLA:GPU's switch for run-to-run determinism (xla/debug_options_flags.cc: "Guarantees
# run-to-run determinism on GPU"; present in jaxlib 0.10.2's libjax_common.so): scatters
# (the sparse updates' scatter-adds) and reductions get deterministic, slower kernels,
# GEMM autotuning is off, and an op with no deterministic kernel (select-and-scatter, not
# used here) fails to compile. It implies --xla_gpu_exclude_nondeterministic_ops. XLA:CPU
# and XLA:TPU do not read it.
DETERMINISTIC_FLAG = "--xla_gpu_deterministic_ops"


def check_processes(config, count: int) -> None:
    """One-line ValueError unless ``count`` processes can run this config: more than one
    needs parallel.mode='mesh' and input.mode='host'. Called with the configured count
    before joining (`options`) and with ``jax.process_count()`` after (settings.validate)."""
    if count <= 1:
        return
    for name, value, need in (
        ("parallel.mode", config.parallel.mode, "mesh"),
        ("input.mode", config.input.mode, "host"),
    ):
        if value != need:
            raise errors.ConfigError(
                f"--config.{name}={value!r}: {count} processes run parallel.mode='mesh' "
                f"with input.mode='host'; set {name}={need!r}"
            )


def options(config) -> Options:
    """Validated `Options` from ``config.parallel``; a one-line ValueError otherwise (before
    any process tries to join, so a bad command never waits for the others)."""
    p = config.parallel
    for name in ("num_processes", "process_id", "local_devices", "init_timeout_secs"):
        low = 1 if name in ("num_processes", "init_timeout_secs") else 0
        errors.at_least(f"parallel.{name}", p[name], low, integer=True)
    coordinator = p.coordinator
    if not isinstance(coordinator, str):
        raise errors.ConfigError(f"--config.parallel.coordinator={coordinator!r} must be a string")
    if coordinator not in ("", "auto"):
        _check_address(coordinator)
    if coordinator == "" and p.num_processes > 1:
        raise errors.ConfigError(
            f"--config.parallel.num_processes={p.num_processes} needs parallel.coordinator="
            "'host:port' (process 0's address), or 'auto' on a TPU pod or SLURM"
        )
    if coordinator not in ("", "auto") and not p.process_id < p.num_processes:
        raise errors.ConfigError(
            f"--config.parallel.process_id={p.process_id} must be below "
            f"parallel.num_processes={p.num_processes} (processes are numbered from 0)"
        )
    check_processes(config, p.num_processes)
    errors.boolean("deterministic", config.deterministic)
    return Options(coordinator, p.num_processes, p.process_id, p.local_devices,
                   p.init_timeout_secs, config.deterministic)  # fmt: skip


def _check_address(coordinator: str) -> None:
    """A one-line `errors.ConfigError` unless ``coordinator`` is host:port with a host name
    or address and a port in 1..65535 (checked before any process tries to join)."""
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[\w.\-]+):(\d+)", coordinator)
    if not match:
        raise errors.ConfigError(
            f"--config.parallel.coordinator={coordinator!r} is not host:port; use e.g. "
            "'localhost:12355', 'auto' (TPU pod, SLURM) or '' for one process"
        )
    port = int(match.group(2))
    if not 1 <= port <= 65535:
        raise errors.ConfigError(
            f"--config.parallel.coordinator={coordinator!r}: port {port} is not in "
            "1..65535; use e.g. 'localhost:12355'"
        )


def _flag_setting(flags: str) -> bool | None:
    """The last value ``flags`` (an XLA_FLAGS string) gives DETERMINISTIC_FLAG, or None."""
    value = None
    for flag in flags.split():
        name, _, given = flag.partition("=")
        if name == DETERMINISTIC_FLAG:
            value = given.lower() in ("", "true", "1")
    return value


def set_deterministic(deterministic: bool) -> None:
    """Asks XLA:GPU for deterministic scatters and reductions (``config.deterministic``).

    XLA reads ``XLA_FLAGS`` once, when the first backend starts: before that, this adds
    ``--xla_gpu_deterministic_ops=true`` to it (replacing a ``=false``). ``False`` leaves
    ``XLA_FLAGS`` as the user set it. A no-op on CPU (XLA:CPU is deterministic already)
    and on TPU (no such switch).

    Raises:
      ValueError: a GPU backend already started without the flag (a notebook that ran
        JAX before): it cannot be turned on in this process.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if not deterministic or _flag_setting(flags):
        return
    from jax._src import xla_bridge  # noqa: PLC0415 (no public "has a backend started")

    if xla_bridge.backends_are_initialized():
        if jax.default_backend() == "gpu":
            raise errors.ConfigError(
                "--config.deterministic=True but JAX's GPU backend already started without "
                f"{DETERMINISTIC_FLAG}; set XLA_FLAGS={DETERMINISTIC_FLAG}=true before "
                "importing JAX, or restart the process (notebook: restart the kernel)"
            )
        return  # XLA:CPU is deterministic; XLA:TPU has no such flag
    kept = [f for f in flags.split() if f.partition("=")[0] != DETERMINISTIC_FLAG]
    os.environ["XLA_FLAGS"] = " ".join([*kept, f"{DETERMINISTIC_FLAG}=true"])
    logging.info("XLA_FLAGS=%s (config.deterministic)", os.environ["XLA_FLAGS"])


def simulate_cpu_devices(n: int) -> None:
    """One process simulating ``n`` CPU devices (``parallel.local_devices`` without a
    coordinator: a mesh on one machine). JAX takes the count only before its backend
    starts; after that, the same count is accepted and another is one line."""
    from jax._src import xla_bridge  # noqa: PLC0415 (no public "has a backend started")

    if not xla_bridge.backends_are_initialized():
        jax.config.update("jax_num_cpu_devices", n)
        return
    if jax.default_backend() == "cpu" and jax.local_device_count() != n:
        raise errors.ConfigError(
            f"--config.parallel.local_devices={n} but JAX already started with "
            f"{jax.local_device_count()} CPU devices; set it before JAX starts (a new "
            "process; notebook: restart the kernel), or leave local_devices at 0"
        )


def initialize(opts: Options) -> None:
    """Joins the run ``opts`` describes (nothing for one process); one line on failure.

    Raises:
      ValueError: a JAX backend already started in this process (several processes, or
        ``deterministic`` on a GPU), or the coordinator or some process did not answer
        within ``init_timeout_secs``.
    """
    set_deterministic(opts.deterministic)
    if not opts.coordinator:
        if opts.local_devices:
            simulate_cpu_devices(opts.local_devices)
        return
    if jax.distributed.is_initialized():
        if opts.coordinator != "auto" and jax.process_count() != opts.num_processes:
            raise errors.ConfigError(
                f"--config.parallel.num_processes={opts.num_processes} but this process "
                f"already joined a run of {jax.process_count()}; start a new process"
            )
        return
    # Gloo is JAX's default cross-process collective on CPU; set it explicitly so a
    # changed default cannot leave CPU runs without collectives. Ignored on GPU/TPU.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if opts.local_devices:
        jax.config.update("jax_num_cpu_devices", opts.local_devices)
    # JAX aborts the process (a C++ fatal error, rc 134, no exception) when its peers do
    # not all join within its timeout. So the deadline is ours: JAX gets WATCH_MARGIN_SECS
    # more, and `_Watch` says every few seconds that this process waits, then ends it with
    # one line at init_timeout_secs.
    kwargs = dict(initialization_timeout=opts.init_timeout_secs + WATCH_MARGIN_SECS)
    if opts.coordinator != "auto":
        kwargs.update(
            coordinator_address=opts.coordinator,
            num_processes=opts.num_processes,
            process_id=opts.process_id,
        )
    try:
        with _Watch(opts):
            if opts.coordinator != "auto" and opts.process_id:
                _wait_for_coordinator(opts)  # one line (an exception) if nothing listens
            jax.distributed.initialize(**kwargs)
    except RuntimeError as e:
        if "before any JAX" in str(e) or "already" in str(e):
            raise errors.ConfigError(
                "--config.parallel.coordinator is set but JAX already started in this process; "
                "run each process as its own program (experiments/launch_local.py)"
            ) from None
        raise _no_answer(opts, e) from None
    except Exception as e:  # XlaRuntimeError (DEADLINE_EXCEEDED, UNAVAILABLE, ...)
        raise _no_answer(opts, e) from None
    logging.info(
        "process %d of %d joined the run at %s: %d local of %d devices",
        jax.process_index(), jax.process_count(), opts.coordinator,
        jax.local_device_count(), jax.device_count(),
    )  # fmt: skip


WATCH_MARGIN_SECS = 30  # JAX's own join timeout lies this far beyond ours
WATCH_EVERY_SECS = 5.0  # how often a waiting process says so


class _Watch:
    """While a process joins: a thread that logs every `WATCH_EVERY_SECS` that it is
    waiting for its peers, and at ``init_timeout_secs`` prints `_no_answer`'s line to
    stderr and ends the process with status 1 (``os._exit``: the join cannot be
    interrupted, and nothing has been written yet)."""

    def __init__(self, opts: Options):
        self.opts = opts
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="w2v-join-watch", daemon=True)

    def __enter__(self):
        self.start = time.monotonic()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()

    def _watch(self) -> None:
        o = self.opts
        deadline = self.start + o.init_timeout_secs
        while not self.done.wait(min(WATCH_EVERY_SECS, max(deadline - time.monotonic(), 0))):
            waited = time.monotonic() - self.start
            if waited >= o.init_timeout_secs:
                error = _no_answer(o, TimeoutError(f"waited {waited:.0f}s for the others"))
                sys.stderr.write(f"error: {' '.join(str(error).split())}\n")
                sys.stderr.flush()
                os._exit(1)
            logging.info(
                "process %d of %d: waiting for the others at %s (%.0fs of "
                "parallel.init_timeout_secs=%d)",
                o.process_id, o.num_processes, o.coordinator, waited, o.init_timeout_secs,
            )  # fmt: skip


def _wait_for_coordinator(opts: Options) -> None:
    """Returns once something listens at ``opts.coordinator``; ValueError after the timeout."""
    host, port = opts.coordinator.rsplit(":", 1)
    host = host.strip("[]")
    deadline = time.monotonic() + opts.init_timeout_secs
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=1.0):
                return
        except OSError as e:
            if time.monotonic() > deadline:
                raise _no_answer(opts, e) from None
            time.sleep(0.2)


def _no_answer(opts: Options, error: BaseException) -> errors.ResourceError:
    what = " ".join(str(error).split())[:160]
    return errors.ResourceError(
        f"--config.parallel.coordinator={opts.coordinator!r}: process {opts.process_id} of "
        f"{opts.num_processes} could not join within parallel.init_timeout_secs="
        f"{opts.init_timeout_secs} ({what}); start all {opts.num_processes} processes with "
        "the same coordinator (process 0 hosts it) or raise the timeout"
    )


LINE_BYTES = 2048  # of a line `gather_lines` shares: a one-line error fits


def gather_lines(line: str) -> list[str]:
    """Every process's ``line`` ("" for none), in process order: one all-gather of
    `LINE_BYTES` per process (a longer line is cut). Every process must call it."""
    mine = line.encode("utf-8", "replace")[:LINE_BYTES]
    buf = np.zeros(LINE_BYTES, np.uint8)
    buf[: len(mine)] = np.frombuffer(mine, np.uint8)
    every = np.asarray(multihost_utils.process_allgather(buf)).reshape(-1, LINE_BYTES)
    return [bytes(row).rstrip(b"\0").decode("utf-8", "replace") for row in every]


def is_chief() -> bool:
    """Whether this process writes the run folder's shared files (process 0)."""
    return jax.process_index() == 0
