"""Streaming readers: UTF-8 text in files, .gz, .zip and directories -> token ids.

Shape letters: N tokens, P provisional types (distinct words in the text), V vocabulary
size, S sentences.

A token is what `str.split()` returns: a maximal run of non-whitespace characters
(Unicode whitespace, as Python defines it). A line ends at "\\n" and so does every file;
`read_tokens` records where lines end, and `corpus` turns lines into sentences (a text8
file is a single line). Text is read in byte chunks (`CHUNK_BYTES`), decoded
incrementally, and a word cut by a chunk boundary is carried to the next chunk, so the
result never depends on the chunk size. Memory stays at one chunk of text plus the
int32 ids: the whole text is never held.

Tokens get *provisional* ids in the order they are first met; `encode` remaps them to
vocabulary ids with one vectorised take, drops the rest and cuts lines into sentences.
`download` and `verify_zip` fetch and check an archive such as text8.zip.
"""

import codecs
import collections
import contextlib
import gzip
import os
import pathlib
import shutil
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO, NamedTuple

import numpy as np
from absl import logging

from w2v_jax import files

CHUNK_BYTES = 4 << 20  # bytes read and tokenised at a time
MAX_TOKEN_CHARS = 1 << 20  # a longer run without whitespace means this is not text

_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"

Opener = Callable[[], contextlib.AbstractContextManager[BinaryIO]]


class Member(NamedTuple):
    """One stream of text: a plain or gzip file, or one member of a zip archive."""

    name: str  # for messages, e.g. "data/text8.zip:text8"
    open: Opener  # returns a binary stream of the uncompressed text
    stat: tuple[str, int, int]  # (absolute path, size, mtime_ns) of the file on disk


class Tokens(NamedTuple):
    """Token ids of a whole source, before any vocabulary is chosen."""

    chunks: list[np.ndarray]  # int32 provisional ids, in text order; N in all
    table: dict[str, int]  # word -> provisional id; list(table)[p] is the word of id p
    line_ends: np.ndarray  # int64 [L] token position just after each line, last == N
    num_tokens: int  # N


def members(path: str | os.PathLike) -> list[Member]:
    """The text streams of a file, .gz, .zip or directory (recursive, sorted by path).

    Compression is recognised by its magic bytes, not the file name. Hidden files and
    directories (names starting with ".") in a directory are skipped.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise ValueError(f"{path}: directory has no files; put UTF-8 text files in it")
        return [m for p in files for m in _file_members(p)]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file or directory")
    return _file_members(path)


def _file_members(path: pathlib.Path) -> list[Member]:
    st = path.stat()
    stat = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic.startswith(_GZIP_MAGIC):
        return [Member(str(path), lambda: gzip.open(path, "rb"), stat)]
    if magic == _ZIP_MAGIC:
        try:
            with zipfile.ZipFile(path) as zf:
                names = sorted(i.filename for i in zf.infolist() if not i.is_dir())
        except zipfile.BadZipFile as e:
            raise ValueError(f"{path}: not a readable zip archive ({e})") from None
        if not names:
            raise ValueError(f"{path}: zip archive has no files")
        return [Member(f"{path}:{n}", _zip_opener(path, n), stat) for n in names]
    return [Member(str(path), lambda: open(path, "rb"), stat)]


def _zip_opener(path: pathlib.Path, name: str) -> Opener:
    @contextlib.contextmanager
    def open_member():
        with zipfile.ZipFile(path) as zf, zf.open(name) as f:
            yield f

    return open_member


def _decoded(member: Member, chunk_bytes: int) -> Iterator[str]:
    """Yields the member's text in pieces of about `chunk_bytes` bytes."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    try:
        with member.open() as f:
            while True:
                data = f.read(chunk_bytes)
                nul = data.find(b"\x00")
                if nul >= 0:
                    raise ValueError(
                        f"{member.name}: NUL byte at offset {offset + nul}, so this looks like a "
                        "binary file; pass UTF-8 text (plain, .gz, .zip or a directory of them)"
                    )
                try:
                    text = decoder.decode(data, final=not data)
                except UnicodeDecodeError as e:
                    raise ValueError(
                        f"{member.name}: not UTF-8 text (byte 0x{e.object[e.start]:02x} near "
                        f"offset {offset + e.start}); convert it to UTF-8 (e.g. iconv -t utf-8) "
                        "or check that it is a text file"
                    ) from None
                offset += len(data)
                if text:
                    yield text
                if not data:
                    return
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as e:
        raise ValueError(f"{member.name}: cannot read it ({type(e).__name__}: {e})") from None


def read_tokens(
    path: str | os.PathLike,
    *,
    eos: str | None = None,
    lowercase: bool = False,
    chunk_bytes: int = CHUNK_BYTES,
) -> Tokens:
    """Tokenises every member of `path` into provisional ids.

    Args:
      path: a text file (plain, gzip or zip) or a directory of them.
      eos: if given, this token is appended to every line, blank lines and a final line
        without "\\n" included, as the PTB convention does with "<eos>".
      lowercase: lowercase the text before splitting.
      chunk_bytes: bytes read at a time; results do not depend on it.

    Raises:
      ValueError: binary or non-UTF-8 input, unreadable archives, or no tokens at all.
    """
    table: dict[str, int] = collections.defaultdict()
    table.default_factory = table.__len__  # a new word gets the next provisional id
    chunks: list[np.ndarray] = []
    ends: list[int] = []
    n = 0

    def emit(words: list[str]) -> None:
        nonlocal n
        chunks.append(np.fromiter(map(table.__getitem__, words), np.int32, len(words)))
        n += len(words)

    source = members(path)
    for member in source:
        carry = ""  # a word cut by the chunk boundary
        for text in _decoded(member, chunk_bytes):
            lines = (carry + (text.lower() if lowercase else text)).split("\n")
            words: list[str] = []
            for line in lines[:-1]:
                words += line.split()
                if eos is not None:
                    words.append(eos)
                ends.append(n + len(words))
            tail_words = lines[-1].split()
            carry = ""
            if tail_words and not lines[-1][-1].isspace():
                carry = tail_words.pop()
                if len(carry) > MAX_TOKEN_CHARS:
                    raise ValueError(
                        f"{member.name}: over {MAX_TOKEN_CHARS:,} characters without whitespace,"
                        " so this is not whitespace-tokenised text"
                    )
            words += tail_words
            if words:
                emit(words)
        last = [carry] if carry else []
        if last or n > (ends[-1] if ends else 0):  # the file ends an unfinished line
            if eos is not None:
                last.append(eos)
            if last:
                emit(last)
            ends.append(n)
    if n == 0:
        raise ValueError(
            f"{path}: no tokens (the file is empty or only whitespace); pass a non-empty text file"
        )
    logging.info("read %s tokens, %s types, %s lines from %s", n, len(table), len(ends), path)
    return Tokens(chunks, dict(table), np.array(ends, dtype=np.int64), n)


def count_ids(tokens: Tokens, start: int = 0, stop: int | None = None) -> np.ndarray:
    """int64 [P] occurrences of each provisional id among tokens [start, stop)."""
    stop = tokens.num_tokens if stop is None else stop
    counts = np.zeros(len(tokens.table), dtype=np.int64)
    pos = 0
    for chunk in tokens.chunks:
        lo, hi = max(start - pos, 0), min(stop - pos, len(chunk))
        if lo < hi:
            counts += np.bincount(chunk[lo:hi], minlength=len(counts))
        pos += len(chunk)
    return counts


def encode(
    tokens: Tokens,
    words: tuple[str, ...],
    lo: int,
    hi: int,
    max_sentence_length: int,
    out: Callable[[int], np.ndarray] = lambda n: np.empty(n, np.int32),
) -> tuple[np.ndarray, np.ndarray]:
    """Vocabulary ids of tokens [lo, hi) and their sentence offsets; consumes `tokens`.

    Args:
      tokens: from `read_tokens`; its chunks are freed as they are used.
      words: [V] the vocabulary; token ids are positions in it, other tokens are dropped.
      lo, hi: the token range to encode.
      max_sentence_length: lines longer than this (after dropping) are cut.
      out: allocates the int32 [N] result, e.g. as a memmap.

    Returns:
      ids: int32 [N] vocabulary ids of the kept tokens.
      offsets: int64 [S+1], sentence s is ids[offsets[s]:offsets[s+1]]; sentences are
        lines cut into max_sentence_length pieces, lines left empty are dropped.
    """
    prov = np.fromiter(map(tokens.table.get, words, [-1] * len(words)), np.int64, len(words))
    remap = np.full(len(tokens.table), -1, np.int32)  # provisional id -> vocab id or -1
    remap[prov[prov >= 0]] = np.flatnonzero(prov >= 0)
    ids = out(int(count_ids(tokens, lo, hi)[remap >= 0].sum()))
    ends = tokens.line_ends
    cuts = [np.zeros(1, np.int64)]  # positions among kept tokens where lines end
    pos = filled = 0
    for i, chunk in enumerate(tokens.chunks):
        a, b = max(lo, pos), min(hi, pos + len(chunk))
        if a < b:
            mapped = remap[chunk[a - pos : b - pos]]
            keep = mapped >= 0
            kept_before = np.cumsum(keep)
            e = ends[np.searchsorted(ends, a, "right") : np.searchsorted(ends, b, "right")]
            cuts.append(filled + kept_before[e - a - 1])
            ids[filled : filled + kept_before[-1]] = mapped[keep]
            filled += int(kept_before[-1])
        pos += len(chunk)
        tokens.chunks[i] = None  # free the provisional ids as we go
    cuts.append(np.array([filled], np.int64))
    bounds = np.unique(np.concatenate(cuts))  # sorted; a repeated cut is an empty line
    pieces = -(-np.diff(bounds) // max_sentence_length)  # [lines] sentences per line
    within = np.arange(pieces.sum()) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    starts = np.repeat(bounds[:-1], pieces) + max_sentence_length * within
    return ids, np.append(starts, filled).astype(np.int64)


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
        raise ValueError(f"{path}: {size:,} bytes, expected {check.size:,}; delete it and retry")
    crc, n = 0, 0
    try:
        with zipfile.ZipFile(path) as zf, zf.open(check.member) as f:
            while block := f.read(1 << 22):
                crc, n = zlib.crc32(block, crc), n + len(block)
    except (KeyError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{path}: not the expected archive ({e}); delete it and retry") from None
    if (n, crc) != (check.member_size, check.crc32):
        raise ValueError(
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
