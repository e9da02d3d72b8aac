"""Quality by frequency band: analogy, similarity and neighbour overlap, against hand counts."""

import numpy as np
import pytest

from w2v_jax.evaluation import analogy, by_frequency, similarity


def test_band_labels_and_bands():
    assert by_frequency.band_labels() == ["0-1k", "1k-5k", "5k-30k"]
    assert by_frequency.band_labels((0, 10, 500)) == ["0-10", "10-500"]
    bands = by_frequency._band_of(
        np.array([0, 999, 1000, 4999, 5000, 29_999, 30_000]), (0, 1000, 5000, 30_000)
    )
    np.testing.assert_array_equal(bands, [0, 0, 1, 1, 2, 2, -1])


def _random_vocab(num_words=60, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    return [f"w{i}" for i in range(num_words)], rng.normal(size=(num_words, dim)).astype(np.float32)


def test_question_outcomes_agree_with_totals_and_bands_partition_them():
    words, vectors = _random_vocab()
    rng = np.random.default_rng(1)
    questions = [tuple(f"w{i}" for i in rng.choice(60, 4, replace=False)) for _ in range(300)]
    questions += [("w1", "w2", "w3", "absent")]
    outcomes = analogy.question_outcomes(words, vectors, questions, restrict_vocab=50)
    total = analogy.analogy_accuracy(words, vectors, questions, restrict_vocab=50).total
    assert int(outcomes.correct.sum()) == total.correct
    assert int(outcomes.answerable.sum()) == total.answerable
    # ranks are vocabulary rows; a word beyond the cap (or absent) is -1 and unanswerable
    q = questions.index(("w1", "w2", "w3", "absent"))
    np.testing.assert_array_equal(outcomes.ranks[q], [1, 2, 3, -1])
    assert not outcomes.answerable[q]
    bands = by_frequency.analogy_by_band(outcomes, edges=(0, 20, 40, 50))
    assert sum(b.count for b in bands) == total.answerable
    for band, (lo, hi) in zip(bands, [(0, 20), (20, 40), (40, 50)], strict=True):
        rarest = outcomes.ranks.max(axis=1)
        chosen = outcomes.answerable & (rarest >= lo) & (rarest < hi)
        assert band.count == chosen.sum()
        assert band.value == pytest.approx(outcomes.correct[chosen].mean())


def test_similarity_by_band_is_spearman_of_each_bands_pairs():
    words, vectors = _random_vocab()
    rng = np.random.default_rng(2)
    pairs = [
        (f"w{i}", f"w{j}", float(rng.random())) for i, j in rng.integers(0, 60, (200, 2)) if i != j
    ]
    pairs.append(("w1", "nowhere", 5.0))  # OOV: left out of every band
    bands = by_frequency.similarity_by_band(words, vectors, pairs, edges=(0, 30, 60))
    for band, (lo, hi) in zip(bands, [(0, 30), (30, 60)], strict=True):
        chosen = [p for p in pairs[:-1] if lo <= max(int(p[0][1:]), int(p[1][1:])) < hi]
        assert band.count == len(chosen)
        expected = similarity.similarity_spearman(words, vectors, chosen).spearman
        assert band.value == pytest.approx(expected)
    sparse = by_frequency.similarity_by_band(words, vectors, pairs[:5], edges=(0, 60), min_pairs=10)
    assert np.isnan(sparse[0].value) and sparse[0].count == 5


def test_neighbour_overlap_is_one_under_rotation_and_low_for_unrelated_vectors():
    words, vectors = _random_vocab(num_words=400, dim=16)
    rotation, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(16, 16)))
    same = by_frequency.neighbour_overlap(
        words,
        vectors,
        words,
        (vectors @ rotation).astype(np.float32),
        edges=(0, 100, 400),
        probes=50,
    )
    assert [b.count for b in same] == [50, 50]
    assert all(b.value == pytest.approx(1.0) for b in same)
    _, other = _random_vocab(num_words=400, dim=16, seed=4)
    unrelated = by_frequency.neighbour_overlap(words, vectors, words, other, edges=(0, 100, 400))
    assert all(b.value < 0.2 for b in unrelated)  # chance level is k / 399 = 0.025


def test_neighbour_overlap_matches_words_by_name_not_row():
    words, vectors = _random_vocab(num_words=100, dim=8)
    order = np.random.default_rng(5).permutation(100)
    shuffled_words = [words[i] for i in order]
    bands = by_frequency.neighbour_overlap(
        words, vectors, shuffled_words, vectors[order], edges=(0, 100), probes=30
    )
    assert bands[0].value == pytest.approx(1.0)


def test_neighbour_noise_is_zero_under_rotation_and_grows_with_a_perturbation():
    """Noise is the seeds' disagreement on a probe's nearest cosines: none for the same
    geometry (a rotation), about the perturbation's size for a noisy copy; the gap is the
    probe's 10th minus 50th nearest cosine in set a, the same whatever set b is."""
    words, vectors = _random_vocab(num_words=400, dim=16)
    rotation, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(16, 16)))
    rotated = (vectors @ rotation).astype(np.float32)
    edges = (0, 100, 400)
    same = by_frequency.neighbour_noise(words, vectors, words, rotated, edges=edges, probes=40)
    assert [c.band for c in same] == by_frequency.band_labels(edges)
    assert all(c.noise == pytest.approx(0.0, abs=1e-5) and c.pair_corr > 0.9999 for c in same)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cos = unit[:100] @ unit.T
    np.fill_diagonal(cos[:, :100], -np.inf)
    ranked = -np.sort(-cos, axis=1)
    assert same[0].gap > 0 and same[0].gap < float(np.max(ranked[:, 9] - ranked[:, 49]))
    rng = np.random.default_rng(6)
    noisy = vectors + 0.3 * rng.normal(size=vectors.shape).astype(np.float32)
    far = by_frequency.neighbour_noise(words, vectors, words, noisy, edges=edges, probes=40)
    assert all(0.05 < c.noise < 0.5 and c.pair_corr < 0.99 for c in far)
    assert [c.gap for c in far] == pytest.approx([c.gap for c in same])
    with pytest.raises(ValueError, match="same vocabulary order"):
        by_frequency.neighbour_noise(words, vectors, words[::-1], vectors)
