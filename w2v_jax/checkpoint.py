"""Atomic checkpoints of a pytree plus JSON metadata in one ``.npz`` file, and when to save.

Why plain ``.npz`` and not Orbax: word2vec's state is two or three dense tables, an
optional optimiser state of the same shapes, a step and a key. One ``np.savez`` of the
flattened leaves restores bit-exactly, needs no extra dependency or background thread,
and `files.atomic_file` makes it crash-safe (temp file + fsync + ``os.replace``): a crash
mid-write leaves the previous checkpoint untouched. `save` refuses non-finite
parameters, so the last good checkpoint is never replaced by a diverged one. Orbax earns
its place for sharded multi-host arrays; here a multi-host run gathers the (replicated)
tables on process 0, which writes alone.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
import zipfile

import jax
import numpy as np

from w2v_jax import files

FILENAME = "checkpoint.npz"
_META = "__meta__"


class CorruptCheckpointError(ValueError):
    """The checkpoint file cannot be read: truncated, empty or not a checkpoint."""


def path_in(workdir: str | os.PathLike) -> pathlib.Path:
    return pathlib.Path(workdir) / FILENAME


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


def _read(path: pathlib.Path, template):
    if path.stat().st_size == 0:
        raise _unreadable(path, "the file is empty")
    try:
        with np.load(path, allow_pickle=False) as data:
            if _META not in data.files:
                raise _unreadable(path, "no metadata inside")
            meta = json.loads(data[_META].tobytes().decode())
            if template is None:
                return None, meta
            names = sorted(k for k in data.files if k != _META)
            restored = [data[name] for name in names]
    except CorruptCheckpointError:
        raise
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, UnicodeError) as e:
        raise _unreadable(path, f"{type(e).__name__}: {' '.join(str(e).split())[:120]}") from None
    leaves, treedef = jax.tree_util.tree_flatten(template)
    if len(names) != len(leaves):
        raise ValueError(
            f"checkpoint {path} holds {len(names)} arrays but this config needs "
            f"{len(leaves)}; use a fresh --workdir or the config that wrote it"
        )
    for name, arr, ref in zip(names, restored, leaves, strict=True):
        if arr.shape != np.shape(ref) or arr.dtype != np.asarray(ref).dtype:
            raise ValueError(
                f"checkpoint {path}: {name} is {arr.dtype}{list(arr.shape)}, expected "
                f"{np.asarray(ref).dtype}{list(np.shape(ref))}; use a fresh --workdir"
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
        by_steps = bool(self.every_steps) and step // self.every_steps > before // self.every_steps
        by_time = bool(self.every_secs) and self.clock() - self.last >= self.every_secs
        return by_steps or by_time

    def saved(self) -> None:
        self.last = self.clock()
