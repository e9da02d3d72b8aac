"""The checkpoint on disk: step folders of array pieces under a commit marker, read back
onto any layout (docs/reliability.md, "Checkpoints").

A *piece* is one block of one array of the saved pytree (array ``i`` in
`jax.tree_util.tree_leaves` order): a device's shard, or the whole array, written once,
by the process holding its ``replica_id == 0`` copy::

    checkpoint/step_000000040/leaf_002.0-35000.0-128.npy  rows 0:35000, columns 0:128 of array 2
    checkpoint/step_000000040/process_00001.json          process 1's pieces, once durable
    checkpoint/step_000000040/COMMITTED                   the metadata and every piece, last

Every file is atomic (`files.atomic_file`). Process 0 writes ``COMMITTED`` once every
process's ``process_i.json`` of the same save (``session``) is there; only a step folder
with it is a checkpoint, and the newest `KEEP` committed steps stay. `read` checks every
piece present and whole, then builds each array block by block in the layout asked for,
memory-mapped (a process reads only the pieces its devices need), checking a piece's
CRC-32 the first time it touches it. Paths are local (POSIX renames, no object store).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import threading
import time
import zlib
from typing import NamedTuple

import jax
import numpy as np
from absl import logging

from w2v_jax import errors, files

FOLDER = "checkpoint"  # under the run folder
COMMITTED = "COMMITTED"
FORMAT = 2  # COMMITTED["format"]; format 1 was one .npz per process (or checkpoint.npz)
OLD_FILE = "checkpoint.npz"  # format 1's one-process checkpoint
KEEP = 2  # committed steps kept: the newest and the one before, to fall back to
_CHUNK = 64 * 2**20  # bytes written (and checksummed) per call
_FIRST_SAY_S, _SAY_EVERY_S = 10.0, 60.0  # when process 0 says it waits for parts
# Set when a peer process is gone (`resume.Checkpoints.waiting`): a commit in flight stops
# waiting for its part, so the process can end (the previous checkpoint stays).
ABANDON = threading.Event()


class CorruptCheckpointError(errors.RunFolderError):
    """A committed checkpoint cannot be read: a piece missing, cut short or damaged."""


class Piece(NamedTuple):
    """One block of one array, in host memory, to write."""

    leaf: int  # the array's index in tree_leaves order
    start: tuple[int, ...]  # the block's first index along each axis
    data: np.ndarray  # the block


def folder_in(workdir: str | os.PathLike) -> pathlib.Path:
    """Where a run folder keeps its checkpoints."""
    return pathlib.Path(workdir) / FOLDER


def step_folder(folder: str | os.PathLike, step: int) -> pathlib.Path:
    return pathlib.Path(folder) / f"step_{step:09d}"


def step_of(path: pathlib.Path) -> int | None:
    """The step a step folder holds (None: not a step folder, e.g. one set aside)."""
    match = re.fullmatch(r"step_(\d{9})", path.name)
    return int(match.group(1)) if match else None


def committed(folder: str | os.PathLike) -> list[pathlib.Path]:
    """The committed step folders, oldest first."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        return []
    steps = [p for p in folder.iterdir() if step_of(p) is not None and (p / COMMITTED).exists()]
    return sorted(steps, key=step_of)


def latest(folder: str | os.PathLike) -> pathlib.Path | None:
    """The newest committed step folder (None if there is none)."""
    steps = committed(folder)
    return steps[-1] if steps else None


# ---- writing --------------------------------------------------------------------------


def _piece_name(leaf: int, start: tuple, shape: tuple) -> str:
    place = ".".join(f"{a}-{a + n}" for a, n in zip(start, shape, strict=True))
    return f"leaf_{leaf:03d}{'.' + place if place else ''}.npy"


def _write_npy(f, data: np.ndarray) -> int:
    """Writes ``data`` as ``.npy`` to the open file ``f``; returns the CRC-32 of its bytes
    (after the header), computed on the same pass."""
    data = data if data.flags.c_contiguous else data.copy(order="C")  # keeps a 0-d array 0-d
    np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(data))
    raw, crc = memoryview(data.reshape(-1).view(np.uint8)), 0
    for at in range(0, len(raw), _CHUNK):
        chunk = raw[at : at + _CHUNK]
        f.write(chunk)
        crc = zlib.crc32(chunk, crc)
    return crc


def write_part(folder, step: int, session: str, process: int, pieces: list[Piece]) -> None:
    """Writes this process's ``pieces`` of ``step``, then its ``process_i.json`` (the
    pieces' index: the sign, for process 0, that they are durable)."""
    target = step_folder(folder, step)
    target.mkdir(parents=True, exist_ok=True)
    records = []
    for piece in pieces:
        name = _piece_name(piece.leaf, piece.start, piece.data.shape)
        with files.atomic_file(target / name) as f:
            crc = _write_npy(f, piece.data)
            size = f.tell()
        records.append({
            "file": name, "leaf": piece.leaf, "start": list(piece.start),
            "shape": list(piece.data.shape), "dtype": piece.data.dtype.str, "bytes": size,
            "crc32": crc,
        })  # fmt: skip
    part = {"step": step, "session": session, "process": process, "pieces": records}
    files.write_json(target / f"process_{process:05d}.json", part)


def _parts(target: pathlib.Path, step: int, session: str, processes: int, timeout_s: float):
    """Every process's index of this save, waiting (polling) until all are written."""
    found: dict[int, dict] = {}
    deadline, pause = time.monotonic() + timeout_s, 0.01
    said = time.monotonic() - _SAY_EVERY_S + _FIRST_SAY_S
    while True:
        for p in range(processes):
            if p in found:
                continue
            try:
                part = json.loads((target / f"process_{p:05d}.json").read_text("utf-8"))
            except (OSError, ValueError):
                continue  # not written yet (the rename is atomic: absent or whole)
            if part.get("step") == step and part.get("session") == session:
                found[p] = part
        if len(found) == processes:
            return [found[p] for p in range(processes)]
        missing = sorted(set(range(processes)) - set(found))
        if ABANDON.is_set():
            raise TimeoutError(f"step {step} not committed: a process of the run stopped")
        if time.monotonic() > said + _SAY_EVERY_S:
            said = time.monotonic()
            logging.warning(
                "step %d: waiting for process(es) %s to write their part of the checkpoint "
                "(a process that stopped never will: see its message)", step, missing,
            )  # fmt: skip
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"step {step} not committed: process(es) {missing} did not write their part "
                f"of {target} within {timeout_s:.0f} s; the previous checkpoint stays"
            )
        time.sleep(pause)
        pause = min(2 * pause, 0.5)


def commit(
    folder, step: int, session: str, processes: int, arrays: list[dict], meta: dict,
    timeout_s: float = 1800.0,
) -> pathlib.Path:  # fmt: skip
    """Process 0, after its own `write_part`: waits for every process's part of this save,
    writes ``COMMITTED`` (``meta``, the ``arrays`` [{"shape", "dtype"}] and every piece),
    then removes older steps but the newest committed one (`prune`)."""
    target = step_folder(folder, step)
    parts = _parts(target, step, session, processes, timeout_s)
    pieces = [record for part in parts for record in part["pieces"]]
    marker = {**meta, "format": FORMAT, "step": step, "processes": processes,
              "arrays": arrays, "pieces": pieces}  # fmt: skip
    files.write_json(target / COMMITTED, marker)
    prune(folder, step)
    return target


def prune(folder, step: int) -> None:
    """Removes step folders older than ``step``, except the newest `KEEP` - 1 committed
    ones (``step`` itself is the newest). Newer folders are left alone: another process
    may already be writing its part of the next save there. Folders set aside
    (``step_N.damaged``, `set_aside`) are never touched."""
    folder = pathlib.Path(folder)
    older = [p for p in committed(folder) if step_of(p) < step]
    kept = set(older[len(older) - (KEEP - 1) :])
    for path in folder.iterdir():
        n = step_of(path)
        if n is not None and n < step and path not in kept:
            shutil.rmtree(path, ignore_errors=True)


def aside_path(found: pathlib.Path) -> pathlib.Path:
    """Where `set_aside` would move ``found``: ``step_N.damaged`` (``.damaged-2``, ... if
    taken)."""
    found = pathlib.Path(found)
    aside, n = found.with_name(found.name + ".damaged"), 1
    while aside.exists():
        n += 1
        aside = found.with_name(f"{found.name}.damaged-{n}")
    return aside


def set_aside(found: pathlib.Path, aside: pathlib.Path | None = None) -> pathlib.Path:
    """Renames a damaged step folder to ``aside`` (default `aside_path`): no longer a
    checkpoint (`committed` skips it, `prune` never removes it), kept for the user to
    inspect or delete. Returns the new path."""
    aside = aside_path(found) if aside is None else pathlib.Path(aside)
    pathlib.Path(found).rename(aside)
    return aside


# ---- reading --------------------------------------------------------------------------


def _damaged(path: pathlib.Path, why: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"{path} is damaged ({why})")


def read_meta(found: str | os.PathLike) -> dict:
    """The metadata a step folder was committed with (``COMMITTED``).

    Raises:
      CorruptCheckpointError: ``COMMITTED`` is not readable JSON.
      ValueError: an older w2v_jax wrote it (format 1: one ``.npz`` per process).
    """
    found = pathlib.Path(found)
    path = found / COMMITTED
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        why = f"{type(e).__name__}: {' '.join(str(e).split())[:100]}"
        raise _damaged(path, why) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise errors.RunFolderError(
            f"{found} was written by an older w2v_jax (one .npz per process); resume it with "
            "that version, or use a new --workdir"
        )
    return meta


def _dtype(ref) -> np.dtype:
    """The dtype of a template leaf: an array, or a `jax.ShapeDtypeStruct`."""
    return np.dtype(ref.dtype) if hasattr(ref, "dtype") else np.asarray(ref).dtype


def check(found: pathlib.Path, meta: dict, template) -> list[list[dict]]:
    """The pieces of each of ``template``'s arrays, once checked: the arrays' count,
    shapes and dtypes are the template's (ValueError, one line: another config), and
    every piece is present, whole (by size) and in place, and together they cover each
    array (CorruptCheckpointError naming the piece). Reads no array
    data: cheap enough for every process to check every piece."""
    leaves = jax.tree_util.tree_leaves(template)
    arrays = meta["arrays"]
    if len(arrays) != len(leaves):
        raise errors.RunFolderError(
            f"{found} holds {len(arrays)} arrays but this config needs {len(leaves)}; use a "
            "new --workdir or the config that wrote it"
        )
    for i, (saved, ref) in enumerate(zip(arrays, leaves, strict=True)):
        want = (list(np.shape(ref)), _dtype(ref))
        if (saved["shape"], np.dtype(saved["dtype"])) != want:
            raise errors.RunFolderError(
                f"{found}: array {i} is {np.dtype(saved['dtype'])}{saved['shape']}, this config "
                f"needs {want[1]}{want[0]}; use a new --workdir or the config that wrote it"
            )
    by_leaf: list[list[dict]] = [[] for _ in leaves]
    for piece in meta["pieces"]:
        path = found / piece["file"]
        try:
            size = path.stat().st_size
        except OSError:
            raise _damaged(path, "the file is missing") from None
        if size != piece["bytes"]:
            raise _damaged(path, f"{size} bytes, {piece['bytes']} written")
        by_leaf[piece["leaf"]].append(piece)
    for i, (pieces, saved) in enumerate(zip(by_leaf, arrays, strict=True)):
        shape = saved["shape"]
        volume = sum(int(np.prod(p["shape"], dtype=np.int64)) for p in pieces)
        inside = all(
            0 <= a and a + n <= dim
            for p in pieces
            for a, n, dim in zip(p["start"], p["shape"], shape, strict=True)
        )
        if volume != int(np.prod(shape, dtype=np.int64)) or not inside:
            raise _damaged(found / COMMITTED, f"its pieces do not cover array {i}")
    return by_leaf


class _Pieces:
    """Memory-mapped pieces of one step folder, each CRC-checked on first use."""

    def __init__(self, found: pathlib.Path):
        self.found, self.open = found, {}

    def get(self, piece: dict) -> np.ndarray:
        name = piece["file"]
        if name not in self.open:
            path = self.found / name
            try:
                mmap = "r" if piece["shape"] else None  # NumPy maps a 0-d array as [1]
                data = np.load(path, mmap_mode=mmap, allow_pickle=False)
            except (OSError, ValueError, EOFError) as e:
                raise _damaged(path, f"{type(e).__name__}: {e}") from None
            if list(data.shape) != piece["shape"] or data.dtype.str != piece["dtype"]:
                raise _damaged(path, f"holds {data.dtype}{list(data.shape)}")
            raw = memoryview(np.asarray(data).reshape(-1).view(np.uint8))
            crc = 0
            for at in range(0, len(raw), _CHUNK):
                crc = zlib.crc32(raw[at : at + _CHUNK], crc)
            if crc != piece["crc32"]:
                raise _damaged(path, "its CRC-32 differs from the one written")
            self.open[name] = data
        return self.open[name]


def _block(reader: _Pieces, pieces: list[dict], shape, dtype, index: tuple) -> np.ndarray:
    """The block ``index`` (slices, as `make_array_from_callback` gives) of an array of
    ``shape``, assembled from the ``pieces`` that overlap it."""
    lo = [sl.indices(n)[0] for sl, n in zip(index, shape, strict=True)]
    hi = [sl.indices(n)[1] for sl, n in zip(index, shape, strict=True)]
    out = np.empty([b - a for a, b in zip(lo, hi, strict=True)], dtype)
    for piece in pieces:
        start = piece["start"]
        stop = [a + n for a, n in zip(start, piece["shape"], strict=True)]
        a = [max(x, y) for x, y in zip(lo, start, strict=True)]
        b = [min(x, y) for x, y in zip(hi, stop, strict=True)]
        if any(x >= y for x, y in zip(a, b, strict=True)):
            continue
        src = tuple(slice(x - s, y - s) for x, y, s in zip(a, b, start, strict=True))
        dst = tuple(slice(x - s, y - s) for x, y, s in zip(a, b, lo, strict=True))
        out[dst] = reader.get(piece)[src]
    return out


def read(found: pathlib.Path, meta: dict, template, shardings=None):
    """The arrays of the committed step ``found`` (``meta``: its `read_meta`) as
    ``template``'s pytree: host NumPy arrays, or global `jax.Array`s laid out as
    ``shardings`` (a pytree like ``template``), each process reading only the pieces
    that overlap its devices' blocks.

    Raises:
      CorruptCheckpointError: a piece is missing, cut short or damaged (one line naming
        the piece; `resume.Checkpoints.resume` then falls back to an older step).
      ValueError: the arrays are not the template's (another config).
    """
    by_leaf = check(found, meta, template)
    reader = _Pieces(found)
    leaves, treedef = jax.tree_util.tree_flatten(template)
    targets = [None] * len(leaves) if shardings is None else jax.tree_util.tree_leaves(shardings)
    out = []
    for ref, pieces, sharding in zip(leaves, by_leaf, targets, strict=True):
        shape, dtype = tuple(np.shape(ref)), _dtype(ref)
        whole = tuple(slice(None) for _ in shape)
        if sharding is None:
            out.append(_block(reader, pieces, shape, dtype, whole))
            continue
        blocks: dict[str, np.ndarray] = {}  # a replicated block read once per process

        def block(index, pieces=pieces, shape=shape, dtype=dtype, blocks=blocks):
            key = repr([sl.indices(n) for sl, n in zip(index, shape, strict=True)])
            if key not in blocks:
                blocks[key] = _block(reader, pieces, shape, dtype, index)
            return blocks[key]

        out.append(jax.make_array_from_callback(shape, sharding, block))
    return jax.tree_util.tree_unflatten(treedef, out)


def load(folder: str | os.PathLike, template):
    """``(host arrays shaped like template, metadata)`` of the newest committed step in
    ``folder`` (FileNotFoundError if there is none); for analysis and tests."""
    found = latest(folder)
    if found is None:
        raise FileNotFoundError(f"{folder} holds no committed checkpoint")
    meta = read_meta(found)
    return read(found, meta, template), meta
