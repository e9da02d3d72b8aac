"""The table of docs/training.md, "Which vectors a run exports": input, output or both.

For two finished runs of one recipe that differ only in their seed (``--runs=A,B``),
scores each kind of word vector the run holds: the input vectors (``in_embed``, word2vec's
and gensim's export), the output vectors (``out_embed``) and their sum (``config.vectors
= "input+output"``, the default): analogy accuracy and WordSim-353 ρ of run A, the
top-10 neighbour overlap between A and B per frequency band (`by_frequency`, as
``experiments/quality_by_frequency.py``) and why the lists churn: the two seeds'
disagreement on a word's nearest cosines against their spacing
(`by_frequency.neighbour_noise`). With ``--gensim=skipgram|cbow`` it trains
gensim 4 twice instead (seeds 0 and 1, ``experiments/benchmark.py``'s settings for
text8-head, 5 epochs) and scores its input vectors and their sum with ``syn1neg``.

  for s in 0 1; do python -m w2v_jax.main --config=w2v_jax/configs/text8_head.py \\
      --workdir=runs/vectors_s$s --config.epochs=5 --config.seed=$s; done
  python experiments/which_vectors.py --runs=runs/vectors_s0,runs/vectors_s1
  python experiments/which_vectors.py --gensim=skipgram

Needs ``W2V_DATA_DIR`` (questions-words.txt, wordsim353.tsv; text8-head for gensim).
"""

from __future__ import annotations

import os
import pathlib

import benchmark  # experiments/benchmark.py: its corpus and gensim's settings
import numpy as np
from absl import app, flags

import w2v_jax
from w2v_jax.evaluation import analogy, by_frequency, similarity

_RUNS = flags.DEFINE_list("runs", [], "Two finished run folders of one recipe, two seeds.")
_GENSIM = flags.DEFINE_enum("gensim", "", ["", "skipgram", "cbow"], "Train gensim instead.")
_OUT = flags.DEFINE_string("out", "", "Also write the table (markdown) to this file.")


def ours(runs: list[str]) -> list[tuple[str, dict]]:
    """[(kind, {seed: (words, [V, D] vectors)})] of two run folders."""
    loaded = [w2v_jax.load(run) for run in runs]
    kinds = {
        "input": lambda m: np.asarray(m.inputs.embedding[...]),
        "output": lambda m: np.asarray(m.output.embedding[...]),
        "input+output": lambda m: np.asarray(m.inputs.embedding[...] + m.output.embedding[...]),
    }
    return [(k, {s: (m.vocab, f(m)) for s, m in enumerate(loaded)}) for k, f in kinds.items()]


def gensim(model: str) -> list[tuple[str, dict]]:
    """The same for gensim's input vectors and their sum with its output vectors."""
    from gensim.models import word2vec

    flags.FLAGS.model = model
    sentences = benchmark.gensim_sentences(benchmark.load_train_corpus())
    out = {"input": {}, "input+output": {}}
    for seed in (0, 1):
        m = word2vec.Word2Vec(
            sentences, vector_size=100, alpha=benchmark.alpha(), min_alpha=1e-4, window=5,
            min_count=5, sample=1e-3, seed=seed, workers=3, sg=int(model == "skipgram"),
            hs=0, negative=5, ns_exponent=0.75, cbow_mean=1, epochs=5,
        )  # fmt: skip
        words = list(m.wv.index_to_key)
        out["input"][seed] = (words, m.wv.vectors)
        out["input+output"][seed] = (words, m.wv.vectors + m.syn1neg)
    return list(out.items())


def table(kinds: list[tuple[str, dict]]) -> str:
    data = pathlib.Path(os.environ["W2V_DATA_DIR"])
    questions = analogy.read_analogies(data / "questions-words.txt")
    pairs = similarity.read_word_pairs(data / "wordsim353.tsv")
    bands = by_frequency.band_labels()
    lines = [
        f"| vectors | analogy | WS353 ρ | top-10 overlap {' / '.join(bands)} "
        f"| cosine noise / gap {' · '.join(bands)} | pair correlation |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, seeds in kinds:
        (words, a), (words_b, b) = seeds[0], seeds[1]
        acc = analogy.analogy_accuracy(words, a, questions).total.accuracy
        rho = similarity.similarity_spearman(words, a, pairs).spearman
        overlap = by_frequency.neighbour_overlap(words, a, words_b, b)
        bands_text = " / ".join(f"{score[1]:.3f}" for score in overlap)
        churn = by_frequency.neighbour_noise(words, a, words_b, b)
        churn_text = " · ".join(f"{c.noise:.3f}/{c.gap:.3f}" for c in churn)
        lines.append(
            f"| {kind} | {acc:.2%} | {rho:.3f} | {bands_text} | {churn_text} "
            f"| {churn[0].pair_corr:.2f} |"
        )
    return "\n".join(lines)


def main(argv) -> None:
    del argv
    if bool(_GENSIM.value) == bool(_RUNS.value):
        raise app.UsageError("pass --runs=A,B (two seeds of one recipe) or --gensim=MODEL")
    if _RUNS.value and len(_RUNS.value) != 2:
        raise app.UsageError(f"--runs needs two folders, got {len(_RUNS.value)}")
    text = table(gensim(_GENSIM.value) if _GENSIM.value else ours(_RUNS.value))
    print(text)
    if _OUT.value:
        pathlib.Path(_OUT.value).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(_OUT.value).write_text(text + "\n")


if __name__ == "__main__":
    app.run(main)
