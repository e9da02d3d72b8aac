r"""Evaluates any word2vec-format vectors file: analogies, word similarity, neighbours.

  python -m w2v_jax.evaluation.evaluate --vectors=runs/x/vectors.bin \
      --analogies=../shared/data/questions-words.txt \
      --similarity=../shared/data/wordsim353.tsv --output_json=runs/x/eval.json

Prints a table to stdout and, with --output_json, writes one flat JSON object. Analogy
accuracies are over the answerable questions (all 4 words among the first
--restrict_vocab words); coverage is answerable / all questions. `evaluate_vectors` is the
same evaluation as a function, for the trainer.
"""

import math
import os
import pathlib
import warnings
from collections.abc import Sequence

import numpy as np
from absl import flags, logging

from w2v_jax import cli, errors, files
from w2v_jax.evaluation import analogy, keyed_vectors, similarity

FLAGS = flags.FLAGS


def _define_flags() -> None:
    """Defined only when run as a program, so importing this module adds no flags."""
    flags.DEFINE_string("vectors", None, "word2vec text or binary vectors file (any tool's).")
    flags.DEFINE_enum("format", "auto", ["auto", "text", "binary"], "Vectors file format.")
    flags.DEFINE_integer("limit", None, "Load only the first N (most frequent) vectors.", 1)
    flags.DEFINE_string("analogies", None, "Analogy questions, questions-words.txt format.")
    flags.DEFINE_list("similarity", [], "Word-pair files (WordSim-353 format), comma-separated.")
    flags.DEFINE_integer(
        "restrict_vocab", 30000, "Analogies use the first N words only (0: all of them).", 0
    )
    flags.DEFINE_enum("method", "3cosadd", list(analogy.METHODS), "Analogy scoring rule.")
    flags.DEFINE_list("neighbours", [], "Words whose 10 nearest neighbours are printed.")
    flags.DEFINE_string("output_json", None, "Write the metrics as one JSON object here.")
    flags.mark_flag_as_required("vectors")


def _number(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _add_score(metrics: dict, prefix: str, score: analogy.Score) -> None:
    metrics[f"{prefix}/correct"] = score.correct
    metrics[f"{prefix}/answerable"] = score.answerable
    metrics[f"{prefix}/questions"] = score.total
    metrics[f"{prefix}/coverage"] = _number(score.coverage)


def evaluate_vectors(
    kv: keyed_vectors.KeyedVectors,
    analogies_path=None,
    similarity_paths: Sequence = (),
    restrict_vocab: int | None = 30000,
    method: str = "3cosadd",
    neighbours: Sequence[str] = (),
) -> dict:
    """Runs every requested evaluation and returns one flat, JSON-ready dict.

    Keys: `analogy/total`, `analogy/semantic`, `analogy/syntactic` (accuracy over the
    answerable questions, None if there are none), `analogy/coverage` (answerable / all),
    `analogy/<group>/{correct,answerable,questions,coverage}`, `analogy/section/<name>` and
    its counts, `analogy/restrict_vocab`, `analogy/method`, `analogy/candidates`;
    `similarity/<file stem>/{spearman,pearson,pairs,used,oov,oov_ratio,oov_words}`;
    `neighbours/<word>` ([word, cosine] pairs, None if the word is unknown).

    Raises:
      ValueError, OSError: an unreadable or malformed evaluation file.
    """
    with warnings.catch_warnings():  # no coverage gives None (n/a), not numpy's warnings
        warnings.simplefilter("ignore", RuntimeWarning)
        return _evaluate(kv, analogies_path, similarity_paths, restrict_vocab, method, neighbours)


_HEADLINE = ("total", "semantic", "syntactic", "coverage")


def score_file(path, analogies_path=None, similarity_paths: Sequence = (), restrict_vocab=30000):
    """The experiments' figures of the word2vec-format vectors at ``path``, flat and named
    as a sweep's summary: ``analogy_{total,semantic,syntactic,coverage}`` and
    ``similarity_<file stem>_spearman`` (None where there is nothing to score)."""
    kv = keyed_vectors.load_word2vec(path)
    metrics = evaluate_vectors(kv, analogies_path, similarity_paths, restrict_vocab)
    return {k.replace("/", "_"): v for k, v in headline(metrics).items()}


def headline(metrics: dict) -> dict:
    """What a run logs of `evaluate_vectors`'s ``metrics``: `_HEADLINE` analogy figures
    (None without analogies) and every ``similarity/<file stem>/spearman``."""
    out = {f"analogy/{k}": metrics.get(f"analogy/{k}") for k in _HEADLINE}
    return {**out, **{k: v for k, v in metrics.items() if k.endswith("/spearman")}}


def _read(read, path):
    """``read(path)``, with the file named in any error it raises."""
    try:
        return read(path)
    except (OSError, UnicodeError, ValueError) as e:
        text = " ".join(str(e).split())
        if isinstance(e, UnicodeError):
            text += "; save it as UTF-8"
        raise errors.EvaluationFileError(text if str(path) in text else f"{path}: {text}") from None


def check_files(analogies_path=None, similarity_paths: Sequence = ()) -> None:
    """Reads the evaluation files once; ValueError naming the first unreadable one."""
    if analogies_path:
        _read(analogy.read_analogies, analogies_path)
    for path in similarity_paths:
        _read(similarity.read_word_pairs, path)


def check_vectors(kv, path) -> None:
    """Refuses vectors that hold NaN or inf (every score on them would be nan) in one line;
    warns about all-zero vectors (no direction: their cosine is undefined)."""
    vectors = np.asarray(kv.vectors)  # [V, D]
    bad = ~np.all(np.isfinite(vectors), axis=1)  # [V]
    if bad.any():
        words = ", ".join(repr(kv.words[i]) for i in np.flatnonzero(bad)[:3])
        raise errors.EvaluationFileError(
            f"{path}: {int(bad.sum()):,} of {len(bad):,} vectors hold NaN or inf (e.g. "
            f"{words}); the run that wrote them diverged: retrain it with a lower "
            "--config.optimizer.alpha"
        )
    zero = ~np.any(vectors, axis=1)  # [V]
    if zero.any():
        words = ", ".join(repr(kv.words[i]) for i in np.flatnonzero(zero)[:3])
        logging.warning(
            "%s: %d of %d vectors are all zero (e.g. %s): words that were never trained; "
            "their similarities and neighbours mean nothing",
            path, int(zero.sum()), len(zero), words,
        )  # fmt: skip


def _evaluate(kv, analogies_path, similarity_paths, restrict_vocab, method, neighbours) -> dict:
    metrics = {"vectors/vocab_size": kv.vocab_size, "vectors/dim": kv.dim}
    if analogies_path is not None:
        result = analogy.analogy_accuracy(
            kv.words,
            kv.vectors,
            _read(analogy.read_analogies, analogies_path),
            restrict_vocab=restrict_vocab or None,
            method=method,
        )
        metrics["analogy/method"] = result.method
        metrics["analogy/restrict_vocab"] = result.restrict_vocab
        metrics["analogy/candidates"] = result.candidates
        for group in ("total", "semantic", "syntactic"):
            metrics[f"analogy/{group}"] = _number(getattr(result, group).accuracy)
        metrics["analogy/coverage"] = _number(result.total.coverage)
        for group in ("total", "semantic", "syntactic"):
            _add_score(metrics, f"analogy/{group}", getattr(result, group))
        for name, score in result.sections:
            metrics[f"analogy/section/{name}"] = _number(score.accuracy)
            _add_score(metrics, f"analogy/section/{name}", score)
    stems = [pathlib.Path(p).stem for p in similarity_paths]
    if len(set(stems)) != len(stems):
        raise errors.ConfigError(
            f"similarity files must have distinct names, got {list(similarity_paths)}"
        )
    for stem, path in zip(stems, similarity_paths, strict=True):
        result = similarity.similarity_spearman(
            kv.words, kv.vectors, _read(similarity.read_word_pairs, path)
        )
        prefix = f"similarity/{stem}"
        metrics[f"{prefix}/spearman"] = _number(result.spearman)
        metrics[f"{prefix}/pearson"] = _number(result.pearson)
        metrics[f"{prefix}/pairs"] = result.pairs
        metrics[f"{prefix}/used"] = result.used
        metrics[f"{prefix}/oov"] = result.oov
        metrics[f"{prefix}/oov_ratio"] = _number(result.oov_ratio)
        metrics[f"{prefix}/oov_words"] = list(result.oov_words)
    for word in neighbours:
        try:
            found = similarity.nearest_neighbours(kv.words, kv.vectors, word, k=10)
        except KeyError:
            logging.warning("neighbours: %r is not in the vocabulary", word)
            found = None
        metrics[f"neighbours/{word}"] = None if found is None else [[w, c] for w, c in found]
    return metrics


def _percent(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _fixed(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def format_report(metrics: dict, title: str | None = None) -> str:
    """Renders `evaluate_vectors`'s dict as a plain-text table."""
    lines = [title] if title else []
    lines.append(f"vectors: V={metrics['vectors/vocab_size']:,} words, D={metrics['vectors/dim']}")
    if "analogy/total" in metrics:
        cap = metrics["analogy/restrict_vocab"]
        lines += [
            "",
            f"analogies: {metrics['analogy/method']} over the "
            + (f"first {cap:,} words" if cap else "whole vocabulary")
            + f" ({metrics['analogy/candidates']:,} candidates after lowercasing)",
            "accuracy = correct / answerable; coverage = answerable / questions",
            f"  {'':30} {'accuracy':>9} {'correct':>8} / {'answerable':<10} "
            f"{'coverage':>9} {'questions':>9}",
        ]
        sections = [k for k in metrics if k.startswith("analogy/section/") and k.count("/") == 2]
        rows = [(g, f"analogy/{g}") for g in ("total", "semantic", "syntactic")]
        rows += [("  " + key.removeprefix("analogy/section/"), key) for key in sections]
        for label, key in rows:
            lines.append(
                f"  {label:30} {_percent(metrics[key]):>9} {metrics[key + '/correct']:>8,} / "
                f"{metrics[key + '/answerable']:<10,} {_percent(metrics[key + '/coverage']):>9} "
                f"{metrics[key + '/questions']:>9,}"
            )
    stems = [k.split("/")[1] for k in metrics if k.startswith("similarity/") and "spearman" in k]
    if stems:
        lines += [
            "",
            f"  {'similarity':30} {'spearman':>9} {'pearson':>8} {'used':>8} / {'pairs':<6} OOV",
        ]
        for stem in stems:
            p = f"similarity/{stem}/"
            rho, r = _fixed(metrics[p + "spearman"]), _fixed(metrics[p + "pearson"])
            lines.append(
                f"  {stem:30} {rho:>9} {r:>8} {metrics[p + 'used']:>8} / {metrics[p + 'pairs']:<6} "
                f"{metrics[p + 'oov']} pairs ({_percent(metrics[p + 'oov_ratio'])})"
            )
    neighbours = [k for k in metrics if k.startswith("neighbours/")]
    if neighbours:
        lines += ["", "nearest neighbours (cosine)"]
    for key in neighbours:
        found = metrics[key]
        text = ", ".join(f"{w} {c:.3f}" for w, c in found) if found else "(not in vocabulary)"
        lines.append(f"  {key.removeprefix('neighbours/')}: {text}")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise errors.ConfigError(f"unexpected arguments {argv[1:]}")
    if not (FLAGS.analogies or FLAGS.similarity or FLAGS.neighbours):
        raise errors.ConfigError("nothing to do: pass --analogies, --similarity or --neighbours")
    for path in [FLAGS.vectors, FLAGS.analogies, *FLAGS.similarity]:
        if path is not None and not os.path.isfile(path):
            what = "a folder, not a file" if os.path.isdir(path) else "no such file"
            raise errors.EvaluationFileError(f"{path}: {what}")
    if FLAGS.output_json and not os.path.isdir(os.path.dirname(FLAGS.output_json) or "."):
        raise errors.ConfigError(f"--output_json={FLAGS.output_json}: its directory does not exist")
    binary = {"auto": None, "text": False, "binary": True}[FLAGS.format]
    kv = keyed_vectors.load_word2vec(FLAGS.vectors, binary=binary, limit=FLAGS.limit)
    check_vectors(kv, FLAGS.vectors)
    metrics = evaluate_vectors(
        kv,
        analogies_path=FLAGS.analogies,
        similarity_paths=FLAGS.similarity,
        restrict_vocab=FLAGS.restrict_vocab or None,
        method=FLAGS.method,
        neighbours=FLAGS.neighbours,
    )
    print(format_report(metrics, title=f"vectors file: {FLAGS.vectors}"))
    if FLAGS.output_json:
        files.write_json(FLAGS.output_json, metrics, indent=2, allow_nan=False)
        print(f"\nwrote the metrics to {FLAGS.output_json}")


if __name__ == "__main__":
    _define_flags()
    cli.run(main, prefix="evaluate: error")  # one line for mistakes, bare log lines
