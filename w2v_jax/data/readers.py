"""Streaming readers: UTF-8 text in files, .gz, .zip and directories -> provisional ids.

Shape letters: N tokens, P provisional types (distinct words in the text), L line ends.

A token is what `str.split()` returns: a maximal run of non-whitespace characters
(Unicode whitespace, as Python defines it). A line ends at "\\n" and so does every file;
`read_tokens` records where lines end, and `corpus` turns lines into sentences (a text8
file is a single line). Text is read in byte chunks (`CHUNK_BYTES`), decoded
incrementally, and a word cut by a chunk boundary is carried to the next chunk, so the
result never depends on the chunk size.

Tokens get *provisional* ids in the order they are first met. They are not kept in
memory: `read_tokens` appends them to a raw int32 file and the line ends to a raw int64
file in a folder the caller gives (`blocks` reads them back a block at a time), so what
it holds is one chunk of text and the word table, whatever the corpus size.

Workers. With ``workers > 1`` the pieces (`pieces`: members, and plain files over
2 x `PIECE_BYTES` cut into runs of whole lines) are tokenised in spawned processes, each
with its own word table, and merged in order into files byte for byte those of a serial
read (docs/data.md, "The build at scale"); below `PARALLEL_MIN_BYTES` the read is serial.
"""

import codecs
import collections
import contextlib
import gzip
import itertools
import multiprocessing
import os
import pathlib
import zipfile
import zlib
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

import numpy as np
from absl import logging

from w2v_jax import errors
from w2v_jax.data import blocks

CHUNK_BYTES = 4 << 20  # bytes read and tokenised at a time
MAX_TOKEN_CHARS = 1 << 20  # a longer run without whitespace means this is not text
PIECE_BYTES = 256 << 20  # a plain file over twice this is cut into pieces of about this
PARALLEL_MIN_BYTES = 32 << 20  # less input than this is read by one process
_NEWLINE_SEARCH = 16 << 20  # how far past a cut point a "\n" is looked for

_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"


class Member(NamedTuple):
    """One stream of text: a plain or gzip file, or one member of a zip archive."""

    name: str  # for messages, e.g. "data/text8.zip:text8"
    path: str  # the file on disk
    kind: str  # "plain", "gzip" or "zip"
    inner: str  # the member's name inside a zip archive ("" otherwise)
    stat: tuple[str, int, int]  # (absolute path, size, mtime_ns) of the file on disk

    @contextlib.contextmanager
    def open(self) -> Iterator[BinaryIO]:
        """A binary stream of the uncompressed text."""
        if self.kind == "zip":
            with zipfile.ZipFile(self.path) as zf, zf.open(self.inner) as f:
                yield f
        else:
            with (gzip.open if self.kind == "gzip" else open)(self.path, "rb") as f:
                yield f


class Piece(NamedTuple):
    """Bytes [start, stop) of a member's text (stop None: to its end); a piece other than
    a member's first starts just after a "\\n"."""

    member: Member
    start: int
    stop: int | None


class Tokens(NamedTuple):
    """Token ids of a whole source, before any vocabulary is chosen, spilled to files."""

    ids: pathlib.Path  # raw int32 [N] provisional ids, in text order
    line_ends: pathlib.Path  # raw int64 [L] ends of non-empty lines, increasing, last == N
    table: dict[str, int]  # word -> provisional id; list(table)[p] is the word of id p
    num_tokens: int  # N
    num_lines: int  # L


def default_workers() -> int:
    """Worker processes when none are given: min(4, the CPUs this process may use)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(4, cpus or 1)


def members(path: str | os.PathLike) -> list[Member]:
    """The text streams of a file, .gz, .zip or directory (recursive, sorted by path).

    Compression is recognised by its magic bytes, not the file name. Hidden files and
    directories (names starting with ".") in a directory are skipped.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        found = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not found:
            raise errors.CorpusError(f"{path}: directory has no files; put UTF-8 text files in it")
        return [m for p in found for m in _file_members(p)]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file or directory")
    return _file_members(path)


def _file_members(path: pathlib.Path) -> list[Member]:
    st = path.stat()
    stat = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic.startswith(_GZIP_MAGIC):
        return [Member(str(path), str(path), "gzip", "", stat)]
    if magic == _ZIP_MAGIC:
        try:
            with zipfile.ZipFile(path) as zf:
                names = sorted(i.filename for i in zf.infolist() if not i.is_dir())
        except zipfile.BadZipFile as e:
            raise errors.CorpusError(f"{path}: not a readable zip archive ({e})") from None
        if not names:
            raise errors.CorpusError(f"{path}: zip archive has no files")
        return [Member(f"{path}:{n}", str(path), "zip", n, stat) for n in names]
    return [Member(str(path), str(path), "plain", "", stat)]


def pieces(source: list[Member], piece_bytes: int | None = None) -> list[Piece]:
    """The members, plain files over 2 x ``piece_bytes`` (None: `PIECE_BYTES`) cut into
    runs of whole lines."""
    piece_bytes, out = piece_bytes or PIECE_BYTES, []
    for member in source:
        size = member.stat[1]
        cuts = [0]
        if member.kind == "plain" and size > 2 * piece_bytes:
            for target in range(piece_bytes, size - piece_bytes // 2, piece_bytes):
                cut = _line_start_after(member.path, max(target, cuts[-1]))
                if cut is None or cut >= size:
                    break
                cuts.append(cut)
        out += [Piece(member, a, b) for a, b in zip(cuts, [*cuts[1:], None], strict=True)]
    return out


def _line_start_after(path: str, pos: int) -> int | None:
    """The byte just after the first "\\n" at or after ``pos`` (None if none is near)."""
    with open(path, "rb") as f:
        f.seek(pos)
        for at in range(pos, pos + _NEWLINE_SEARCH, 1 << 20):
            data = f.read(1 << 20)
            i = data.find(b"\n")
            if i >= 0:
                return at + i + 1
            if not data:
                return None
    return None


def _decoded(piece: Piece, chunk_bytes: int) -> Iterator[str]:
    """Yields the piece's text in pieces of about `chunk_bytes` bytes."""
    member = piece.member
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = piece.start
    left = None if piece.stop is None else piece.stop - piece.start
    try:
        with member.open() as f:
            if offset:
                f.seek(offset)
            while True:
                data = f.read(chunk_bytes if left is None else min(chunk_bytes, left))
                nul = data.find(b"\x00")
                if nul >= 0:
                    raise errors.CorpusError(
                        f"{member.name}: NUL byte at offset {offset + nul}, so this looks like a "
                        "binary file; pass UTF-8 text (plain, .gz, .zip or a directory of them)"
                    )
                try:
                    text = decoder.decode(data, final=not data)
                except UnicodeDecodeError as e:
                    raise errors.CorpusError(
                        f"{member.name}: not UTF-8 text (byte 0x{e.object[e.start]:02x} near "
                        f"offset {offset + e.start}); convert it to UTF-8 (e.g. iconv -t utf-8) "
                        "or check that it is a text file"
                    ) from None
                offset += len(data)
                if left is not None:
                    left -= len(data)
                if text:
                    yield text
                if not data:
                    return
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as e:
        raise errors.CorpusError(
            f"{member.name}: cannot read it ({type(e).__name__}: {e})"
        ) from None


class _Spill:
    """Appends provisional ids (raw int32) and line ends (raw int64) to two files.

    A line end equal to the one before (an empty line) is not written, so the ends are
    increasing; ``n`` tokens and ``last_end`` so far start at 0.
    """

    def __init__(self, folder: pathlib.Path, prefix: str = ""):
        self.ids_path = folder / f"{prefix}ids.i32"
        self.ends_path = folder / f"{prefix}ends.i64"
        self.n = self.last_end = self.num_lines = 0
        self._ids = open(self.ids_path, "wb")  # noqa: SIM115 (closed by close)
        self._ends = open(self.ends_path, "wb")  # noqa: SIM115

    def add_ids(self, ids: np.ndarray) -> None:
        self._ids.write(np.ascontiguousarray(ids, np.int32))
        self.n += len(ids)

    def add_ends(self, ends) -> None:
        ends = np.asarray(ends, np.int64)
        ends = ends[np.diff(ends, prepend=self.last_end) > 0]
        if len(ends):
            self._ends.write(ends)
            self.last_end = int(ends[-1])
            self.num_lines += len(ends)

    def close(self) -> None:
        self._ids.close()
        self._ends.close()


def _new_table() -> collections.defaultdict:
    """word -> provisional id; a new word gets the next id. (A factory of ``table.__len__``
    would make a reference cycle, which only the cyclic collector frees: a worker then
    kept every piece's table.)"""
    return collections.defaultdict(itertools.count().__next__)


def _tokenise(piece, table, out: _Spill, eos, lowercase, chunk_bytes) -> None:
    """Appends the piece's tokens and line ends to ``out``, new words to ``table``."""
    carry = ""  # a word cut by the chunk boundary
    for text in _decoded(piece, chunk_bytes):
        lines = (carry + (text.lower() if lowercase else text)).split("\n")
        words: list[str] = []
        ends: list[int] = []
        for line in lines[:-1]:
            words += line.split()
            if eos is not None:
                words.append(eos)
            ends.append(out.n + len(words))
        tail_words = lines[-1].split()
        carry = ""
        if tail_words and not lines[-1][-1].isspace():
            carry = tail_words.pop()
            if len(carry) > MAX_TOKEN_CHARS:
                raise errors.CorpusError(
                    f"{piece.member.name}: over {MAX_TOKEN_CHARS:,} characters without "
                    "whitespace, so this is not whitespace-tokenised text"
                )
        words += tail_words
        out.add_ids(np.fromiter(map(table.__getitem__, words), np.int32, len(words)))
        out.add_ends(ends)
    last = [carry] if carry else []
    if last or out.n > out.last_end:  # the text ends an unfinished line
        if eos is not None:
            last.append(eos)
        out.add_ids(np.fromiter(map(table.__getitem__, last), np.int32, len(last)))
        out.add_ends([out.n])


def read_tokens(
    path: str | os.PathLike,
    spill_dir: str | os.PathLike,
    *,
    eos: str | None = None,
    lowercase: bool = False,
    chunk_bytes: int = CHUNK_BYTES,
    workers: int = 1,
) -> Tokens:
    """Tokenises every member of `path` into provisional ids, spilled to ``spill_dir``.

    Args:
      path: a text file (plain, gzip or zip) or a directory of them.
      spill_dir: a folder (created) for the ids and line-end files; the caller deletes it.
      eos: if given, this token is appended to every line, blank lines and a final line
        without "\\n" included, as the PTB convention does with "<eos>".
      lowercase: lowercase the text before splitting.
      chunk_bytes: bytes read at a time; results do not depend on it.
      workers: processes that tokenise pieces at once (see the module doc); results do
        not depend on it.

    Raises:
      ValueError: binary or non-UTF-8 input, unreadable archives, or no tokens at all.
    """
    spill_dir = pathlib.Path(spill_dir)
    spill_dir.mkdir(parents=True, exist_ok=True)
    source = members(path)
    work = pieces(source)
    workers = min(workers, len(work))
    table = _new_table()
    out = _Spill(spill_dir)
    try:
        size = sum(stat[1] for stat in {m.stat for m in source})  # a zip counted once
        if workers > 1 and size >= PARALLEL_MIN_BYTES:
            _read_parallel(work, table, out, workers, (eos, lowercase, chunk_bytes))
        else:
            for piece in work:
                _tokenise(piece, table, out, eos, lowercase, chunk_bytes)
    finally:
        out.close()
    if out.n == 0:
        raise errors.CorpusError(
            f"{path}: no tokens (the file is empty or only whitespace); pass a non-empty text file"
        )
    table.default_factory = None  # a plain mapping from now on
    logging.info(
        "read %s tokens, %s types, %s lines from %s", out.n, len(table), out.num_lines, path
    )
    return Tokens(out.ids_path, out.ends_path, table, out.n, out.num_lines)


def _read_piece(task) -> tuple[list[str], int, int]:
    """In a worker: tokenises one piece into its own files; (its words, N, L)."""
    piece, folder, prefix, how = task
    table = _new_table()
    out = _Spill(folder, prefix)
    try:
        _tokenise(piece, table, out, *how)
    finally:
        out.close()
    return list(table), out.n, out.num_lines


def _read_parallel(work: list[Piece], table, out: _Spill, workers: int, how) -> None:
    """Tokenises the pieces in ``workers`` processes and merges them into ``out``."""
    folder = out.ids_path.parent
    tasks = [(piece, folder, f"piece{i:06d}-", how) for i, piece in enumerate(work)]
    logging.info("tokenising %d pieces in %d worker processes", len(tasks), workers)
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for (_, _, prefix, _), (words, n, num_lines) in zip(
            tasks, pool.imap(_read_piece, tasks), strict=True
        ):
            remap = np.fromiter(map(table.__getitem__, words), np.int32, len(words))
            base = out.n
            ids_path, ends_path = folder / f"{prefix}ids.i32", folder / f"{prefix}ends.i64"
            for _, local in blocks.chunks(ids_path, np.int32, 0, n):
                out.add_ids(remap[local])
            for _, ends in blocks.chunks(ends_path, np.int64, 0, num_lines):
                out.add_ends(ends + base)
            ids_path.unlink()
            ends_path.unlink()
