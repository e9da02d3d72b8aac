"""Atomic checkpoints of a pytree plus JSON metadata in one ``.npz`` file (one process) or
in one ``.npz`` per process (several processes, `save_shards`), and when to save.

Why plain ``.npz`` and not Orbax: word2vec's state is two or three dense tables, an
optional optimiser state of the same shapes, a step and a key. One ``np.savez`` of the
flattened leaves restores bit-exactly, needs no extra dependency or background thread,
and `files.atomic_file` makes it crash-safe (temp file + fsync + ``os.replace``): a crash
mid-write leaves the previous checkpoint untouched. `save` refuses non-finite
parameters, so the last good checkpoint is never replaced by a diverged one. Orbax earns
its place for sharded multi-host arrays; a multi-process run here writes its shards with
`save_shards`, the same ``.npz`` per process plus a commit marker (docs/reliability.md
compares the two, measured).

Sharded layout (several processes)::

    checkpoint/step_000000040/process_00000.npz   the shards process 0's devices hold
    checkpoint/step_000000040/process_00001.npz   ... process 1's
    checkpoint/step_000000040/COMMITTED           the metadata, written last by process 0

Each process writes its file atomically; after a barrier (every file is complete)
process 0 writes ``COMMITTED`` and deletes older steps. A crash at any point before the
marker leaves a step folder without one, which `latest_committed` skips: the previous
step stays the checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import shutil
import time
import zipfile

import jax
import numpy as np
from jax.experimental import multihost_utils

from w2v_jax import files

FILENAME = "checkpoint.npz"
FOLDER = "checkpoint"  # several processes: step folders of per-process shards
COMMITTED = "COMMITTED"
_META = "__meta__"


class CorruptCheckpointError(ValueError):
    """The checkpoint file cannot be read: truncated, empty or not a checkpoint."""


def path_in(workdir: str | os.PathLike) -> pathlib.Path:
    return pathlib.Path(workdir) / FILENAME


def folder_in(workdir: str | os.PathLike) -> pathlib.Path:
    """Where a multi-process run keeps its sharded checkpoints."""
    return pathlib.Path(workdir) / FOLDER


def save(path: str | os.PathLike, tree, meta: dict) -> None:
    """Writes ``tree``'s leaves and ``meta`` (JSON-serialisable) atomically to ``path``.

    Raises FloatingPointError (and writes nothing) if a floating-point leaf holds a NaN
    or an infinity: the checkpoint already on disk is the last good one.
    """
    path = pathlib.Path(path)
    leaves = jax.tree_util.tree_leaves(jax.device_get(tree))
    arrays = {f"leaf_{i:05d}": np.asarray(x) for i, x in enumerate(leaves)}
    for name, arr in arrays.items():
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            raise FloatingPointError(
                f"not saving {path}: array {name} holds NaN or inf; the checkpoint on disk "
                "(if any) is the last good one"
            )
    arrays[_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with files.atomic_file(path) as f:
        np.savez(f, **arrays)


def _unreadable(path: pathlib.Path, why: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        f"{path} is not a readable checkpoint ({why}); it was cut short or damaged. "
        f"Move it aside (mv {path} {path}.bad) to start the run again from step 0, "
        "or use a new --workdir"
    )


def read_meta(path: str | os.PathLike) -> dict:
    """The JSON metadata of a checkpoint, without its arrays."""
    return _read(pathlib.Path(path), None)[1]


def load(path: str | os.PathLike, template):
    """Returns ``(tree, meta)`` with ``tree`` shaped like ``template``.

    Raises:
      CorruptCheckpointError: the file is empty, truncated or not a checkpoint.
      ValueError: the file does not match the template (another config).
    """
    return _read(pathlib.Path(path), template)


@contextlib.contextmanager
def _open(path: pathlib.Path):
    """The open checkpoint file and its metadata, as ``(data, meta)``; an empty, truncated
    or foreign file (also one that fails while the caller reads arrays) raises one
    CorruptCheckpointError naming it."""
    if path.stat().st_size == 0:
        raise _unreadable(path, "the file is empty")
    try:
        with np.load(path, allow_pickle=False) as data:
            if _META not in data.files:
                raise _unreadable(path, "no metadata inside")
            yield data, json.loads(data[_META].tobytes().decode())
    except CorruptCheckpointError:
        raise
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, UnicodeError) as e:
        raise _unreadable(path, f"{type(e).__name__}: {' '.join(str(e).split())[:120]}") from None


def _read_all(path: pathlib.Path) -> tuple[dict, dict]:
    """Every array of a checkpoint file by name, and its metadata."""
    with _open(path) as (data, meta):
        return {k: data[k] for k in data.files if k != _META}, meta


def _dtype(ref) -> np.dtype:
    """The dtype of a template leaf: an array, or a `jax.ShapeDtypeStruct`."""
    return np.dtype(ref.dtype) if hasattr(ref, "dtype") else np.asarray(ref).dtype


def _read(path: pathlib.Path, template):
    """The checkpoint's arrays as ``template``'s pytree (checked name count, shapes and
    dtypes), and its metadata; ``template=None`` reads only the metadata."""
    with _open(path) as (data, meta):
        if template is None:
            return None, meta
        names = sorted(k for k in data.files if k != _META)
        restored = [data[name] for name in names]
    leaves, treedef = jax.tree_util.tree_flatten(template)
    if len(names) != len(leaves):
        raise ValueError(
            f"checkpoint {path} holds {len(names)} arrays but this config needs "
            f"{len(leaves)}; use a fresh --workdir or the config that wrote it"
        )
    for name, arr, ref in zip(names, restored, leaves, strict=True):
        if arr.shape != np.shape(ref) or arr.dtype != _dtype(ref):
            raise ValueError(
                f"checkpoint {path}: {name} is {arr.dtype}{list(arr.shape)}, expected "
                f"{_dtype(ref)}{list(np.shape(ref))}; use a fresh --workdir"
            )
    return jax.tree_util.tree_unflatten(treedef, restored), meta


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


# ---- several processes: each writes the shards it holds ---------------------------------


def _key(index: tuple, shape: tuple) -> str:
    """A shard's place in its global array, e.g. ``"0:30,0:8"`` (slices made explicit)."""
    parts = [f"{sl.start or 0}:{dim if sl.stop is None else sl.stop}"
             for sl, dim in zip(index, shape, strict=True)]  # fmt: skip
    return ",".join(parts)


def _step_folder(folder: pathlib.Path, step: int) -> pathlib.Path:
    return folder / f"step_{step:09d}"


def _step_of(path: pathlib.Path) -> int | None:
    match = re.fullmatch(r"step_(\d{9})", path.name)
    return int(match.group(1)) if match else None


def save_shards(folder: str | os.PathLike, tree, meta: dict) -> None:
    """Saves the global arrays ``tree`` (``meta["step"]`` names the step) from every process.

    Each process writes the distinct shards its devices hold (a replicated table once per
    process) to its own file; a barrier; process 0 commits. Every process must call it.
    Raises FloatingPointError on every process (and commits nothing) if any shard anywhere
    holds a NaN or an infinity.
    """
    folder, step, me = pathlib.Path(folder), int(meta["step"]), jax.process_index()
    arrays, places, finite = {}, {}, True
    for i, leaf in enumerate(jax.tree_util.tree_leaves(tree)):
        seen = set()
        for shard in leaf.addressable_shards:
            key = _key(shard.index, leaf.shape)
            if key in seen:
                continue
            data = np.asarray(shard.data)
            if np.issubdtype(data.dtype, np.floating):
                finite = finite and bool(np.all(np.isfinite(data)))
            name = f"leaf_{i:05d}_{len(seen):03d}"
            seen.add(key)
            arrays[name], places[name] = data, key
    everyone = multihost_utils.process_allgather(np.asarray(finite))
    if not np.all(everyone):
        raise FloatingPointError(
            f"not saving step {step} to {folder}: the parameters hold NaN or inf; the "
            "checkpoint on disk (if any) is the last good one"
        )
    target = _step_folder(folder, step)
    target.mkdir(parents=True, exist_ok=True)
    arrays[_META] = np.frombuffer(
        json.dumps({"step": step, "process": me, "places": places}).encode(), dtype=np.uint8
    )
    with files.atomic_file(target / f"process_{me:05d}.npz") as f:
        np.savez(f, **arrays)
    multihost_utils.sync_global_devices(f"w2v_jax checkpoint {step}")  # every file is whole
    if me == 0:
        files.write_json(target / COMMITTED, meta)
        for old in folder.iterdir():
            if (_step_of(old) if _step_of(old) is not None else step) < step:
                shutil.rmtree(old, ignore_errors=True)


def latest_committed(folder: str | os.PathLike) -> pathlib.Path | None:
    """The newest step folder with a commit marker (None if there is none)."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        return None
    steps = [p for p in folder.iterdir() if _step_of(p) is not None and (p / COMMITTED).exists()]
    return max(steps, key=_step_of, default=None)


def read_shards_meta(step_folder: str | os.PathLike) -> dict:
    """The metadata a sharded checkpoint was committed with."""
    path = pathlib.Path(step_folder) / COMMITTED
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise _unreadable(path, f"{type(e).__name__}: {' '.join(str(e).split())[:120]}") from None


def load_shards(step_folder: str | os.PathLike, template, shardings):
    """The global arrays saved in ``step_folder``, laid out as ``shardings`` (a pytree like
    ``template``, whose leaves give the shapes and dtypes); each process reads its own file.

    Raises:
      CorruptCheckpointError: this process's file is missing, truncated or damaged.
      ValueError: a shard this process needs is not in it (another mesh or config).
    """
    path = pathlib.Path(step_folder) / f"process_{jax.process_index():05d}.npz"
    if not path.exists():
        raise _unreadable(path, "this process's file is missing")
    arrays, meta = _read_all(path)
    pieces: dict[tuple[int, str], np.ndarray] = {}
    for name, key in meta["places"].items():
        pieces[int(name.split("_")[1]), key] = arrays[name]
    leaves, treedef = jax.tree_util.tree_flatten(template)
    out = []
    for i, (ref, sharding) in enumerate(
        zip(leaves, jax.tree_util.tree_leaves(shardings), strict=True)
    ):
        shape, dtype = tuple(np.shape(ref)), _dtype(ref)

        def piece(index, i=i, shape=shape, dtype=dtype):
            key = _key(index, shape)
            data = pieces.get((i, key))
            if data is None or data.dtype != dtype:
                raise ValueError(
                    f"checkpoint {path} has no {dtype} shard [{key}] of array {i}: it was "
                    "written with another mesh or config; use the settings that wrote it "
                    "or a fresh --workdir"
                )
            return data

        out.append(jax.make_array_from_callback(shape, sharding, piece))
    return jax.tree_util.tree_unflatten(treedef, out), meta
