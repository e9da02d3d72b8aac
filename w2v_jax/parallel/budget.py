"""Will the run fit? The bytes a config asks for, estimated before anything is allocated
(docs/reliability.md, "Resources and start-up").

Shape letters: V vocabulary rows, D dim, W window, C context slots (2W, or W with
``left_only``; 1 for the pairs layout), B rows a call sends (batch_size x steps_per_call;
a step takes batch_size of them), K noise samples, M kept tokens in one input chunk.

`estimate` lists what a run holds at its peak on the host and on each device, each item
with the config fields that set its size (as the user types them: ``--config.window``);
`check` refuses in one `errors.ResourceError` what exceeds the memory available (the
host's `host_available`, each device's `free_bytes`; on CPU both sums meet one
figure). The estimate is rough (a factor of about two): it stops a config that asks for
terabytes, it does not pack memory tight.
"""

from __future__ import annotations

import math
import resource
from typing import NamedTuple

from w2v_jax import errors

CHUNK_TOKENS = 1 << 16  # input_pipeline.iterate_batches' default chunk_tokens


class Need(NamedTuple):
    """One thing a run holds at its peak."""

    what: str  # e.g. "window patterns"
    bytes: int
    fields: tuple[str, ...]  # the flags that set its size, e.g. ("--config.window",)
    where: str  # "host" or "device"


def host_available() -> tuple[int | None, str]:
    """Bytes this process may still allocate on the host and where the figure comes from:
    the least of ``MemAvailable`` (/proc/meminfo) and what ``ulimit -v`` (RLIMIT_AS) leaves
    above the process's current address space; (None, "unknown") when neither is known."""
    figures = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    figures.append((int(line.split()[1]) * 1024, "host MemAvailable"))
                    break
    except OSError:
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        figures.append((max(0, soft - _address_space()), "ulimit -v"))
    return min(figures) if figures else (None, "unknown")


def _address_space() -> int:
    """The process's virtual memory size in bytes (VmSize), 0 when unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def estimate(
    *,
    window: int,
    left_only: bool,
    layout: str,
    rows_per_call: int,
    prefetch: int,
    dim: int,
    k: int,
    vocab_size: int,
    num_tokens: int,
    state_bytes: int,
    steps_per_call: int = 1,
    devices: int = 1,
) -> list[Need]:
    """The `Need`s of a run, host and device (docs/reliability.md). ``num_tokens`` bounds
    a chunk's M (the corpus may be smaller than a chunk); ``state_bytes`` is one device's
    share of the train state; a step takes ``rows_per_call / steps_per_call`` rows, shared
    by ``devices``."""
    w, slots = int(window), int(window) * (1 if left_only else 2)
    m = min(CHUNK_TOKENS, max(int(num_tokens), 1))
    patterns = (w + 1) * (1 if left_only else (w + 1)) * slots * 5  # bool + float32
    if layout == "pairs":  # [M·C] pairs of (centre, context, weight) int32/float32
        chunk = m * slots * 12 * 2 + m * slots * 13
        c = 1
    else:  # contexts int32, mask float32, validity bool, and the shuffled copy
        chunk = m * slots * (4 + 4 + 1) * 2
        c = slots
    batches = int(rows_per_call) * c * 8 * (int(prefetch) + 2)
    host_tables = 2 * int(vocab_size) * int(dim) * 4
    rows = math.ceil(int(rows_per_call) / max(int(steps_per_call), 1) / max(int(devices), 1))
    step = 3 * rows * (c + int(k) + 1) * int(dim) * 4
    size = ("--config.dim", "--config.corpus.max_vocab_size")
    return [
        Need("window patterns", patterns, ("--config.window",), "host"),
        Need("one input chunk's rows", chunk, ("--config.window",), "host"),
        Need(
            "batches in flight",
            batches,
            (
                "--config.batch_size",
                "--config.steps_per_call",
                "--config.window",
                "--config.prefetch",
            ),
            "host",
        ),  # fmt: skip
        Need("host copy of the tables", host_tables, size, "host"),
        Need("train state", int(state_bytes), size, "device"),
        Need(
            "a step's temporaries",
            step,
            ("--config.batch_size", "--config.window", "--config.loss.k", "--config.dim"),
            "device",
        ),
    ]


def gib(n: float) -> str:
    """``n`` bytes, readable: '1.23 GiB', '910.5 TiB'."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n / 2**20:.2f} MiB"


def check(
    needs: list[Need],
    *,
    host_free: tuple[int | None, str],
    device_free: tuple[int | None, str],
    device_is_host: bool,
    platform: str = "cpu",
) -> None:
    """A one-line `errors.ResourceError` when the host's needs (plus the devices' when the
    device memory is the host's, ``device_is_host``) exceed ``host_free``, or the device's
    needs exceed ``device_free`` ((bytes or None, where the figure comes from) each). The
    message names the largest items, their sizes, and the fields that set them."""
    host = [n for n in needs if n.where == "host" or device_is_host]
    device = [] if device_is_host else [n for n in needs if n.where == "device"]
    for items, (free, source), where in (
        (host, host_free, "host"),
        (device, device_free, platform),
    ):
        total = sum(n.bytes for n in items)
        if free is None or not items or total <= free:
            continue
        top = sorted(items, key=lambda n: -n.bytes)
        big = [n for n in top if n.bytes >= total / 10][:3]
        fields = list(dict.fromkeys(f for n in big for f in n.fields))
        parts = ", ".join(f"{n.what} {gib(n.bytes)}" for n in big)
        raise errors.ResourceError(
            f"this config needs ~{gib(total)} of {where} memory ({parts}) but "
            f"{gib(free)} is available ({source}); lower {' or '.join(fields)}"
        )


def free_bytes(device, cap_bytes: int = 0) -> tuple[int | None, str]:
    """Memory free on ``device`` and where the figure comes from; None when unknown.

    ``cap_bytes`` > 0 overrides it (``input.device_memory_gib``); else the device's
    ``memory_stats()`` (GPU, TPU); on CPU, whose device memory is the host's,
    `host_available` (MemAvailable, and what ``ulimit -v`` leaves).
    """
    if cap_bytes > 0:
        return int(cap_bytes), "input.device_memory_gib"
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)), "memory_stats"
    return host_available()  # MemAvailable, and ulimit -v


def check_run(run, *, vocab_size: int = 0, num_tokens: int = CHUNK_TOKENS, state_bytes: int = 0):
    """`check` of `estimate` for ``run`` (a `settings.Settings`), on this process's first
    device. Before the corpus is read (``vocab_size`` 0: the host's needs that the corpus
    does not size, window and batches), and again once the vocabulary and the state's
    shapes are known (after `placement.check_fits` gave the state alone its advice)."""
    import jax  # noqa: PLC0415 (the backend starts here, after distributed.initialize)

    p, loop = run.pipeline, run.loop
    device = jax.local_devices()[0]
    devices = 1 if run.parallel.mode == "single" else jax.local_device_count()
    needs = estimate(
        window=p.window, left_only=p.left_only, layout=p.layout, rows_per_call=p.rows_per_call,
        prefetch=p.prefetch, dim=loop.dim, k=run.step.k, vocab_size=vocab_size,
        num_tokens=num_tokens, state_bytes=state_bytes,
        steps_per_call=run.parallel.steps_per_call, devices=devices,
    )  # fmt: skip
    if not vocab_size:  # before the corpus: the host's part (the state is checked later)
        needs = [n for n in needs if n.where == "host"]
    cap = int(loop.device_memory_gib * 2**30)
    check(
        needs,
        host_free=host_available(),
        device_free=free_bytes(device, cap),
        device_is_host=device.platform == "cpu" and not cap,
        platform=device.platform,
    )
