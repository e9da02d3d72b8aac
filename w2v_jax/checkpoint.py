"""Atomic checkpoints of a pytree plus JSON metadata in one ``.npz`` file.

Why plain ``.npz`` and not Orbax: word2vec's state is two or three dense tables, an
optional optimiser state of the same shapes, a step and a key. One ``np.savez`` of the
flattened leaves restores bit-exactly, needs no extra dependency or background thread,
and is made crash-safe by the classic write-to-temp + fsync + ``os.replace`` (atomic on
POSIX): a crash mid-write leaves the previous checkpoint untouched. Orbax earns its place
for sharded multi-host arrays; here a multi-host run gathers the (replicated) tables on
process 0, which writes alone.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile

import jax
import numpy as np

FILENAME = "checkpoint.npz"
_META = "__meta__"


def path_in(workdir: str | os.PathLike) -> pathlib.Path:
    return pathlib.Path(workdir) / FILENAME


def save(path: str | os.PathLike, tree, meta: dict) -> None:
    """Writes ``tree``'s leaves and ``meta`` (JSON-serialisable) atomically to ``path``."""
    path = pathlib.Path(path)
    leaves = jax.tree_util.tree_leaves(jax.device_get(tree))
    arrays = {f"leaf_{i:05d}": np.asarray(x) for i, x in enumerate(leaves)}
    arrays[_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path: str | os.PathLike, template):
    """Returns ``(tree, meta)`` with ``tree`` shaped like ``template``.

    Raises ValueError when the file does not match the template (another config).
    """
    path = pathlib.Path(path)
    leaves, treedef = jax.tree_util.tree_flatten(template)
    with np.load(path) as data:
        meta = json.loads(data[_META].tobytes().decode())
        names = sorted(k for k in data.files if k != _META)
        if len(names) != len(leaves):
            raise ValueError(
                f"checkpoint {path} holds {len(names)} arrays but this config needs "
                f"{len(leaves)}; use a fresh --workdir or the config that wrote it"
            )
        restored = []
        for name, ref in zip(names, leaves, strict=True):
            arr = data[name]
            if arr.shape != np.shape(ref) or arr.dtype != np.asarray(ref).dtype:
                raise ValueError(
                    f"checkpoint {path}: {name} is {arr.dtype}{list(arr.shape)}, expected "
                    f"{np.asarray(ref).dtype}{list(np.shape(ref))}; use a fresh --workdir"
                )
            restored.append(arr)
    return jax.tree_util.tree_unflatten(treedef, restored), meta
