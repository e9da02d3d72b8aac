"""Word-analogy accuracy on Google's questions-words.txt (Mikolov et al., 2013).

A question `a b c d` reads a:b :: c:d; the prediction is the vocabulary word x, other than
a, b and c, that maximises

  3CosAdd  cos(x, b) - cos(x, a) + cos(x, c)
  3CosMul  cos'(x, b) · cos'(x, c) / (cos'(x, a) + ε),  cos' = (cos + 1) / 2,  ε = 1e-3

Conventions (word2vec's compute-accuracy and gensim's `evaluate_word_analogies`):
  * Everything is lowercased; when several vocabulary words lowercase to the same string
    only the first (most frequent) one takes part. (gensim also lets the rarer variants win
    and maps them to the lowercased word; compute-accuracy compares uppercased strings.)
  * Only the first `restrict_vocab` (most frequent) words take part, as question words and
    as candidate answers. We default to 30,000, the "typical value" of compute-accuracy's
    threshold argument (which is off unless given); gensim defaults to 300,000.
  * A question is answerable iff its 4 words are in that restricted vocabulary. Accuracy is
    correct / answerable; coverage is answerable / total. Both denominators are reported.
  * Sections whose names start with `gram` are syntactic, the others semantic.

How: the cosines of the U distinct question words with the V candidates are one matmul,
[U, D] x [D, V] (the Google set has U = 905 words for Q = 19,544 questions); each chunk of
Qb questions then gathers its a, b and c rows of that table, combines them, masks the
question words and takes the argmax. Chunks have a fixed shape (the last one is padded), so
each function compiles once. Question sets whose table would pass `_COSINE_TABLE_BYTES`
are split into consecutive groups with one table each.

Shape letters: V candidate words (after the cap), D embedding dim, Q questions, Qb questions
per chunk, U distinct question words.

References:
  Mikolov et al., 2013, "Efficient Estimation of Word Representations in Vector Space".
  Levy & Goldberg, 2014, "Linguistic Regularities in Sparse and Explicit Word
  Representations" (3CosMul).
"""

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from w2v_jax import errors
from w2v_jax.evaluation import keyed_vectors

METHODS = ("3cosadd", "3cosmul")
COSMUL_EPSILON = 1e-3
# Largest [U, V] float32 table of question-word cosines held at once (U question words).
_COSINE_TABLE_BYTES = 1 << 30


class Analogies(NamedTuple):
    """A parsed analogy file."""

    sections: tuple[str, ...]  # section names, in file order
    questions: tuple[tuple[str, str, str, str], ...]  # [Q] lowercased (a, b, c, d)
    section_ids: tuple[int, ...]  # [Q] index into `sections` of each question


class Score(NamedTuple):
    """Counts for a set of questions; accuracy is over the answerable ones."""

    correct: int
    answerable: int  # questions whose 4 words are all in the restricted vocabulary
    total: int  # all questions, answerable or not

    @property
    def accuracy(self) -> float:
        return self.correct / self.answerable if self.answerable else math.nan

    @property
    def coverage(self) -> float:
        return self.answerable / self.total if self.total else math.nan


class AnalogyResult(NamedTuple):
    method: str  # "3cosadd" or "3cosmul"
    restrict_vocab: int | None  # the cap as requested (None: whole vocabulary)
    candidates: int  # words that took part: the cap, after lowercasing and de-duplicating
    total: Score
    semantic: Score
    syntactic: Score
    sections: tuple[tuple[str, Score], ...]  # per section, in file order


def is_syntactic(section: str) -> bool:
    """Google's convention: syntactic sections are named `gram1-...` to `gram9-...`."""
    return section.startswith("gram")


def read_analogies(path) -> Analogies:
    """Parses questions-words.txt: `: section` header lines, then `a b c d` lines.

    Raises:
      ValueError: one line naming the file, the line and the problem.
    """
    sections, questions, section_ids = [], [], []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            if line.startswith(":"):
                name = line[1:].strip()
                if not name:
                    raise errors.EvaluationFileError(
                        f"{path}: line {line_no}: section header without a name"
                    )
                sections.append(name)
                continue
            words = line.lower().split()
            if len(words) != 4:
                raise errors.EvaluationFileError(
                    f"{path}: line {line_no}: expected 4 words, got {len(words)}"
                )
            if not sections:
                raise errors.EvaluationFileError(
                    f"{path}: line {line_no}: question before any ': section' line"
                )
            questions.append(tuple(words))
            section_ids.append(len(sections) - 1)
    if not questions:
        raise errors.EvaluationFileError(f"{path}: no questions found")
    return Analogies(tuple(sections), tuple(questions), tuple(section_ids))


@jax.jit
def _cosines(unit_VxD: jax.Array, rows_U: jax.Array) -> jax.Array:
    """[U, V] cosines of the U question words with every candidate."""
    return jnp.matmul(unit_VxD[rows_U], unit_VxD.T, precision=jax.lax.Precision.HIGHEST)


@functools.partial(jax.jit, static_argnames="method")
def _predict(
    cos_UxV: jax.Array, local_Qbx3: jax.Array, abc_Qbx3: jax.Array, method: str
) -> jax.Array:
    """The [Qb] best candidates for questions whose a, b, c are rows of `cos_UxV`.

    `local_Qbx3` indexes `cos_UxV`; `abc_Qbx3` are the same words as candidate columns,
    which are excluded from the answers.
    """
    cos_a, cos_b, cos_c = (cos_UxV[local_Qbx3[:, i]] for i in range(3))  # [Qb, V] each
    if method == "3cosadd":
        scores = cos_b - cos_a + cos_c  # [Qb, V]
    else:
        cos_a, cos_b, cos_c = ((cos + 1.0) / 2.0 for cos in (cos_a, cos_b, cos_c))  # in [0, 1]
        scores = cos_b * cos_c / (cos_a + COSMUL_EPSILON)  # [Qb, V]
    column = jnp.arange(cos_UxV.shape[1])[None, :]  # [1, V]
    is_question = functools.reduce(
        jnp.logical_or, [column == abc_Qbx3[:, i : i + 1] for i in range(3)]
    )  # [Qb, V]
    return jnp.argmax(jnp.where(is_question, -jnp.inf, scores), axis=-1)  # [Qb]


def _word_groups(abc_Qx3: np.ndarray, max_words: int) -> list[tuple[int, int]]:
    """Splits questions into consecutive runs that each use at most `max_words` words."""
    if np.unique(abc_Qx3).size <= max_words:
        return [(0, len(abc_Qx3))]
    groups, start, seen = [], 0, set()
    for q, abc in enumerate(abc_Qx3.tolist()):
        if len(seen.union(abc)) > max_words:
            groups.append((start, q))
            start, seen = q, set()
        seen.update(abc)
    return groups + [(start, len(abc_Qx3))]


def _predict_all(
    unit_VxD: jax.Array, abc_Qx3: np.ndarray, method: str, batch_size: int
) -> np.ndarray:
    """[Q] predicted candidate columns, computed in fixed-shape chunks."""
    num_candidates = unit_VxD.shape[0]
    max_words = max(3, _COSINE_TABLE_BYTES // (4 * num_candidates))
    groups = _word_groups(abc_Qx3, max_words)
    # One padded table height for every group, so each function compiles once.
    table_rows = max(np.unique(abc_Qx3[start:end]).size for start, end in groups)
    table_rows = -(-table_rows // 128) * 128
    pending = []  # (device chunks, questions) per group; results are fetched at the end
    for start, end in groups:
        words_U, local_Qx3 = np.unique(abc_Qx3[start:end], return_inverse=True)
        rows_U = np.zeros(table_rows, dtype=np.int32)  # padding rows are word 0, unused
        rows_U[: words_U.size] = words_U
        cos_UxV = _cosines(unit_VxD, jnp.asarray(rows_U))
        padded = -(-(end - start) // batch_size) * batch_size
        local = np.zeros((padded, 3), np.int32)  # padding questions are discarded
        local[: end - start] = local_Qx3.reshape(-1, 3)
        abc = np.zeros((padded, 3), np.int32)
        abc[: end - start] = abc_Qx3[start:end]
        chunks = [
            _predict(cos_UxV, local[i : i + batch_size], abc[i : i + batch_size], method)
            for i in range(0, padded, batch_size)
        ]
        pending.append((chunks, end - start))
    return np.concatenate([np.concatenate(chunks)[:n] for chunks, n in pending])


def _score(mask: np.ndarray, correct: np.ndarray, answerable: np.ndarray) -> Score:
    return Score(int(np.sum(correct & mask)), int(np.sum(answerable & mask)), int(np.sum(mask)))


class Outcomes(NamedTuple):
    """Per-question results, for breakdowns the totals hide (`evaluation.by_frequency`)."""

    questions: Analogies  # the questions, parsed
    ranks: np.ndarray  # [Q, 4] int vocabulary row (frequency rank) of a, b, c, d; -1 if capped
    answerable: np.ndarray  # [Q] bool: all 4 words within the cap
    correct: np.ndarray  # [Q] bool
    candidates: int  # words that took part (the cap after lowercasing and de-duplicating)


def question_outcomes(
    words: Sequence[str],
    vectors: np.ndarray,
    questions: Analogies | Sequence[Sequence[str]],
    *,
    restrict_vocab: int | None = 30000,
    method: str = "3cosadd",
    batch_size: int = 512,
) -> Outcomes:
    """Which questions `vectors` answers correctly (arguments as `analogy_accuracy`)."""
    if method not in METHODS:
        raise errors.EvaluationFileError(f"method must be one of {METHODS}, got {method!r}")
    if batch_size < 1:
        raise errors.EvaluationFileError(f"batch_size must be positive, got {batch_size}")
    if not isinstance(questions, Analogies):
        quads = tuple(tuple(w.lower() for w in q) for q in questions)
        if any(len(quad) != 4 for quad in quads):
            raise errors.EvaluationFileError("every question must have 4 words (a, b, c, d)")
        questions = Analogies(("all",), quads, (0,) * len(quads))
    if restrict_vocab is not None and restrict_vocab < 1:
        raise errors.EvaluationFileError(
            f"restrict_vocab must be positive or None, got {restrict_vocab}"
        )

    cap = len(words) if restrict_vocab is None else min(restrict_vocab, len(words))
    lower = keyed_vectors.word_index(words[:cap], lower=True)
    rows = np.fromiter(lower.values(), dtype=np.int64, count=len(lower))  # [V]
    column = {word: i for i, word in enumerate(lower)}  # lowercased word -> candidate column
    num_questions = len(questions.questions)
    abcd_Qx4 = np.full((num_questions, 4), -1, dtype=np.int32)
    for q, quad in enumerate(questions.questions):
        abcd_Qx4[q] = [column.get(word, -1) for word in quad]
    answerable = np.all(abcd_Qx4 >= 0, axis=1)  # [Q]

    correct = np.zeros(num_questions, dtype=bool)  # [Q]
    todo = np.flatnonzero(answerable)
    if todo.size:
        unit_VxD = jnp.asarray(keyed_vectors.unit_rows(np.asarray(vectors)[rows]))
        predicted = _predict_all(unit_VxD, abcd_Qx4[todo, :3], method, batch_size)
        correct[todo] = predicted == abcd_Qx4[todo, 3]

    ranks = np.where(abcd_Qx4 >= 0, rows[np.maximum(abcd_Qx4, 0)], -1)  # [Q, 4]
    return Outcomes(questions, ranks, answerable, correct, len(rows))


def analogy_accuracy(
    words: Sequence[str],
    vectors: np.ndarray,
    questions: Analogies | Sequence[Sequence[str]],
    *,
    restrict_vocab: int | None = 30000,
    method: str = "3cosadd",
    batch_size: int = 512,
) -> AnalogyResult:
    """Accuracy of `vectors` on analogy questions, in fixed-shape jitted chunks.

    Args:
      words: [V] vocabulary, most frequent first (word2vec file order).
      vectors: [V, D] word vectors (normalised here).
      questions: `read_analogies`'s result, or plain (a, b, c, d) tuples (one section "all").
      restrict_vocab: use only the first this many words (None: all). 30,000 by default, as
        compute-accuracy's "typical value"; gensim's default is 300,000.
      method: "3cosadd" or "3cosmul".
      batch_size: questions per chunk (Qb); every chunk has this shape, so it compiles once.

    Returns:
      AnalogyResult with correct/answerable/total for total, semantic, syntactic and each
      section, and the cap and method used.
    """
    outcomes = question_outcomes(
        words, vectors, questions, restrict_vocab=restrict_vocab, method=method,
        batch_size=batch_size,
    )  # fmt: skip
    questions, correct = outcomes.questions, outcomes.correct
    answerable = outcomes.answerable
    num_questions = len(questions.questions)
    section_ids = np.asarray(questions.section_ids, dtype=np.int64)  # [Q]
    syntactic = np.array([is_syntactic(name) for name in questions.sections], dtype=bool)
    syntactic_q = syntactic[section_ids] if num_questions else np.zeros(0, bool)  # [Q]
    everything = np.ones(num_questions, dtype=bool)
    return AnalogyResult(
        method=method,
        restrict_vocab=restrict_vocab,
        candidates=outcomes.candidates,
        total=_score(everything, correct, answerable),
        semantic=_score(~syntactic_q, correct, answerable),
        syntactic=_score(syntactic_q, correct, answerable),
        sections=tuple(
            (name, _score(section_ids == s, correct, answerable))
            for s, name in enumerate(questions.sections)
        ),
    )
