"""Word-pair correlation against scipy, OOV accounting, file formats, nearest neighbours."""

import numpy as np
import pytest
import scipy.stats

from w2v_jax.evaluation import similarity


def test_average_ranks_match_scipy_with_ties():
    x = np.array([3.0, 1.0, 3.0, 2.0, 3.0, 1.0, 7.0])
    np.testing.assert_array_equal(similarity.average_ranks(x), scipy.stats.rankdata(x))


def test_spearman_and_pearson_match_scipy_with_ties():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=40).astype(float)  # many ties
    y = x + rng.integers(0, 4, size=40)  # ties too
    assert similarity.spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y).statistic)
    assert similarity.pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y).statistic)
    assert np.isnan(similarity.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert np.isnan(similarity.pearson([1.0], [2.0]))


def _toy_vectors():
    words = ["Cat", "dog", "car", "truck", "cat", "banana"]
    vectors = np.array(
        [[1, 0.1, 0], [0.9, 0.3, 0], [0, 1, 0.2], [0.1, 1, 0.1], [-1, 0, 0], [0, 0, 1]],
        dtype=np.float32,
    )
    return words, vectors


def test_similarity_spearman_reports_oov_and_is_case_insensitive():
    words, vectors = _toy_vectors()
    pairs = [
        ("cat", "DOG", 9.0),  # "cat" is the first row, "Cat", not the later "cat"
        ("car", "truck", 8.5),
        ("cat", "car", 2.0),
        ("dog", "banana", 1.0),
        ("cat", "unicorn", 5.0),  # OOV
        ("Zebra", "truck", 3.0),  # OOV
    ]
    result = similarity.similarity_spearman(words, vectors, pairs)
    assert (result.pairs, result.used, result.oov) == (6, 4, 2)
    assert result.oov_ratio == pytest.approx(2 / 6)
    assert result.oov_words == ("unicorn", "zebra")
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosines = [unit[0] @ unit[1], unit[2] @ unit[3], unit[0] @ unit[2], unit[1] @ unit[5]]
    human = [9.0, 8.5, 2.0, 1.0]
    assert result.spearman == pytest.approx(scipy.stats.spearmanr(cosines, human).statistic)
    assert result.pearson == pytest.approx(scipy.stats.pearsonr(cosines, human).statistic)


def test_read_word_pairs_formats(tmp_path):
    tsv = tmp_path / "ws.tsv"
    tsv.write_text(
        "# collection\n# Word 1\tWord 2\tHuman (mean)\nlove\tsex\t6.77\nNew York\tcity\t9\n"
    )
    assert similarity.read_word_pairs(tsv) == [("love", "sex", 6.77), ("New York", "city", 9.0)]
    spaces = tmp_path / "pairs.txt"
    spaces.write_text("word1 word2 score\n\ntiger  cat 7.35\nold new 1\n")
    assert similarity.read_word_pairs(spaces) == [("tiger", "cat", 7.35), ("old", "new", 1.0)]


@pytest.mark.parametrize(
    "text, problem",
    [
        ("a b 1\nc d\n", "line 2: expected 'word1 word2 score', got 2 fields"),
        ("a b 1\nc d high\n", "line 2: score 'high' is not a number"),
        ("# only a comment\n", "no word pairs found"),
    ],
)
def test_read_word_pairs_errors(tmp_path, text, problem):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem) as info:
        similarity.read_word_pairs(path)
    assert str(info.value).startswith(f"{path}: ")


def test_nearest_neighbours():
    words, vectors = _toy_vectors()
    found = similarity.nearest_neighbours(words, vectors, "Cat", k=2)
    assert [w for w, _ in found] == ["dog", "truck"]
    assert found[0][1] == pytest.approx(
        float(vectors[0] @ vectors[1] / np.linalg.norm(vectors[0]) / np.linalg.norm(vectors[1]))
    )
    assert [w for w, _ in similarity.nearest_neighbours(words, vectors, "CAR", k=1)] == ["truck"]
    by_vector = similarity.nearest_neighbours(words, vectors, vectors[2], k=2, exclude=("car",))
    assert [w for w, _ in by_vector] == ["truck", "dog"]
    with pytest.raises(KeyError, match="unicorn"):
        similarity.nearest_neighbours(words, vectors, "unicorn")


@pytest.mark.data
def test_real_wordsim353(data_file):
    pairs = similarity.read_word_pairs(data_file("wordsim353.tsv"))
    assert len(pairs) == 353
    assert pairs[0] == ("love", "sex", 6.77)
    assert sum(1 for a, b, _ in pairs if (a, b) == ("money", "cash")) == 2
    scores = [s for _, _, s in pairs]
    assert (min(scores), max(scores)) == (0.23, 10.0)
