"""Crash-safe files: one atomic writer (text, bytes or a file object) and JSON lines.

Every file a run, a sweep or the corpus cache writes goes through `atomic_file`: a new
temporary file beside the target, flushed and fsynced, then `os.replace` (atomic on POSIX)
and an fsync of the folder, so a crash leaves the old file or the new one, never a mix.
``metrics.jsonl`` is appended one line at a time instead (`append_jsonl`); a last line
cut short by a crash is dropped by `read_jsonl` with a warning.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import uuid
from collections.abc import Iterator

from absl import logging

from w2v_jax import errors


def _fsync_folder(folder: pathlib.Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform or filesystem that cannot open folders: best effort
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", **open_kwargs) -> Iterator:
    """Yields a file opened on a temporary name that becomes ``path`` on success.

    ``mode`` is ``"wb"`` or ``"w"`` (then ``open_kwargs`` such as ``encoding`` or
    ``newline`` apply). The file object's ``.name`` is the temporary path, for a check
    of the written file before it is renamed. If the block raises, the temporary file is
    removed and ``path`` is left as it was.

    Example::

        with files.atomic_file(path) as f:
            np.savez(f, **arrays)
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_file mode must be 'w' or 'wb', got {mode!r}")
    path = pathlib.Path(path)
    if mode == "w":
        open_kwargs.setdefault("encoding", "utf-8")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, mode.replace("w", "x"), **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def write_atomic(path: str | os.PathLike, data: str | bytes, encoding: str = "utf-8") -> None:
    """Replaces ``path`` with ``data`` (text is encoded as ``encoding``) atomically."""
    if isinstance(data, str):
        data = data.encode(encoding)
    with atomic_file(path, "wb") as f:
        f.write(data)


def write_json(path: str | os.PathLike, obj, **dumps_kwargs) -> None:
    """Replaces ``path`` with ``json.dumps(obj)`` and a newline, atomically."""
    write_atomic(path, json.dumps(obj, **dumps_kwargs) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The JSON objects of a JSON-lines file, one per non-blank line ([] if it is missing).

    A last line that does not parse is what a crash in the middle of `append_jsonl`
    leaves: it is dropped with a warning. A bad line anywhere else is damage this module
    did not make: ValueError naming the file and line.
    """
    path = pathlib.Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    rows = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise errors.RunFolderError(f"a JSON {type(row).__name__}, not an object")
        except ValueError as e:
            if lineno == len(lines):
                logging.warning(
                    "%s: dropped its last line, cut short by a crash (%s): %.60r",
                    path, e, line,
                )  # fmt: skip
                break
            raise errors.RunFolderError(
                f"{path}:{lineno} is not a JSON object ({e}); delete that line (or the "
                "file) and retry"
            ) from None
        rows.append(row)
    return rows


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Appends ``row`` as one JSON line (flushed, not fsynced: cheap enough per log row)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    """Replaces ``path`` with ``rows``, one JSON line each, atomically."""
    write_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))
