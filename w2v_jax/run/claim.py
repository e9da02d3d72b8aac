"""Who owns a run or sweep folder: an OS lock while a program writes it, a marker after
(docs/reliability.md, "Who owns a folder").

* **The lock** (``.w2v_jax.lock``): `hold` takes an exclusive ``fcntl.flock`` on it, with
  the holder's pid and host inside, while the run or sweep writes the folder; the OS drops
  it with its holder. `Claim.release` removes the file; a writer that locked a file just
  removed sees its inode gone and tries again. Several processes of one run claim the
  folder once, through process 0 (`for_run`).
* **The marker** (``.w2v_jax.json``: ``{"kind": "run" | "sweep", "w2v_jax": version}``),
  written with the folder's first file (`mark`): a run's folder is refused to a sweep and
  the reverse.
* **Files w2v_jax did not write.** A folder without a marker is taken only when it is empty
  or holds exactly what an earlier w2v_jax wrote before markers existed (`RUN_FILES`, a
  sweep's `SWEEP_FILES` and run folders); anything else is refused in one line naming the
  files. Hidden names (the lock, temporary files) are not counted.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pathlib
import socket
import time
from collections.abc import Iterable

import jax

import w2v_jax
from w2v_jax import errors, files, run_folder
from w2v_jax.checkpoint import store
from w2v_jax.parallel import distributed
from w2v_jax.run import tensorboard

RUN, SWEEP = "run", "sweep"
LOCK = ".w2v_jax.lock"
MARKER = ".w2v_jax.json"
# What a run writes in its folder: run_folder's files, the checkpoint (and the one-file
# checkpoint of older versions), its TensorBoard events, and a sweep point's record
# (analysis.sweep).
RUN_FILES = frozenset(
    {run_folder.CONFIG, run_folder.METRICS, *run_folder.EXPORTS, store.FOLDER, store.OLD_FILE}
    | {tensorboard.FOLDER, "result.json", "error.txt"}
)
# What a sweep writes beside its points' run folders (analysis.sweep, analysis.plots).
SWEEP_FILES = frozenset({"summary.csv", "summary.json", "plots"})
_SHOWN = 5  # file names an error lists before "and N more"


class Claim:
    """A held folder (`hold`); `release` (or leaving the ``with`` block) gives it back."""

    def __init__(self, folder: pathlib.Path | None, kind: str, fd: int | None):
        self.folder, self.kind, self.fd = folder, kind, fd

    def release(self) -> None:
        """Removes the lock file and drops the lock (idempotent)."""
        if self.fd is None:
            return
        try:
            (self.folder / LOCK).unlink(missing_ok=True)  # before the unlock: see module doc
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


NOT_HELD = Claim(None, RUN, None)  # a process other than 0: it holds nothing


def hold(folder: str | os.PathLike, kind: str) -> Claim:
    """Claims the existing ``folder`` for a ``kind`` (`RUN` or `SWEEP`) writer: its lock,
    then a check of what is in it (module doc). Raises `errors.RunFolderError` (one line)
    when another process holds it, when it is the other kind's, or holds files w2v_jax did
    not write; the same when it cannot be written. Nothing is written but the lock file, which
    `Claim.release` removes."""
    folder = pathlib.Path(folder)
    fd = _lock(folder, kind)
    held = Claim(folder, kind, fd)
    try:
        _check(folder, kind)
    except BaseException:
        held.release()
        raise
    return held


def for_run(workdir: str | os.PathLike, chief: bool) -> Claim:
    """`hold` of a run folder by process 0 (``chief``); with several processes every one
    raises the same line when process 0 could not claim it, before any writes."""
    error, held = None, NOT_HELD
    if chief:
        try:
            held = hold(workdir, RUN)
        except errors.RunFolderError as e:
            error = e
    if jax.process_count() > 1:  # process 0's outcome, on every process
        line = distributed.gather_lines("" if error is None else str(error))[0]
        if line and error is None:
            error = errors.RunFolderError(f"process 0: {line}")
    if error is not None:
        held.release()
        raise error
    return held


def mark(folder: str | os.PathLike, kind: str) -> None:
    """Writes the marker (with the folder's first file; kept when already there)."""
    path = pathlib.Path(folder) / MARKER
    if not path.exists():
        files.write_json(path, {"kind": kind, "w2v_jax": w2v_jax.__version__}, indent=2)


def kind_of(folder: str | os.PathLike) -> str | None:
    """The kind the folder's marker names (None without a marker)."""
    path = pathlib.Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        kind = json.loads(path.read_text()).get("kind")
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        kind = None
    if kind not in (RUN, SWEEP):
        raise errors.RunFolderError(
            f"{path} is damaged (no run or sweep kind); restore it as "
            f'{{"kind": "run"}} or {{"kind": "sweep"}}, or pass another --workdir'
        )
    return kind


def _lock(folder: pathlib.Path, kind: str) -> int:
    """An fd holding the flock on ``folder/LOCK``, with this process's pid in the file."""
    path = folder / LOCK
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise run_folder.not_writable(folder, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _holder(fd)
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise errors.RunFolderError(
                f"--workdir={folder} is in use by another {_kind_word(folder, kind)} "
                f"({holder}); wait for it to end, or pass another --workdir"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:  # the holder released it (and removed it) meanwhile
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
            return fd
        os.close(fd)


def _holder(fd: int) -> str:
    """ "pid N" (with the host when it is another) of the lock file's holder."""
    for _ in range(20):  # the holder writes its pid right after locking
        text = os.pread(fd, 256, 0).decode("utf-8", "replace").split()
        if text:
            break
        time.sleep(0.01)
    if not text:
        return "pid unknown"
    pid, host = text[0], text[1] if len(text) > 1 else "?"
    if host != socket.gethostname():
        return f"pid {pid} on {host}"
    return f"pid {pid}, this process" if pid == str(os.getpid()) else f"pid {pid}"


def _kind_word(folder: pathlib.Path, kind: str) -> str:
    try:
        return kind_of(folder) or kind
    except errors.RunFolderError:
        return kind


def _check(folder: pathlib.Path, kind: str) -> None:
    """One-line `errors.RunFolderError` unless ``folder`` may be written by a ``kind`` writer."""
    marked = kind_of(folder)
    if marked == kind:
        return
    if marked == SWEEP:
        raise errors.RunFolderError(
            f"--workdir={folder} is a sweep's folder ({MARKER} says so); pass one of its "
            "point folders to resume that point, or a new folder for this run"
        )
    if marked == RUN:
        raise errors.RunFolderError(
            f"--workdir={folder} is a run's folder ({MARKER} says so); pass a new folder "
            "for this sweep"
        )
    names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    if not names:
        return
    if kind == RUN:
        if set(names) <= RUN_FILES and _is_config(folder / run_folder.CONFIG):
            return  # a run folder written before markers existed
        if any(n in SWEEP_FILES for n in names) and all(_sweep_entry(folder / n) for n in names):
            raise errors.RunFolderError(
                f"--workdir={folder} is a sweep's folder ({_listed(names)}); pass one of "
                "its point folders to resume that point, or a new folder for this run"
            )
        if _is_config(folder / run_folder.CONFIG):  # a run's folder with the user's files
            foreign = [n for n in names if n not in RUN_FILES]
        else:  # not a run's: even the names a run writes are the user's files
            mine = f"{run_folder.CONFIG} (not a w2v_jax config)"
            foreign = [mine if n == run_folder.CONFIG else n for n in names]
    else:
        foreign = [n for n in names if not _sweep_entry(folder / n)]
        if not foreign:
            return  # a sweep folder written before markers existed (or its points alone)
        if _is_config(folder / run_folder.CONFIG):
            raise errors.RunFolderError(
                f"--workdir={folder} is a run's folder ({_listed(names)}); pass a new "
                "folder for this sweep"
            )
    raise errors.RunFolderError(
        f"--workdir={folder} holds files w2v_jax did not write ({_listed(foreign)}); "
        "nothing was changed: pass an empty or new folder"
    )


def _is_config(path: pathlib.Path) -> bool:
    """Whether ``path`` is a ``config.json`` a run wrote (a JSON object with the config's
    sections)."""
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(config, dict) and all(
        isinstance(config.get(section), dict) for section in ("corpus", "loss", "optimizer")
    )


def _sweep_entry(path: pathlib.Path) -> bool:
    """Whether a sweep wrote ``path``: its summary or plots, or a point's run folder."""
    if path.name in SWEEP_FILES:
        return True
    if not path.is_dir():
        return False
    try:
        marked = kind_of(path)
    except errors.RunFolderError:
        return False
    if marked is not None:
        return marked == RUN
    inside = {p.name for p in path.iterdir() if not p.name.startswith(".")}
    return inside <= RUN_FILES and (
        _is_config(path / run_folder.CONFIG) or run_folder.CONFIG not in inside
    )


def _listed(names: Iterable[str]) -> str:
    names = list(names)
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")
