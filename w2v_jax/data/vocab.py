"""The vocabulary: words sorted by corpus count, with their counts.

Shape letters: V vocabulary size, N tokens.

Word ids are positions in `Vocab.words`, so id 0 is the most frequent word. The order is
descending count with ties broken by the word itself (ascending code points), which makes
the ids a pure function of the counts: the same corpus always gives the same ids,
whatever the order the words were first met in or the Python hash seed.
"""

import dataclasses
import functools
import hashlib
import os
from collections.abc import Iterable, Mapping

import numpy as np

from w2v_jax import errors, files


@dataclasses.dataclass(frozen=True, eq=False)
class Vocab:
    """Words sorted by descending count (ties by word, ascending) and their counts.

    Build one with `Vocab.from_counts`; construction checks the order, so a `Vocab`
    always satisfies it.
    """

    words: tuple[str, ...]  # [V] distinct words, most frequent first
    counts: np.ndarray  # int64 [V] corpus counts, non-increasing

    def __post_init__(self):
        words = tuple(self.words)
        counts = np.array(self.counts, dtype=np.int64)  # a private, read-only copy
        counts.setflags(write=False)
        object.__setattr__(self, "words", words)
        object.__setattr__(self, "counts", counts)
        if counts.shape != (len(words),):
            raise ValueError(
                f"Vocab needs one count per word: {len(words)} words, counts {counts.shape}"
            )
        if len(set(words)) != len(words):
            raise ValueError("Vocab words must be distinct")
        step = np.diff(counts)
        if np.any(step > 0):
            raise ValueError("Vocab words must be sorted by descending count")
        for i in np.flatnonzero(step == 0):
            if words[i] > words[i + 1]:
                raise ValueError(
                    f"Vocab ties must be sorted by word: {words[i]!r} before {words[i + 1]!r}"
                )

    @classmethod
    def from_counts(
        cls,
        counts: Mapping[str, int],
        *,
        min_count: int = 5,
        max_vocab_size: int | None = None,
    ) -> "Vocab":
        """Keeps the words seen at least `min_count` times, most frequent first.

        Args:
          counts: word -> number of occurrences in the corpus.
          min_count: words with a smaller count are dropped (word2vec's `min_count`).
          max_vocab_size: if given, keep only this many of the most frequent remaining
            words; ties at the cut go to the word that sorts first. This is gensim's
            `max_final_vocab` (gensim's own `max_vocab_size` is a memory cap instead).

        Raises:
          ValueError: if no word survives `min_count`; the message says how many tokens
            and types were read and that `min_count` must be lowered.
        """
        if min_count < 1:
            raise errors.ConfigError(f"min_count must be >= 1, got {min_count}")
        if max_vocab_size is not None and max_vocab_size < 1:
            raise errors.ConfigError(f"max_vocab_size must be >= 1 or None, got {max_vocab_size}")
        kept = [(-int(c), w) for w, c in counts.items() if c >= min_count]
        if not kept:
            total = sum(int(c) for c in counts.values())
            top = max(counts.values(), default=0)
            raise errors.CorpusError(
                f"empty vocabulary: read {total:,} tokens of {len(counts):,} types and none "
                f"occurs min_count={min_count} times (the most frequent occurs {top} times); "
                "lower min_count"
            )
        kept.sort()
        if max_vocab_size is not None:
            del kept[max_vocab_size:]
        return cls(
            words=tuple(w for _, w in kept),
            counts=np.array([-c for c, _ in kept], dtype=np.int64),
        )

    def __len__(self) -> int:
        return len(self.words)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Vocab):
            return NotImplemented
        return self.words == other.words and np.array_equal(self.counts, other.counts)

    def __hash__(self) -> int:
        return hash(self.words)

    def __repr__(self) -> str:
        head = ", ".join(self.words[:5])
        return f"Vocab(V={len(self)}, tokens={int(self.counts.sum()):,}, words=[{head}, ...])"

    def digest(self) -> str:
        """A short hash of the words and counts: what a checkpoint's manifest and a cache
        key encoded with this vocabulary record."""
        h = hashlib.sha256("\n".join(self.words).encode("utf-8"))
        h.update(np.asarray(self.counts, dtype="<i8").tobytes())
        return h.hexdigest()[:16]

    @functools.cached_property
    def index(self) -> dict[str, int]:
        """word -> id, built once on first use."""
        return {w: i for i, w in enumerate(self.words)}

    def decode(self, ids: Iterable[int] | np.ndarray) -> list[str]:
        """Maps ids [N] back to words; every id must be in [0, V)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise ValueError(f"ids must be in [0, {len(self)}), got {ids.min()}..{ids.max()}")
        return [self.words[i] for i in ids.tolist()]

    def save(self, path: str | os.PathLike) -> None:
        """Writes `word<TAB>count` per line (UTF-8), atomically (`files.write_atomic`)."""
        bad = [w for w in self.words if not w or any(c in w for c in "\t\n\r")]
        if bad:
            raise errors.CorpusError(
                f"cannot save words with tabs or newlines in vocab.tsv: {bad[:3]}"
            )
        text = "".join(f"{w}\t{c}\n" for w, c in zip(self.words, self.counts.tolist(), strict=True))
        files.write_atomic(path, text)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocab":
        """Reads a vocab.tsv written by `save`; the order is checked, not recomputed."""
        words, counts = [], []
        with open(path, encoding="utf-8", newline="\n") as f:
            for lineno, line in enumerate(f, 1):
                word, tab, count = line.rstrip("\n").rpartition("\t")
                if not tab or not word or not count.isdigit():
                    raise errors.CorpusError(
                        f"{path}:{lineno}: expected 'word<TAB>count', got {line!r}"
                    )
                words.append(word)
                counts.append(int(count))
        return cls(words=tuple(words), counts=np.array(counts, dtype=np.int64))
