"""Fetching a corpus archive: `download` and `verify_zip` (text8.zip's size and CRC-32)."""

import os
import pathlib
import shutil
import urllib.error
import urllib.request
import zipfile
import zlib
from typing import NamedTuple

from absl import logging

from w2v_jax import errors, files


class ZipCheck(NamedTuple):
    """What a downloaded archive must be: its size and its one member's size and CRC-32."""

    size: int
    member: str
    member_size: int
    crc32: int


def verify_zip(path: str | os.PathLike, check: ZipCheck) -> None:
    """Checks an archive's size and its member's size and CRC-32; ValueError if wrong."""
    size = os.path.getsize(path)
    if size != check.size:
        raise errors.CorpusError(
            f"{path}: {size:,} bytes, expected {check.size:,}; delete it and retry"
        )
    crc, n = 0, 0
    try:
        with zipfile.ZipFile(path) as zf, zf.open(check.member) as f:
            while block := f.read(1 << 22):
                crc, n = zlib.crc32(block, crc), n + len(block)
    except (KeyError, zipfile.BadZipFile, EOFError) as e:
        raise errors.CorpusError(
            f"{path}: not the expected archive ({e}); delete it and retry"
        ) from None
    if (n, crc) != (check.member_size, check.crc32):
        raise errors.CorpusError(
            f"{path}: member {check.member!r} has {n:,} bytes and CRC-32 0x{crc:08x}, expected "
            f"{check.member_size:,} and 0x{check.crc32:08x}; delete it and retry"
        )


def download(url: str, path: str | os.PathLike, check: ZipCheck) -> pathlib.Path:
    """Fetches `url` to `path`; the file gets its name only once `verify_zip` accepts it."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    logging.info("downloading %s to %s", url, path)
    try:
        with files.atomic_file(path) as f, urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, f, 1 << 20)
            f.flush()
            verify_zip(f.name, check)  # the file gets its name only if this passes
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        raise OSError(
            f"could not download {url} ({reason}); check the network, or fetch it by hand "
            f"and put it at {path}"
        ) from None
    return path
