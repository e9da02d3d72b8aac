"""Quality by word frequency: what totals over a benchmark hide.

An optimiser can raise analogy accuracy and WordSim-353 overall while hurting rare words
(AdaGrad gives a rarely seen row near-full steps while it normalises frequent ones;
`../shared/notes/large-batch.md` §7). Three breakdowns by frequency band, a band being a
range of vocabulary rows (rank 0 = the most frequent word):

* `analogy_by_band`: analogy accuracy of the questions whose *rarest* word falls in the
  band (from `analogy.question_outcomes`).
* `similarity_by_band`: WordSim-353-style Spearman ρ of the pairs whose rarer word falls
  in the band.
* `neighbour_overlap`: for probe words of each band, the mean overlap of their k nearest
  neighbours in two vector sets (two seeds of one recipe: how stable a rare word's
  neighbourhood is; two recipes: how much they agree).

Shape letters: V vocabulary, D dim, Q questions, P word pairs, W probe words.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from w2v_jax.evaluation import analogy, keyed_vectors, similarity

# Rank bands: the 1,000 most frequent words, the next 4,000, the rest of the 30k cap.
EDGES = (0, 1_000, 5_000, 30_000)


def band_labels(edges: Sequence[int] = EDGES) -> list[str]:
    """``"0-1k"``-style labels of the bands ``[edges[i], edges[i + 1])``."""

    def short(n: int) -> str:
        return f"{n // 1000}k" if n and n % 1000 == 0 else str(n)

    return [f"{short(lo)}-{short(hi)}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


def _band_of(ranks: np.ndarray, edges: Sequence[int]) -> np.ndarray:
    """[...] band index of each rank (-1 outside every band)."""
    ranks = np.asarray(ranks)
    band = np.searchsorted(np.asarray(edges), ranks, side="right") - 1
    return np.where((ranks >= edges[0]) & (ranks < edges[-1]), band, -1)


class BandScore(NamedTuple):
    band: str
    value: float  # accuracy, ρ or mean overlap; NaN where the band has too few items
    count: int  # questions, pairs or probe words in the band


def analogy_by_band(outcomes: analogy.Outcomes, edges: Sequence[int] = EDGES) -> list[BandScore]:
    """Accuracy of the answerable questions, grouped by their rarest word's rank."""
    rarest = np.max(outcomes.ranks, axis=1)  # [Q]; -1 rows are not answerable
    band = np.where(outcomes.answerable, _band_of(rarest, edges), -1)
    out = []
    for i, label in enumerate(band_labels(edges)):
        chosen = band == i
        n = int(np.sum(chosen))
        value = float(np.mean(outcomes.correct[chosen])) if n else float("nan")
        out.append(BandScore(label, value, n))
    return out


def similarity_by_band(
    words: Sequence[str],
    vectors: np.ndarray,
    pairs: Sequence[tuple[str, str, float]],
    edges: Sequence[int] = EDGES,
    min_pairs: int = 10,
) -> list[BandScore]:
    """Spearman ρ of the in-vocabulary ``pairs`` [P], grouped by the rarer word's rank
    (lookup as `similarity.similarity_spearman`); NaN for a band under ``min_pairs``."""
    index = keyed_vectors.word_index(words, lower=True)
    rarer, kept = [], []
    for pair in pairs:
        i, j = index.get(pair[0].lower()), index.get(pair[1].lower())
        if i is not None and j is not None:
            rarer.append(max(i, j))
            kept.append(pair)
    band = _band_of(np.asarray(rarer, dtype=np.int64), edges)
    out = []
    for b, label in enumerate(band_labels(edges)):
        chosen = [pair for pair, pair_band in zip(kept, band, strict=True) if pair_band == b]
        value = float("nan")
        if len(chosen) >= min_pairs:
            value = similarity.similarity_spearman(words, vectors, chosen).spearman
        out.append(BandScore(label, value, len(chosen)))
    return out


def neighbour_overlap(
    words_a: Sequence[str],
    vectors_a: np.ndarray,
    words_b: Sequence[str],
    vectors_b: np.ndarray,
    edges: Sequence[int] = EDGES,
    k: int = 10,
    probes: int = 200,
    seed: int = 0,
) -> list[BandScore]:
    """Mean |top-k(a) ∩ top-k(b)| / k over ``probes`` words per band.

    Both sets are restricted to the words they share, ranked by set a's order (its
    vocabulary, most frequent first) and cut at ``edges[-1]``; probe words are drawn
    without replacement from each band with ``seed``, the same for any pair of sets with
    the same vocabulary. Neighbours are searched among the same restricted words.
    """
    index_b = keyed_vectors.word_index(words_b)
    shared = [(i, index_b[w]) for i, w in enumerate(words_a) if w in index_b][: edges[-1]]
    rows_a = np.asarray([i for i, _ in shared], dtype=np.int64)
    rows_b = np.asarray([j for _, j in shared], dtype=np.int64)
    unit_a = keyed_vectors.unit_rows(np.asarray(vectors_a)[rows_a])  # [V', D]
    unit_b = keyed_vectors.unit_rows(np.asarray(vectors_b)[rows_b])
    rng = np.random.default_rng(seed)
    out = []
    for lo, hi, label in zip(edges[:-1], edges[1:], band_labels(edges), strict=True):
        probe = _probe_words(rng, lo, min(hi, len(shared)), probes)
        if probe.size == 0:
            out.append(BandScore(label, float("nan"), 0))
            continue
        overlap = [_top_k_overlap(unit_a, unit_b, int(w), k) for w in probe]
        out.append(BandScore(label, float(np.mean(overlap)), int(probe.size)))
    return out


def _probe_words(rng: np.random.Generator, lo: int, hi: int, probes: int) -> np.ndarray:
    """Sorted ranks [W] drawn without replacement from [lo, hi), W = min(probes, hi - lo)
    (none for an empty band): the probe words of one band."""
    candidates = np.arange(lo, hi)
    if candidates.size == 0:
        return candidates
    return np.sort(rng.choice(candidates, min(probes, candidates.size), replace=False))


def _top_k_overlap(unit_a: np.ndarray, unit_b: np.ndarray, row: int, k: int) -> float:
    """|top-k of ``row`` in a ∩ in b| / k, the word itself excluded."""

    def top(unit):
        cosines = unit @ unit[row]
        cosines[row] = -np.inf
        return set(np.argpartition(-cosines, k)[:k].tolist())

    return len(top(unit_a) & top(unit_b)) / k


class Churn(NamedTuple):
    """Why two vector sets' top-10 lists differ in one band (`neighbour_noise`)."""

    band: str
    noise: float  # mean over probes: std of cos_a − cos_b over the probe's nearest in a
    gap: float  # mean over probes: its 10th minus its 50th nearest cosine, in a
    pair_corr: float  # correlation of a's and b's cosines over 20,000 random word pairs


def neighbour_noise(
    words_a: Sequence[str],
    vectors_a: np.ndarray,
    words_b: Sequence[str],
    vectors_b: np.ndarray,
    edges: Sequence[int] = EDGES,
    probes: int = 200,
    candidates: int = 50,
    seed: int = 0,
) -> list[Churn]:
    """Per band, how much two vector sets of one vocabulary order (two seeds) disagree on
    the cosines of a probe word's ``candidates`` nearest words in a (``noise``) against
    how far apart those neighbours lie (``gap``): a top-10 list churns when noise ≳ gap.
    ``probes`` words per band drawn with ``seed`` (the same as `neighbour_overlap`'s), NaN
    for a band with no word; ranks cut at ``edges[-1]``."""
    if list(words_a) != list(words_b):
        raise ValueError("neighbour_noise needs two vector sets of the same vocabulary order")
    n = min(len(words_a), edges[-1])
    unit = [keyed_vectors.unit_rows(np.asarray(v)[:n]) for v in (vectors_a, vectors_b)]
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, n, (2, 20_000))
    pair_cos = [(u[pick[0]] * u[pick[1]]).sum(-1) for u in unit]
    pair_corr = float(np.corrcoef(*pair_cos)[0, 1])
    out = []
    for lo, hi, label in zip(edges[:-1], edges[1:], band_labels(edges), strict=True):
        probe = _probe_words(rng, lo, min(hi, n), probes)  # [W]
        if probe.size == 0:
            out.append(Churn(label, float("nan"), float("nan"), pair_corr))
            continue
        cos = [u[probe] @ u.T for u in unit]  # [W, n] each
        for c in cos:
            c[np.arange(probe.size), probe] = -np.inf  # not its own neighbour
        near = np.argsort(-cos[0], axis=1)[:, :candidates]  # [W, candidates]
        ca, cb = (np.take_along_axis(c, near, 1) for c in cos)
        gap = float((ca[:, 9] - ca[:, -1]).mean())
        noise = float(np.std(ca - cb, axis=1).mean())
        out.append(Churn(label, noise, gap, pair_corr))
    return out
