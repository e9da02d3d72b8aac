"""Word-similarity correlation (WordSim-353 and friends) and nearest neighbours.

The model's similarity of a pair is the cosine of its two vectors; the score is Spearman's
rank correlation ρ between those cosines and the human scores (Pearson's r is reported
too). Lookup is case-insensitive: the first (most frequent) word that lowercases to a
pair's word is used. Pairs with an out-of-vocabulary word are left out of ρ and r, and
counted and reported as OOV, never silently dropped.

Shape letters: V vocabulary size, D embedding dim, P word pairs.
"""

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from w2v_jax import errors
from w2v_jax.evaluation import keyed_vectors


class SimilarityResult(NamedTuple):
    spearman: float  # Spearman's ρ over the pairs in vocabulary (NaN if fewer than 2)
    pearson: float  # Pearson's r over the same pairs
    pairs: int  # all pairs in the file
    used: int  # pairs with both words in the vocabulary: the ρ and r sample size
    oov: int  # pairs left out because a word is out of vocabulary (pairs = used + oov)
    oov_words: tuple[str, ...]  # the lowercased out-of-vocabulary words, sorted

    @property
    def oov_ratio(self) -> float:
        return self.oov / self.pairs if self.pairs else math.nan


def read_word_pairs(path) -> list[tuple[str, str, float]]:
    """Reads `word1<TAB>word2<TAB>score` (WordSim-353) or whitespace-separated pairs.

    Lines starting with `#` and blank lines are skipped; so is a first line whose score is
    not a number (a column-name header such as `Word 1<TAB>Word 2<TAB>Human (mean)`).

    Raises:
      ValueError: one line naming the file, the line and the problem.
    """
    pairs = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = [x.strip() for x in line.split("\t")] if "\t" in line else line.split()
            if len(fields) != 3 or not fields[0] or not fields[1]:
                got = f"got {len(fields)} fields"
                raise errors.EvaluationFileError(
                    f"{path}: line {line_no}: expected 'word1 word2 score', {got}"
                )
            try:
                score = float(fields[2])
            except ValueError:
                if not pairs:  # a header line
                    continue
                raise errors.EvaluationFileError(
                    f"{path}: line {line_no}: score {fields[2]!r} is not a number"
                ) from None
            pairs.append((fields[0], fields[1], score))
    if not pairs:
        raise errors.EvaluationFileError(f"{path}: no word pairs found")
    return pairs


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..P of [P] values; tied values share the mean of their ranks."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")  # [P]
    sorted_x = x[order]
    starts_run = np.concatenate([[True], sorted_x[1:] != sorted_x[:-1]])  # [P]
    run = np.cumsum(starts_run) - 1  # [P] run of each sorted position
    starts = np.flatnonzero(starts_run)
    ends = np.append(starts[1:], x.size)  # one past each run's last position
    ranks = np.empty_like(x)
    ranks[order] = ((starts + ends + 1) / 2.0)[run]  # mean of ranks starts+1 .. ends
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r of two [P] arrays; NaN when P < 2 or either is constant."""
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    y = np.asarray(y, dtype=np.float64) - np.mean(y)
    denominator = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / denominator if x.size > 1 and denominator > 0 else math.nan


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's ρ: Pearson's r of the average ranks (ties share their mean rank)."""
    return pearson(average_ranks(x), average_ranks(y))


def similarity_spearman(
    words: Sequence[str], vectors: np.ndarray, pairs: Sequence[tuple[str, str, float]]
) -> SimilarityResult:
    """Correlates cosine similarities with human scores.

    Args:
      words: [V] vocabulary, most frequent first.
      vectors: [V, D] word vectors.
      pairs: [P] (word1, word2, human score), e.g. from `read_word_pairs`.

    Returns:
      SimilarityResult: ρ and r over the pairs in vocabulary, with the OOV pairs counted.
    """
    index = keyed_vectors.word_index(words, lower=True)
    rows1, rows2, human, oov_words = [], [], [], set()
    for word1, word2, score in pairs:
        i, j = index.get(word1.lower()), index.get(word2.lower())
        if i is None or j is None:
            oov_words.update(w.lower() for w, k in ((word1, i), (word2, j)) if k is None)
            continue
        rows1.append(i)
        rows2.append(j)
        human.append(score)
    vectors = np.asarray(vectors)
    unit1 = keyed_vectors.unit_rows(vectors[np.asarray(rows1, dtype=np.int64)])  # [P, D]
    unit2 = keyed_vectors.unit_rows(vectors[np.asarray(rows2, dtype=np.int64)])  # [P, D]
    cosines = np.sum(unit1.astype(np.float64) * unit2, axis=-1)  # [P]
    return SimilarityResult(
        spearman=spearman(cosines, human),
        pearson=pearson(cosines, human),
        pairs=len(pairs),
        used=len(human),
        oov=len(pairs) - len(human),
        oov_words=tuple(sorted(oov_words)),
    )


def nearest_neighbours(
    words: Sequence[str],
    vectors: np.ndarray,
    query: str | np.ndarray,
    k: int = 10,
    exclude: Sequence[str] = (),
) -> list[tuple[str, float]]:
    """The k words with the highest cosine similarity to `query`, best first.

    Args:
      words: [V] vocabulary, most frequent first.
      vectors: [V, D] word vectors.
      query: a word (exact match first, then case-insensitive; the word itself is left out)
        or a [D] vector.
      k: how many neighbours to return.
      exclude: words (exact strings) never returned.

    Returns:
      Up to k (word, cosine) pairs.

    Raises:
      KeyError: the query word is not in the vocabulary.
    """
    unit_VxD = keyed_vectors.unit_rows(vectors)
    banned = set(exclude)
    if isinstance(query, str):
        row = keyed_vectors.word_index(words).get(query)
        if row is None:
            row = keyed_vectors.word_index(words, lower=True).get(query.lower())
        if row is None:
            raise KeyError(f"word {query!r} is not in the vocabulary")
        banned.add(words[row])
        query = unit_VxD[row]
    query = keyed_vectors.unit_rows(np.asarray(query, dtype=np.float32)[None, :])[0]  # [D]
    cosines = unit_VxD @ query  # [V]
    top = min(len(words), k + len(banned))
    best = np.argpartition(-cosines, top - 1)[:top] if top else np.zeros(0, np.int64)
    best = best[np.argsort(-cosines[best], kind="stable")]
    return [(words[i], float(cosines[i])) for i in best if words[i] not in banned][:k]
