"""The on-disk cache of encoded corpora (see `corpus` for what is cached and where), and
pre-encoded corpus folders in the same format.

An entry is a directory ``<label>-<split>-<digest>`` holding ids.npy (int32 [N], read back
memory-mapped), offsets.npy (int64 [S+1]), vocab.tsv and meta.json (the key and the sizes).
The key holds each source file's path, size and modification time with every setting that
changes the result; the digest is a hash of it. Entries are built in a temporary directory
and renamed into place, so a crash never leaves half an entry; an entry whose contents do
not match its key is rebuilt; of several processes (or hosts sharing the folder) that load
one entry at once, one builds it under an ``flock`` and the others wait (`load_or_build`).

Shape letters: N tokens, S sentences, V vocabulary size.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import re
import shutil
import uuid
from collections.abc import Callable, Iterator

import numpy as np
from absl import logging

from w2v_jax import errors, files
from w2v_jax.data import blocks, readers, vocab

VERSION = 1  # bump when the encoding changes, so that old entries miss
FILES = ("ids.npy", "offsets.npy", "vocab.tsv")  # what an entry or a pre-encoded folder holds

# What an entry holds: ids int32 [N] (memory-mapped when read), offsets int64 [S+1], vocab.
Entry = tuple[np.ndarray, np.ndarray, vocab.Vocab]
# Writes ids.npy and offsets.npy into the folder it is given; returns their vocabulary.
Build = Callable[[pathlib.Path], vocab.Vocab]


def make_key(path: pathlib.Path, **settings) -> dict:
    """The key of ``path`` (its members' path, size and mtime) read with ``settings``."""
    key = dict(version=VERSION, source=[m.stat for m in readers.members(path)], **settings)
    return json.loads(json.dumps(key))  # tuples become lists, as they are when read back


def entry_path(root: pathlib.Path, label: str, split: str, key: dict) -> pathlib.Path:
    """Where the entry for ``key`` lives under ``root``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return root / f"{re.sub(r'[^A-Za-z0-9._-]', '_', label)}-{split}-{digest}"


def root(
    cache_dir: str | os.PathLike | None, defaults: Callable[[], list[pathlib.Path]]
) -> pathlib.Path | None:
    """``cache_dir`` (created), else the first of ``defaults()`` that is writable, else None."""
    if cache_dir is not None:
        path = pathlib.Path(cache_dir).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path
    for path in defaults():
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    logging.warning("no writable cache directory; corpora will not be cached")
    return None


def problem(ids: np.ndarray, offsets: np.ndarray, vocab_size: int | None = None) -> str | None:
    """What is wrong with an (ids, offsets) pair, or None: dtypes and shapes, offsets from 0
    to N and increasing (no empty sentence), and with ``vocab_size``, every id in [0, V).

    ``ids`` may be a memory map: it is checked in blocks read from its file.
    """
    if ids.dtype != np.int32 or ids.ndim != 1:
        return f"ids.npy is {ids.dtype} of shape {ids.shape}; expected a 1-D int32 array"
    if offsets.dtype != np.int64 or offsets.ndim != 1 or len(offsets) < 1:
        return f"offsets.npy is {offsets.dtype} of shape {offsets.shape}; expected 1-D int64 [S+1]"
    if offsets[0] != 0 or offsets[-1] != len(ids):
        return (
            f"offsets.npy runs from {offsets[0]} to {offsets[-1]}; it must run from 0 to "
            f"len(ids) = {len(ids)}"
        )
    for i in range(0, len(offsets) - 1, blocks.BLOCK):
        step = np.diff(offsets[i : i + blocks.BLOCK + 1])
        if np.any(step <= 0):
            s = i + int(np.argmax(step <= 0))
            return f"offsets.npy must increase: sentence {s} has {step[s - i]} tokens"
    if vocab_size is not None and len(ids):
        path, header = ids.filename, ids.offset  # a memmap: read its file in blocks
        for pos, block in blocks.chunks(path, np.int32, 0, len(ids), header=header):
            if block.min() < 0 or block.max() >= vocab_size:
                bad = pos + int(np.argmax((block < 0) | (block >= vocab_size)))
                return f"ids.npy[{bad}] = {ids[bad]} is outside [0, V = {vocab_size}) of vocab.tsv"
    return None


def _open(entry: pathlib.Path, key: dict, given_vocab) -> tuple[Entry | None, str]:
    """(the entry, "") or (None, why not); why is "" when there is no entry."""
    if not entry.is_dir():
        return None, ""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        ids = np.load(entry / "ids.npy", mmap_mode="r")
        offsets = np.load(entry / "offsets.npy")
        v = vocab.Vocab.load(entry / "vocab.tsv")
        why = problem(ids, offsets)
        if why is None and not (
            meta["key"] == key
            and len(ids) == meta["num_tokens"]
            and len(offsets) == meta["num_sentences"] + 1
            and len(v) == meta["vocab_size"]
            and given_vocab in (None, v)
        ):
            why = "its contents do not match its key"
    except (OSError, ValueError, KeyError, TypeError) as e:
        why = f"{type(e).__name__}: {e}"
    if why is not None:
        return None, why
    return (ids, offsets, given_vocab or v), ""


@contextlib.contextmanager
def _locked(entry: pathlib.Path) -> Iterator[None]:
    """Holds an exclusive flock on ``.<entry>.lock`` beside the entry (waits for it)."""
    path = entry.with_name(f".{entry.name}.lock")
    try:
        f = open(path, "a")  # noqa: SIM115 (closed below; closing releases the lock)
    except OSError as e:
        logging.warning("cannot open the lock file %s (%s); building without it", path, e)
        yield
        return
    with f:
        try:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logging.info("waiting for another process that is building %s", entry)
                fcntl.flock(f, fcntl.LOCK_EX)
        except OSError as e:  # a filesystem without locks
            logging.warning("cannot lock %s (%s); building without the lock", path, e)
        yield


def load_or_build(
    entry: pathlib.Path, key: dict, given_vocab: vocab.Vocab | None, build: Build
) -> Entry:
    """The entry, read if it is there, else built by this process or by another one that
    holds its lock (see the module doc)."""
    found, _ = _open(entry, key, given_vocab)
    if not found:
        with _locked(entry):
            found, why = _open(entry, key, given_vocab)
            if why:
                logging.warning("rebuilding the corpus cache %s: %s", entry, why)
            if not found:
                return write(entry, key, given_vocab, build)
    logging.info("loaded corpus from cache %s", entry)
    return found


def write(entry: pathlib.Path, key: dict, given_vocab: vocab.Vocab | None, build: Build) -> Entry:
    """Builds into a temporary directory, then renames it to ``entry`` in one step.

    ``build(folder)`` writes ids.npy and offsets.npy into the temporary folder and returns
    their vocabulary. Returns the entry as `load_or_build` gives it back.
    """
    tmp = entry.with_name(f".tmp-{entry.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        v = build(tmp)
        logging.info("built the corpus cache entry %s", entry)
        (num_tokens,), (num_offsets,) = (blocks.npy_map(tmp / f).shape for f in FILES[:2])
        v.save(tmp / "vocab.tsv")
        meta = dict(key=key, num_tokens=num_tokens, num_sentences=num_offsets - 1)
        files.write_json(tmp / "meta.json", {**meta, "vocab_size": len(v)})
        try:
            if entry.exists():  # a stale or broken entry: move it aside, then replace it
                stale = entry.with_name(f".stale-{entry.name}-{uuid.uuid4().hex[:8]}")
                os.rename(entry, stale)
                shutil.rmtree(stale, ignore_errors=True)
            os.rename(tmp, entry)
        except OSError as e:
            if not (entry / "meta.json").is_file():
                raise
            logging.info("another process wrote the corpus cache %s first (%s)", entry, e)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    found, why = _open(entry, key, given_vocab)
    if found is None:
        raise RuntimeError(f"the corpus cache entry {entry} cannot be read back: {why}")
    return found


def _meta_problem(path: pathlib.Path, sizes: dict[str, int]) -> str | None:
    """What an optional meta.json says that the arrays contradict, or None."""
    try:
        meta = json.loads(path.read_text())
    except ValueError as e:
        return f"meta.json is not JSON ({e})"
    if not isinstance(meta, dict):
        return "meta.json is not a JSON object"
    wrong = [f"{k}={meta[k]} (found {n})" for k, n in sizes.items() if meta.get(k, n) != n]
    return f"meta.json says {', '.join(wrong)}" if wrong else None


def read_encoded(folder: pathlib.Path) -> Entry:
    """A pre-encoded corpus folder (ids.npy, offsets.npy, vocab.tsv; meta.json optional),
    memory-mapped and checked (`problem`, with every id below V); ValueError naming the
    problem otherwise."""
    how = "see docs/data.md, 'Pre-encoded corpora'"
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise errors.CorpusError(
            f"{folder}: a pre-encoded corpus needs {', '.join(missing)}; {how}"
        )
    try:
        v = vocab.Vocab.load(folder / "vocab.tsv")
    except (OSError, ValueError) as e:
        where = "" if str(folder / "vocab.tsv") in str(e) else f"{folder / 'vocab.tsv'}: "
        raise errors.CorpusError(f"{where}{e}; {how}") from None
    ids, offsets = (blocks.npy_map(folder / name, how) for name in FILES[:2])
    offsets = np.array(offsets)
    why = problem(ids, offsets, len(v))
    if why is None and (folder / "meta.json").is_file():
        sizes = dict(num_tokens=len(ids), num_sentences=len(offsets) - 1, vocab_size=len(v))
        why = _meta_problem(folder / "meta.json", sizes)
    if why is not None:
        raise errors.CorpusError(f"{folder}: {why}; {how}")
    logging.info("loaded the pre-encoded corpus %s", folder)
    return ids, offsets, v
