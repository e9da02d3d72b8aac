"""Arrays on disk, written and read in bounded blocks: the corpus build's spill files.

Shape letters: N elements of a file, B elements of one block.

A corpus of 1e10 tokens does not fit in memory, so its build keeps its big arrays in
files: raw files (the elements back to back, native byte order) while it appends to them,
``.npy`` files for what it keeps. Both are read back a block at a time with plain reads
(`chunks`), never through one memory map of the whole file: the pages a memory map has
touched count in the process's resident memory until it is unmapped, so scanning a 4 GB
map shows as 4 GB of RSS even though the kernel could drop them.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from w2v_jax import errors

BLOCK = 1 << 22  # elements per block: 16 MiB of int32, 32 MiB of int64


def npy_map(path: str | os.PathLike, how: str = "") -> np.memmap:
    """An ``.npy`` file memory-mapped (its header read, no data page touched); a one-line
    `CorpusError` ending in ``how`` (the fix) for a file that is not one."""
    tail = f"; {how}" if how else ""
    try:
        mapped = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as e:
        raise errors.CorpusError(f"{path}: not a readable .npy file ({e}){tail}") from None
    if not isinstance(mapped, np.memmap):  # np.load maps every plain .npy
        raise errors.CorpusError(f"{path}: not a .npy file holding one array{tail}")
    return mapped


def _read_into(f: BinaryIO, out: np.ndarray, path) -> None:
    view = memoryview(out).cast("B")
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            raise errors.CorpusError(f"{path}: ends early ({got} of {len(view)} bytes of a block)")
        got += n


def chunks(
    path: str | os.PathLike,
    dtype,
    start: int,
    stop: int,
    *,
    size: int | None = None,
    header: int = 0,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yields (position, elements [position, position + B)) of a file, for [start, stop).

    Args:
      path: a raw file of ``dtype`` elements, or an ``.npy`` file with ``header`` = its
        memory map's ``offset`` (`npy_map`).
      start, stop: the element range; blocks are ``size`` elements, the last one shorter.
      size: elements per block; None: `BLOCK`.
      header: bytes before the first element.

    Each block is a new, writable array: a caller may keep or change it.
    """
    dtype, size = np.dtype(dtype), size or BLOCK
    with open(path, "rb") as f:
        f.seek(header + start * dtype.itemsize)
        for pos in range(start, stop, size):
            block = np.empty(min(size, stop - pos), dtype)
            _read_into(f, block, path)
            yield pos, block


def read(path: str | os.PathLike, dtype, start: int, stop: int, *, header: int = 0) -> np.ndarray:
    """Elements [start, stop) of a raw file (or ``.npy`` with ``header``), in one array."""
    dtype = np.dtype(dtype)
    out = np.empty(max(stop - start, 0), dtype)
    with open(path, "rb") as f:
        f.seek(header + start * dtype.itemsize)
        _read_into(f, out, path)
    return out


@contextlib.contextmanager
def npy_writer(path: pathlib.Path, dtype, n: int) -> Iterator[BinaryIO]:
    """Yields a file to ``write`` the N elements of the 1-D ``.npy`` array ``path`` into,
    block after block; checks on exit that exactly N were written."""
    dtype = np.dtype(dtype)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n,)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        start = f.tell()
        yield f
        written = f.tell() - start
    if written != n * dtype.itemsize:
        raise RuntimeError(f"{path}: wrote {written} bytes, expected {n} x {dtype.itemsize}")


def raw_to_npy(raw: pathlib.Path, npy: pathlib.Path, dtype) -> int:
    """Copies the raw file ``raw`` into the ``.npy`` file ``npy`` block by block, deletes
    ``raw`` and returns N."""
    dtype = np.dtype(dtype)
    n = raw.stat().st_size // dtype.itemsize
    with npy_writer(npy, dtype, n) as out:
        for _, block in chunks(raw, dtype, 0, n):
            out.write(block)
    raw.unlink()
    return n
