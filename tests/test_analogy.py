"""Analogy accuracy: exact answers on built vectors, exclusion, coverage, naive reference."""

import time

import numpy as np
import pytest

from w2v_jax.evaluation import analogy, keyed_vectors

METHODS = ["3cosadd", "3cosmul"]


def _concept_vocab(families, extra_dims=0):
    """Words as sums of orthonormal concepts: x_i = s_i + r_x and y_i = s_i + r_y.

    For a question x_i : y_i :: x_j : ? the unit-vector query y_i - x_i + x_j equals
    s_j + r_y, the unit vector of y_j, exactly.
    """
    words, rows = [], []
    dim = sum(len(pairs) + 2 for pairs in families.values()) + extra_dims
    offset = 0
    for pairs in families.values():
        r_x, r_y = offset, offset + 1
        for i, (x, y) in enumerate(pairs):
            for word, r in ((x, r_x), (y, r_y)):
                row = np.zeros(dim, np.float32)
                row[[offset + 2 + i, r]] = 1.0
                words.append(word)
                rows.append(row)
        offset += len(pairs) + 2
    return words, np.stack(rows)


def _family_questions(pairs):
    return [(x1, y1, x2, y2) for x1, y1 in pairs for x2, y2 in pairs if x1 != x2]


CAPITALS = [("greece", "athens"), ("france", "paris"), ("italy", "rome"), ("japan", "tokyo")]
PLURALS = [("cat", "cats"), ("dog", "dogs"), ("car", "cars")]


def _write_questions(path, sections):
    lines = []
    for name, questions in sections.items():
        lines.append(f": {name}")
        lines += [" ".join(q) for q in questions]
    path.write_text("\n".join(lines) + "\n")
    return analogy.read_analogies(path)


def _naive_scores(unit, a, b, c, method):
    """[V] scores of one question by the formula, without excluding anything."""
    cos = unit.astype(np.float64) @ unit[[a, b, c]].astype(np.float64).T  # [V, 3]
    if method == "3cosadd":
        return cos[:, 1] - cos[:, 0] + cos[:, 2]
    shifted = (cos + 1) / 2
    return shifted[:, 1] * shifted[:, 2] / (shifted[:, 0] + 1e-3)


@pytest.mark.parametrize("method", METHODS)
def test_exactly_solvable_vectors_score_one(tmp_path, method):
    words, vectors = _concept_vocab({"capital": CAPITALS, "plural": PLURALS})
    questions = _write_questions(
        tmp_path / "q.txt",
        {
            "capital-world": _family_questions([(y, x) for x, y in CAPITALS]),
            "gram8-plural": _family_questions(PLURALS),
        },
    )
    result = analogy.analogy_accuracy(words, vectors * 3.0, questions, method=method)
    assert result.total == analogy.Score(12 + 6, 12 + 6, 12 + 6)
    assert result.semantic == analogy.Score(12, 12, 12)
    assert result.syntactic == analogy.Score(6, 6, 6)
    assert result.total.accuracy == 1.0 and result.total.coverage == 1.0
    assert [name for name, _ in result.sections] == ["capital-world", "gram8-plural"]
    assert result.method == method and result.restrict_vocab == 30000 and result.candidates == 14


def _near_synonym_vocab():
    """a ≈ b, so the query b - a + c ≈ c: unexcluded, c itself would win; d is next."""
    eye = np.eye(12, dtype=np.float32)
    vectors = {
        "big": eye[0] + 0.05 * eye[1],
        "large": eye[0] + 0.05 * eye[2],
        "small": eye[3] + 0.05 * eye[1],
        "little": eye[3] + 0.3 * eye[4],
        "fast": eye[5] + 0.05 * eye[6],
        "quick": eye[5] + 0.05 * eye[7],
        "slow": eye[8] + 0.05 * eye[6],
        "sluggish": eye[8] + 0.3 * eye[9],
        "noise": eye[10] + eye[11],
    }
    return list(vectors), np.stack(list(vectors.values()))


@pytest.mark.parametrize("method", METHODS)
def test_question_words_are_excluded(method):
    words, vectors = _near_synonym_vocab()
    questions = [("big", "large", "small", "little"), ("fast", "quick", "slow", "sluggish")]
    unit = keyed_vectors.unit_rows(vectors)
    index = keyed_vectors.word_index(words)
    for a, b, c, d in questions:
        scores = _naive_scores(unit, index[a], index[b], index[c], method)
        assert words[int(np.argmax(scores))] == c  # without exclusion: a question word
        scores[[index[a], index[b], index[c]]] = -np.inf
        assert words[int(np.argmax(scores))] == d
    result = analogy.analogy_accuracy(words, vectors, questions, method=method)
    assert result.total == analogy.Score(2, 2, 2)
    assert result.sections == (("all", analogy.Score(2, 2, 2)),)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("table_bytes", [None, 4 * 200 * 20])
def test_matches_naive_reference_with_padded_chunks(monkeypatch, method, table_bytes):
    if table_bytes:  # at most 20 question words per cosine table: several groups
        monkeypatch.setattr(analogy, "_COSINE_TABLE_BYTES", table_bytes)
    rng = np.random.default_rng(1)
    num_words, num_questions = 200, 50
    words = [f"w{i}" for i in range(num_words)]
    vectors = rng.normal(size=(num_words, 16)).astype(np.float32)
    unit = keyed_vectors.unit_rows(vectors)
    questions, expected = [], 0
    for q in range(num_questions):
        a, b, c = rng.choice(num_words, size=3, replace=False)
        scores = _naive_scores(unit, a, b, c, method)
        scores[[a, b, c]] = -np.inf
        best = int(np.argmax(scores))
        d = best if q % 2 == 0 else int(rng.integers(num_words))
        expected += d == best
        questions.append((words[a], words[b], words[c], words[d]))
    for batch_size in (7, 64):  # 50 = 7 * 7 + 1: the last chunk is padded
        result = analogy.analogy_accuracy(
            words, vectors, questions, method=method, batch_size=batch_size
        )
        assert result.total == analogy.Score(expected, num_questions, num_questions)


def test_coverage_counts_with_oov_and_restricted_vocab(tmp_path):
    words, vectors = _concept_vocab({"capital": CAPITALS, "plural": PLURALS})
    # Order: greece athens france paris italy rome japan tokyo | cat cats dog dogs car cars.
    questions = _write_questions(
        tmp_path / "q.txt",
        {
            "capital-common": [
                ("athens", "greece", "paris", "france"),  # all in the first 8
                ("athens", "greece", "tokyo", "japan"),  # all in the first 8
                ("athens", "greece", "berlin", "germany"),  # OOV
            ],
            "gram8-plural": [
                ("cat", "cats", "dog", "dogs"),  # beyond the cap of 8
                ("cat", "cats", "horse", "horses"),  # beyond the cap and OOV
            ],
        },
    )
    capped = analogy.analogy_accuracy(words, vectors, questions, restrict_vocab=8)
    assert capped.candidates == 8
    assert capped.total == analogy.Score(2, 2, 5) and capped.total.coverage == 0.4
    assert capped.semantic == analogy.Score(2, 2, 3)
    assert capped.syntactic == analogy.Score(0, 0, 2) and np.isnan(capped.syntactic.accuracy)
    whole = analogy.analogy_accuracy(words, vectors, questions, restrict_vocab=None)
    assert whole.total == analogy.Score(3, 3, 5) and whole.syntactic == analogy.Score(1, 1, 2)
    assert dict(whole.sections)["gram8-plural"] == analogy.Score(1, 1, 2)


@pytest.mark.parametrize("method", METHODS)
def test_case_insensitive_keeps_most_frequent_variant(method):
    words, vectors = _concept_vocab({"capital": CAPITALS})
    words = [w.capitalize() if w in ("paris", "rome") else w for w in words]
    # Later, less frequent lowercase variants with wrong vectors are ignored.
    words += ["paris", "ROME"]
    vectors = np.concatenate([vectors, -vectors[[3, 5]]])
    questions = [("GREECE", "Athens", "france", "PARIS"), ("Greece", "athens", "Italy", "rome")]
    result = analogy.analogy_accuracy(words, vectors, questions, method=method)
    assert result.candidates == 8
    assert result.total == analogy.Score(2, 2, 2)


def test_matches_gensim_evaluate_word_analogies(tmp_path):
    gensim_models = pytest.importorskip("gensim.models")
    countries = [(f"country{i}", f"capital{i}") for i in range(8)]
    nouns = [(f"noun{i}", f"nouns{i}") for i in range(8)]
    words, vectors = _concept_vocab({"capital": countries, "plural": nouns}, extra_dims=4)
    rng = np.random.default_rng(3)
    vectors = vectors + rng.normal(scale=0.35, size=vectors.shape).astype(np.float32)
    path = tmp_path / "q.txt"
    questions = _write_questions(
        path,
        {
            "capital-world": _family_questions(countries) + [("a", "b", "c", "d")],
            "gram8-plural": _family_questions(nouns),
        },
    )
    kv = gensim_models.KeyedVectors(vector_size=vectors.shape[1])
    kv.add_vectors(words, vectors)
    for cap in (len(words), 24):
        ours = analogy.analogy_accuracy(words, vectors, questions, restrict_vocab=cap)
        _, sections = kv.evaluate_word_analogies(str(path), restrict_vocab=cap)
        theirs = {s["section"]: (len(s["correct"]), len(s["incorrect"])) for s in sections}
        assert 0 < ours.total.correct < ours.total.answerable  # a non-trivial comparison
        total = ours.total
        assert theirs["Total accuracy"] == (total.correct, total.answerable - total.correct)
        for name, score in ours.sections:
            assert theirs.get(name, (0, 0)) == (score.correct, score.answerable - score.correct)


def test_read_analogies_sections_and_errors(tmp_path):
    path = tmp_path / "q.txt"
    path.write_text(": capital-world\nAthens Greece Baghdad Iraq\n\n: gram1-x\na b c d\n")
    parsed = analogy.read_analogies(path)
    assert parsed.sections == ("capital-world", "gram1-x")
    assert parsed.questions == (("athens", "greece", "baghdad", "iraq"), ("a", "b", "c", "d"))
    assert parsed.section_ids == (0, 1)
    for text, problem in [
        ("a b c d\n", "line 1: question before any ': section' line"),
        (": s\na b c\n", "line 2: expected 4 words, got 3"),
        (": s\n", "no questions found"),
    ]:
        path.write_text(text)
        with pytest.raises(ValueError, match=problem):
            analogy.read_analogies(path)


def test_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        analogy.analogy_accuracy(["a"], np.ones((1, 2)), [], method="cos")
    with pytest.raises(ValueError, match="restrict_vocab"):
        analogy.analogy_accuracy(["a"], np.ones((1, 2)), [], restrict_vocab=0)


@pytest.mark.data
def test_real_questions_words(data_file):
    parsed = analogy.read_analogies(data_file("questions-words.txt"))
    assert len(parsed.questions) == 19544 and len(parsed.sections) == 14
    counts = np.bincount(parsed.section_ids)
    per_section = dict(zip(parsed.sections, counts.tolist(), strict=True))
    assert per_section["capital-world"] == 4524 and per_section["gram9-plural-verbs"] == 870
    syntactic = sum(n for name, n in per_section.items() if analogy.is_syntactic(name))
    assert (len(parsed.questions) - syntactic, syntactic) == (8869, 10675)

    # All 19,544 questions against a random 30k x 100 vocabulary (correctness, no timing).
    vocab = sorted({w for q in parsed.questions for w in q})
    words = vocab + [f"filler{i}" for i in range(30000 - len(vocab))]
    vectors = np.random.default_rng(0).normal(size=(30000, 100)).astype(np.float32)
    start = time.perf_counter()
    result = analogy.analogy_accuracy(words, vectors, parsed)
    print(f"19,544 questions x 30k x 100 (3cosadd): {time.perf_counter() - start:.2f} s")
    assert result.total.answerable == result.total.total == 19544
    assert (result.semantic.answerable, result.syntactic.answerable) == (8869, 10675)
    assert result.total.correct <= 20  # random vectors: about 19,544 / 30,000 by chance
