"""`evaluate_vectors` and the `python -m w2v_jax.evaluation.evaluate` CLI on small files."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats

from w2v_jax.evaluation import evaluate, keyed_vectors

REPO = pathlib.Path(__file__).resolve().parents[1]
# x_i = s_i + r_x, y_i = s_i + r_y: every analogy among these pairs is exactly solvable.
PAIRS = [("greece", "athens"), ("france", "paris"), ("italy", "rome"), ("cat", "cats")]
QUESTIONS = """\
: capital-common-countries
athens greece paris france
athens greece rome italy
athens greece berlin germany
: gram8-plural
cat cats dog dogs
"""
WORD_PAIRS = "# test pairs\ngreece\tathens\t9\ncat\tcats\t7\nfrance\trome\t2\nunicorn\tcat\t5\n"


@pytest.fixture
def files(tmp_path):
    dim = len(PAIRS) + 2
    words, rows = [], []
    for i, pair in enumerate(PAIRS):
        for j, word in enumerate(pair):
            row = np.zeros(dim, np.float32)
            row[[2 + i, j]] = 1.0
            words.append(word)
            rows.append(row)
    vectors = tmp_path / "vectors.bin"
    keyed_vectors.save_word2vec_binary(vectors, words, np.stack(rows))
    (tmp_path / "questions.txt").write_text(QUESTIONS)
    (tmp_path / "pairs.tsv").write_text(WORD_PAIRS)
    return tmp_path


def _expected_spearman(files):
    kv = keyed_vectors.load_word2vec(files / "vectors.bin")
    unit = keyed_vectors.unit_rows(kv.vectors)
    index = keyed_vectors.word_index(kv.words)
    pairs = [("greece", "athens", 9), ("cat", "cats", 7), ("france", "rome", 2)]
    cosines = [unit[index[a]] @ unit[index[b]] for a, b, _ in pairs]
    return scipy.stats.spearmanr(cosines, [s for _, _, s in pairs]).statistic


def test_evaluate_vectors(files):
    kv = keyed_vectors.load_word2vec(files / "vectors.bin")
    metrics = evaluate.evaluate_vectors(
        kv,
        analogies_path=files / "questions.txt",
        similarity_paths=[files / "pairs.tsv"],
        method="3cosmul",
        neighbours=["paris", "nowhere"],
    )
    assert metrics["analogy/total"] == 1.0 and metrics["analogy/coverage"] == 0.5
    assert metrics["analogy/semantic"] == 1.0 and metrics["analogy/syntactic"] is None
    assert (metrics["analogy/total/correct"], metrics["analogy/total/answerable"]) == (2, 2)
    assert metrics["analogy/total/questions"] == 4
    assert metrics["analogy/section/capital-common-countries/questions"] == 3
    assert metrics["analogy/method"] == "3cosmul" and metrics["analogy/restrict_vocab"] == 30000
    assert metrics["similarity/pairs/spearman"] == pytest.approx(_expected_spearman(files))
    assert (metrics["similarity/pairs/oov"], metrics["similarity/pairs/used"]) == (1, 3)
    assert metrics["similarity/pairs/oov_words"] == ["unicorn"]
    assert metrics["neighbours/paris"][0][0] in ("athens", "rome")
    assert metrics["neighbours/nowhere"] is None
    json.dumps(metrics, allow_nan=False)  # JSON-ready
    report = evaluate.format_report(metrics)
    assert "capital-common-countries" in report and "(not in vocabulary)" in report


def _run_cli(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "w2v_jax.evaluation.evaluate", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )


def test_cli_prints_table_and_writes_json(files):
    out = files / "eval.json"
    done = _run_cli(
        f"--vectors={files / 'vectors.bin'}",
        f"--analogies={files / 'questions.txt'}",
        f"--similarity={files / 'pairs.tsv'}",
        "--restrict_vocab=4",  # greece athens france paris: only the first question is in
        f"--output_json={out}",
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    total = next(line.split() for line in lines if line.strip().startswith("total"))
    assert total == ["total", "100.00%", "1", "/", "1", "25.00%", "4"]
    assert "over the first 4 words" in done.stdout
    metrics = json.loads(out.read_text())
    assert metrics["analogy/coverage"] == 0.25 and metrics["analogy/restrict_vocab"] == 4

    done = _run_cli(
        f"--vectors={files / 'vectors.bin'}",
        f"--analogies={files / 'questions.txt'}",
        f"--similarity={files / 'pairs.tsv'}",
        f"--output_json={out}",
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    rows = {line.split()[0]: line.split() for line in lines if line.startswith("  ")}
    assert rows["total"] == ["total", "100.00%", "2", "/", "2", "50.00%", "4"]
    assert rows["semantic"] == ["semantic", "100.00%", "2", "/", "2", "66.67%", "3"]
    assert rows["syntactic"] == ["syntactic", "n/a", "0", "/", "0", "0.00%", "1"]
    assert rows["pairs"][1] == f"{_expected_spearman(files):.4f}"
    assert rows["pairs"][3:] == ["3", "/", "4", "1", "pairs", "(25.00%)"]
    metrics = json.loads(out.read_text())
    for key in ("analogy/total", "analogy/semantic", "analogy/syntactic", "analogy/coverage"):
        assert key in metrics
    assert metrics["analogy/total"] == 1.0 and metrics["analogy/coverage"] == 0.5
    assert metrics["similarity/pairs/spearman"] == pytest.approx(_expected_spearman(files))


def _assert_one_line_error(done, *fragments):
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("evaluate: error:")]
    assert len(errors) == 1, done.stderr
    for fragment in fragments:
        assert fragment in errors[0]


def test_cli_fails_clearly(files):
    truncated = files / "truncated.bin"
    truncated.write_bytes((files / "vectors.bin").read_bytes()[:-10])
    done = _run_cli(f"--vectors={truncated}", f"--analogies={files / 'questions.txt'}")
    _assert_one_line_error(done, str(truncated), "row 8: truncated vector")

    done = _run_cli(f"--vectors={files / 'vectors.bin'}", "--method=cosine", "--analogies=x")
    _assert_one_line_error(done, "--method")

    done = _run_cli(f"--vectors={files / 'vectors.bin'}", f"--similarity={files / 'nope.tsv'}")
    _assert_one_line_error(done, "nope.tsv: no such file")
