"""Trained word vectors apart from trainer state, and word2vec C's file formats.

`KeyedVectors` is gensim's idea in a plain NamedTuple: the words, most frequent first,
and one float32 row per word. Files are word2vec C's formats, which every tool reads:

  header  `V D\\n`
  text    `word v1 v2 ... vD\\n` per row (word2vec C adds a trailing space; both load)
  binary  `word ` + D little-endian float32 (4·D bytes) + `\\n` per row

Shape letters: V vocabulary size, D embedding dim.
"""

import gzip
import os
import pathlib
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from absl import logging

from w2v_jax import errors, files

# Rows formatted and written per write() call: bounds memory for large V.
_WRITE_ROWS = 4096
# Bytes read per read() call by the binary loader.
_READ_BYTES = 1 << 20
# float32 needs 9 significant digits to round-trip exactly.
_TEXT_FLOAT = "%.9g"


class KeyedVectors(NamedTuple):
    """Word vectors, most frequent word first (the order word2vec C writes)."""

    words: tuple[str, ...]  # [V] the vocabulary, most frequent first
    vectors: np.ndarray  # [V, D] float32 input ("syn0") vectors
    counts: np.ndarray | None = None  # [V] int64 corpus counts, None when unknown

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def create(
    words: Sequence[str], vectors: np.ndarray, counts: np.ndarray | None = None
) -> KeyedVectors:
    """Checks shapes and builds a KeyedVectors with float32 [V, D] vectors."""
    words = tuple(words)
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(words):
        raise errors.EvaluationFileError(
            f"vectors must be [V={len(words)}, D], got shape {vectors.shape}"
        )
    if counts is not None:
        counts = np.asarray(counts, dtype=np.int64)
        if counts.shape != (len(words),):
            raise errors.EvaluationFileError(
                f"counts must be [V={len(words)}], got shape {counts.shape}"
            )
    return KeyedVectors(words, vectors, counts)


def word_index(words: Sequence[str], lower: bool = False) -> dict[str, int]:
    """Maps each word (lowercased if ``lower``) to its row; a repeated one keeps its first
    (most frequent) row."""
    index: dict[str, int] = {}
    for i, word in enumerate(words):
        index.setdefault(word.lower() if lower else word, i)
    return index


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Returns [V, D] float32 rows scaled to unit L2 norm; all-zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)  # [V, 1]
    return vectors / np.maximum(norms, np.finfo(np.float32).tiny)


def _check_for_writing(words: Sequence[str], vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[0] != len(words):
        raise errors.EvaluationFileError(
            f"vectors must be [V={len(words)}, D], got shape {vectors.shape}"
        )
    for i, word in enumerate(words):
        if not word or len(word.split()) != 1 or word != word.strip():
            raise errors.EvaluationFileError(f"word {i} ({word!r}) is empty or contains whitespace")
    return vectors


def _write_atomic(path, header: bytes, chunks) -> None:
    """Writes header + chunks to `path` atomically (`files.atomic_file`)."""
    with files.atomic_file(path) as f:
        f.write(header)
        for chunk in chunks:
            f.write(chunk)


def save_word2vec_text(path: str | os.PathLike, words: Sequence[str], vectors: np.ndarray) -> None:
    """Writes word2vec C's text format atomically, `_WRITE_ROWS` rows per write.

    Values are written with 9 significant digits, so float32 vectors load back exactly.

    Args:
      path: the file to write (replaced atomically).
      words: [V] words without whitespace, most frequent first.
      vectors: [V, D] float vectors.
    """
    vectors = _check_for_writing(words, vectors)
    num_words, dim = vectors.shape
    row_format = " ".join([_TEXT_FLOAT] * dim)

    def chunks():
        for start in range(0, num_words, _WRITE_ROWS):
            block = vectors[start : start + _WRITE_ROWS].astype(np.float64).tolist()
            lines = [
                f"{word} {row_format % tuple(row)}\n"
                for word, row in zip(words[start : start + _WRITE_ROWS], block, strict=True)
            ]
            yield "".join(lines).encode("utf-8")

    _write_atomic(path, f"{num_words} {dim}\n".encode(), chunks())


def save_word2vec_binary(
    path: str | os.PathLike, words: Sequence[str], vectors: np.ndarray
) -> None:
    """Writes word2vec C's binary format atomically: `word ` + D little-endian float32 + `\\n`.

    Args:
      path: the file to write (replaced atomically).
      words: [V] words without whitespace, most frequent first.
      vectors: [V, D] float vectors (stored as float32).
    """
    vectors = _check_for_writing(words, vectors)
    num_words, dim = vectors.shape

    def chunks():
        for start in range(0, num_words, _WRITE_ROWS):
            block = vectors[start : start + _WRITE_ROWS].astype("<f4")
            parts = []
            for word, row in zip(words[start : start + _WRITE_ROWS], block, strict=True):
                parts += [word.encode("utf-8"), b" ", row.tobytes(), b"\n"]
            yield b"".join(parts)

    _write_atomic(path, f"{num_words} {dim}\n".encode(), chunks())


def _open(path):
    path = pathlib.Path(path)
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115


def _parse_header(path, line: bytes) -> tuple[int, int]:
    if not line:
        raise errors.EvaluationFileError(f"{path}: empty file, expected a 'V D' header line")
    fields = line.split()
    try:
        num_words, dim = (int(field) for field in fields)
        if num_words < 0 or dim < 1:
            raise ValueError
    except ValueError:
        text = line[:60].decode("utf-8", "replace").strip()
        raise errors.EvaluationFileError(
            f"{path}: line 1: bad header {text!r}, expected 'V D' (vocabulary size, dimension)"
        ) from None
    return num_words, dim


def _looks_binary(path, sample: bytes) -> bool:
    """`.bin` is binary; otherwise text iff the first row reads as a word and numbers."""
    if pathlib.Path(str(path).removesuffix(".gz")).suffix == ".bin":
        return True
    line, newline, _ = sample.partition(b"\n")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return True
    values = text.rstrip().split(" ")[1:] if newline else text.split(" ")[1:-1]
    try:
        np.asarray(values, dtype=np.float32)
    except ValueError:
        return True
    return not values or any(ch < " " and ch not in "\t\r" for ch in text)


def _decode(path, where: str, word: bytes, unicode_errors: str) -> str:
    try:
        return word.decode("utf-8", errors=unicode_errors)
    except UnicodeDecodeError as e:
        raise errors.EvaluationFileError(
            f"{path}: {where}: word is not UTF-8 ({e.reason})"
        ) from None


def _read_text(path, f, num_words: int, dim: int, unicode_errors: str):
    words, vectors = [], np.empty((num_words, dim), np.float32)  # [V, D]
    for row in range(num_words):
        line_no = row + 2
        line = f.readline()
        if not line:
            raise errors.EvaluationFileError(
                f"{path}: line {line_no}: file ends after {row} rows, header says {num_words}"
            )
        fields = line.rstrip().split(b" ")
        if not fields[0]:
            raise errors.EvaluationFileError(
                f"{path}: line {line_no}: row starts with a space, not a word"
            )
        if len(fields) != dim + 1:
            raise errors.EvaluationFileError(
                f"{path}: line {line_no}: expected a word and {dim} values, got {len(fields) - 1}"
            )
        try:
            vectors[row] = np.asarray(fields[1:], dtype=np.float32)
        except ValueError:
            raise errors.EvaluationFileError(
                f"{path}: line {line_no}: non-numeric value in row"
            ) from None
        words.append(_decode(path, f"line {line_no}", fields[0], unicode_errors))
    return words, vectors, f.read(1 << 16)


def _read_binary(path, f, num_words: int, dim: int, unicode_errors: str):
    words, vectors = [], np.empty((num_words, dim), np.float32)  # [V, D]
    row_bytes = 4 * dim
    buf, pos = b"", 0
    for row in range(num_words):
        while True:
            space = buf.find(b" ", pos)
            if space >= 0 and len(buf) - space - 1 >= row_bytes:
                break
            more = f.read(_READ_BYTES)
            if not more:
                problem = "no word" if space < 0 else "truncated vector"
                raise errors.EvaluationFileError(
                    f"{path}: row {row + 1}: {problem}: file ends after {row} rows, "
                    f"header says {num_words}"
                )
            buf, pos = buf[pos:] + more, 0
        # word2vec C ends each row with '\n'; gensim strips it from the next word.
        word = buf[pos:space].lstrip(b"\n")
        if not word:
            raise errors.EvaluationFileError(f"{path}: row {row + 1}: empty word")
        words.append(_decode(path, f"row {row + 1}", word, unicode_errors))
        vectors[row] = np.frombuffer(buf, dtype="<f4", count=dim, offset=space + 1)
        pos = space + 1 + row_bytes
    return words, vectors, buf[pos:] + f.read(1 << 16)


def load_word2vec(
    path: str | os.PathLike,
    binary: bool | None = None,
    limit: int | None = None,
    unicode_errors: str = "strict",
) -> KeyedVectors:
    """Loads a word2vec C text or binary file (ours, word2vec C's, gensim's, fastText's .vec).

    Args:
      path: the file; a `.gz` suffix is read through gzip.
      binary: None detects the format: `.bin` (or `.bin.gz`) is binary, otherwise the first
        row decides.
      limit: read only the first `limit` rows (the most frequent words).
      unicode_errors: how words that are not valid UTF-8 are decoded ("strict" raises).

    Returns:
      KeyedVectors with counts None. A repeated word keeps only its first row (with a warning).

    Raises:
      ValueError: one line naming the file, the line (text) or row (binary) and the problem.
    """
    with _open(path) as f:
        num_words, dim = _parse_header(path, f.readline())
        read_rows = num_words if limit is None else min(num_words, max(limit, 0))
        if binary is None:
            start = f.tell()
            binary = _looks_binary(path, f.read(4 * dim + 1024))
            f.seek(start)
        reader = _read_binary if binary else _read_text
        words, vectors, rest = reader(path, f, read_rows, dim, unicode_errors)
    if read_rows == num_words and rest.strip():
        raise errors.EvaluationFileError(
            f"{path}: data after the {num_words} rows the header announces"
        )
    index = word_index(words)
    if len(index) != len(words):
        keep = sorted(index.values())
        logging.warning(
            "%s: %d repeated words, keeping the first of each", path, len(words) - len(keep)
        )
        words, vectors = [words[i] for i in keep], vectors[keep]
    return KeyedVectors(tuple(words), vectors)
