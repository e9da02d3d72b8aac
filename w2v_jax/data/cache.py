"""The on-disk cache of encoded corpora (see `corpus` for what is cached and where).

An entry is a directory ``<label>-<split>-<digest>`` holding ids.npy (int32 [N], read back
memory-mapped), offsets.npy (int64 [S+1]), vocab.tsv and meta.json (the key and the sizes).
The key holds each source file's path, size and modification time with every setting that
changes the result; the digest is a hash of it. Entries are built in a temporary directory
and renamed into place, so a crash never leaves half an entry; an entry whose contents do
not match its key is rebuilt.

Shape letters: N tokens, S sentences, V vocabulary size.
"""

import hashlib
import json
import os
import pathlib
import re
import shutil
import uuid
from collections.abc import Callable, Iterable

import numpy as np
from absl import logging

from w2v_jax import files
from w2v_jax.data import readers, vocab

VERSION = 1  # bump when the encoding changes, so that old entries miss

# What an entry holds: ids int32 [N] (memory-mapped when read), offsets int64 [S+1], vocab.
Entry = tuple[np.ndarray, np.ndarray, vocab.Vocab]


def make_key(path: pathlib.Path, **settings) -> dict:
    """The key of ``path`` (its members' path, size and mtime) read with ``settings``."""
    key = dict(version=VERSION, source=[m.stat for m in readers.members(path)], **settings)
    return json.loads(json.dumps(key))  # tuples become lists, as they are when read back


def vocab_digest(v: vocab.Vocab) -> str:
    """A hash of a given vocabulary's words and counts, for the key of `corpus.encode_corpus`."""
    table = repr((v.words, v.counts.tolist())).encode()
    return hashlib.sha256(table).hexdigest()


def entry_path(root: pathlib.Path, label: str, split: str, key: dict) -> pathlib.Path:
    """Where the entry for ``key`` lives under ``root``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return root / f"{re.sub(r'[^A-Za-z0-9._-]', '_', label)}-{split}-{digest}"


def root(
    cache_dir: str | os.PathLike | None, defaults: Callable[[], Iterable[pathlib.Path]]
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


def read(entry: pathlib.Path, key: dict, given_vocab: vocab.Vocab | None) -> Entry | None:
    """The entry's (ids, offsets, vocab), or None if it is missing or fails its checks.

    The vocab returned is ``given_vocab`` when one is given (and it must equal the stored one).
    """
    if not entry.is_dir():
        return None
    try:
        meta = json.loads((entry / "meta.json").read_text())
        ids = np.load(entry / "ids.npy", mmap_mode="r")
        offsets = np.load(entry / "offsets.npy")
        v = vocab.Vocab.load(entry / "vocab.tsv")
        ok = (
            meta["key"] == key
            and ids.dtype == np.int32
            and ids.shape == (meta["num_tokens"],)
            and offsets.dtype == np.int64
            and offsets.shape == (meta["num_sentences"] + 1,)
            and offsets[0] == 0
            and offsets[-1] == len(ids)
            and np.all(np.diff(offsets) > 0)
            and len(v) == meta["vocab_size"]
            and given_vocab in (None, v)
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        ok, why = False, f"{type(e).__name__}: {e}"
    else:
        why = "its contents do not match its key"
    if not ok:
        logging.warning("rebuilding the corpus cache %s: %s", entry, why)
        return None
    logging.info("loaded corpus from cache %s", entry)
    return ids, offsets, given_vocab or v


def write(
    entry: pathlib.Path,
    key: dict,
    given_vocab: vocab.Vocab | None,
    build: Callable[[Callable[[int], np.ndarray]], Entry],
) -> Entry:
    """Builds into a temporary directory, then renames it to ``entry`` in one step.

    ``build(out)`` makes the (ids, offsets, vocab), writing ids into the array ``out(N)``
    returns (here a memmap of the temporary ids.npy). Returns the entry as `read` gives it
    back, or what ``build`` made if it cannot be read back.
    """
    tmp = entry.with_name(f".tmp-{entry.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        ids, offsets, v = built = build(
            lambda n: np.lib.format.open_memmap(tmp / "ids.npy", "w+", np.int32, (n,))
        )
        ids.flush()
        np.save(tmp / "offsets.npy", offsets)
        v.save(tmp / "vocab.tsv")
        meta = dict(key=key, num_tokens=len(ids), num_sentences=len(offsets) - 1)
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
    return read(entry, key, given_vocab) or built
