"""Provisional ids -> vocabulary ids and sentence offsets, streamed a block at a time.

Shape letters: N tokens read, P provisional types, V vocabulary size, S sentences,
B tokens of one block.

`readers.read_tokens` leaves the text as provisional ids and line ends in files. `count`
counts a token range with one `np.bincount` per block of at least P tokens, so the work
is O(N + P) whatever the corpus size; `encode` maps a range to vocabulary ids, drops the
out-of-vocabulary tokens and cuts lines into sentences, reading the files block by block
and writing ``ids.npy`` and ``offsets.npy`` as it goes. Memory is a few arrays of B
elements plus the P-sized tables, never an array of N.
"""

import itertools
import pathlib

import numpy as np

from w2v_jax.data import blocks, readers, windows


def count(tokens: readers.Tokens, lo: int, hi: int) -> np.ndarray:
    """int64 [P] occurrences of each provisional id among tokens [lo, hi)."""
    num_types = len(tokens.table)
    counts = np.zeros(num_types, np.int64)
    size = max(blocks.BLOCK, num_types)  # each bincount costs O(B + P) = O(B)
    for _, chunk in blocks.chunks(tokens.ids, np.int32, lo, hi, size=size):
        counts += np.bincount(chunk, minlength=num_types)
    return counts


def remap(table: dict[str, int], words: tuple[str, ...]) -> np.ndarray:
    """int32 [P] the vocabulary id of each provisional id, -1 for words not in ``words``."""
    prov = np.fromiter(map(table.get, words, itertools.repeat(-1)), np.int64, len(words))
    out = np.full(len(table), -1, np.int32)
    out[prov[prov >= 0]] = np.flatnonzero(prov >= 0)
    return out


def encode(
    tokens: readers.Tokens,
    ids_of: np.ndarray,
    lo: int,
    hi: int,
    max_sentence_length: int,
    folder: pathlib.Path,
    size: int,
) -> int:
    """Writes the vocabulary ids of tokens [lo, hi) and their sentence offsets.

    Args:
      tokens: from `readers.read_tokens`.
      ids_of: int32 [P] from `remap`: the vocabulary id of each provisional id, or -1 for
        a token to drop.
      lo, hi: the token range to encode.
      max_sentence_length: lines longer than this (after dropping) are cut.
      folder: where ``ids.npy`` (int32 [N] the kept tokens' ids) and ``offsets.npy``
        (int64 [S+1]: sentence s is ids[offsets[s]:offsets[s+1]]) are written. Sentences
        are lines cut into max_sentence_length pieces; lines left empty are dropped.
      size: N, the tokens kept: ``count(tokens, lo, hi)[ids_of >= 0].sum()``.

    Returns:
      S, the number of sentences.
    """
    ends = _Ends(tokens.line_ends, tokens.num_lines, lo)
    filled = line_start = 0  # kept tokens written; where the open line starts among them
    starts_path = folder / "offsets.i64"
    with (
        blocks.npy_writer(folder / "ids.npy", np.int32, size) as ids_out,
        open(starts_path, "wb") as starts_out,
    ):
        for a, chunk in blocks.chunks(tokens.ids, np.int32, lo, hi):
            mapped = ids_of[chunk]
            keep = mapped >= 0
            kept_before = np.cumsum(keep)  # [B] kept tokens in [a, a + 1 + i)
            e = ends.upto(a + len(chunk))  # line ends in (a, a + B]
            cuts = filled + kept_before[e - a - 1]  # where those lines end among kept tokens
            ids_out.write(mapped[keep])
            filled += int(kept_before[-1])
            line_start = _write_starts(starts_out, line_start, cuts, filled, max_sentence_length)
        # The range ends the line it cuts (the train split's last line, say).
        _write_starts(starts_out, line_start, np.array([filled]), filled, max_sentence_length)
        starts_out.write(np.array([filled], np.int64))
    return blocks.raw_to_npy(starts_path, folder / "offsets.npy", np.int64) - 1


def _write_starts(f, line_start: int, cuts: np.ndarray, filled: int, max_len: int) -> int:
    """Writes the starts of the sentences of the lines ending at ``cuts`` (the first one
    starting at ``line_start``), then those of the open line's full pieces before
    ``filled``; returns where the rest of the open line starts."""
    bounds = np.concatenate([np.array([line_start], np.int64), cuts])
    bounds = bounds[np.diff(bounds, prepend=-1) > 0]  # a repeated cut is an empty line
    f.write(windows.split_sentences(bounds, max_len)[:-1])
    line_start = int(bounds[-1])
    full = (filled - line_start) // max_len  # the open line's pieces that are complete
    f.write(line_start + max_len * np.arange(full, dtype=np.int64))
    return line_start + max_len * full


class _Ends:
    """The line ends after ``lo``, read in order: ``upto(b)`` returns those not returned
    yet that are <= b (at most b minus the last b asked for, as ends increase)."""

    def __init__(self, path: pathlib.Path, num_lines: int, lo: int):
        self._path, self._num_lines = path, num_lines
        first, last = 0, num_lines  # binary search: the first end > lo
        while first < last:
            mid = (first + last) // 2
            if blocks.read(path, np.int64, mid, mid + 1)[0] <= lo:
                first = mid + 1
            else:
                last = mid
        self._next = first  # the next end to read from the file
        self._buffer = np.zeros(0, np.int64)

    def upto(self, b: int) -> np.ndarray:
        while (not len(self._buffer) or self._buffer[-1] <= b) and self._next < self._num_lines:
            stop = min(self._next + blocks.BLOCK, self._num_lines)
            more = blocks.read(self._path, np.int64, self._next, stop)
            self._buffer = np.concatenate([self._buffer, more])
            self._next = stop
        k = int(np.searchsorted(self._buffer, b, "right"))
        out, self._buffer = self._buffer[:k], self._buffer[k:]
        return out
