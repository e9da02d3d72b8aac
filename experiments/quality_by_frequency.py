r"""Quality by word frequency: does the large-batch default hurt rare words?

  W2V_DATA_DIR=../shared/data python experiments/quality_by_frequency.py \
      --out_dir=experiments/results/quality_by_frequency

The issue-13 caveat (`../shared/notes/large-batch.md` §7): AdaGrad raised relatedness
while lowering pure and rare-word similarity in earlier probes. No rare-word benchmark is
in shared/data, so this measures what the files we have allow, by frequency band of the
vocabulary (`evaluation.by_frequency`: ranks 0–1k, 1k–5k, 5k–30k):

* analogy accuracy (3CosAdd, 30k cap) of the questions whose rarest word is in the band;
* WordSim-353 Spearman ρ of the pairs whose rarer word is in the band;
* neighbour stability: the overlap of a probe word's 10 nearest neighbours between two
  seeds of the same recipe (200 probes per band): a rare word whose neighbourhood is
  noise changes it from seed to seed.

Besides the default and word2vec's SGD, recipes that test why the default's neighbour lists
are less stable across seeds than gensim's (issue 23 item 4; docs/performance.md, "Why the
default's neighbour lists are less stable"); ``--epochs=1`` screens them cheaply, gensim
trained for as many epochs.

Each recipe is trained by `experiments/benchmark.py` (one process per run, ``--repeats=1``,
``--keep_vectors``) for each seed; gensim's vectors come from the default recipe's runs.
A run whose vectors exist in ``--vectors_dir`` (default ``DIR/vectors``; 9 MB per run,
keep it out of git) is not trained again. Writes ``DIR/summary.json`` and ``DIR/table.md``.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import statistics
import subprocess
import sys

from absl import app, flags

from w2v_jax import cli
from w2v_jax.configs import word2vec
from w2v_jax.evaluation import analogy, by_frequency, keyed_vectors, similarity

# Recipes: overrides of our config (benchmark.py --ours_overrides). "word2vec_sgd32" is
# configs/word2vec.py's original estimator (32-row SGD steps, per-pair negatives).
RECIPES = {
    "default": [],
    "word2vec_sgd32": word2vec.overrides(),
    # Issue 23 item 4 (why the default's neighbour lists are less stable than gensim's):
    # one accumulator per row instead of per coordinate; frequent rows' late steps larger
    # (accumulators from 10 at alpha 1.0: a rare row's first steps as the default's);
    # word2vec's independent negatives per pair instead of one set per row.
    "rowwise": ["optimizer.name=rowwise_adagrad"],
    "acc10_alpha1": ["optimizer.initial_accumulator=10.0", "optimizer.alpha=1.0"],
    "share_pair": ["loss.share=pair"],
}

_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where vectors, summary and table go.")
_RECIPES = flags.DEFINE_list("recipes", list(RECIPES), f"Recipes: {list(RECIPES)}.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1"], "Seeds (two or more for neighbour overlap).")
_CORPUS = flags.DEFINE_string("corpus", "text8-head", "Corpus (benchmark.py --corpus).")
_EPOCHS = flags.DEFINE_integer("epochs", 5, "Epochs.", lower_bound=1)
_GENSIM = flags.DEFINE_bool("gensim", True, "Train gensim beside the default recipe.")
_VECTORS_DIR = flags.DEFINE_string("vectors_dir", None, "Trained vectors (default DIR/vectors).")

BENCHMARK = pathlib.Path(__file__).with_name("benchmark.py")


def train(vectors_dir: pathlib.Path, recipe: str, seed: int) -> dict[str, pathlib.Path]:
    """{side: vectors path} of one benchmark run (ours, and gensim beside the default)."""
    with_gensim = recipe == "default" and _GENSIM.value
    paths = {recipe: vectors_dir / f"{recipe}_s{seed}.bin"}
    if with_gensim:
        paths["gensim"] = vectors_dir / f"gensim_s{seed}.bin"
    if all(p.is_file() for p in paths.values()):
        return paths
    keep = vectors_dir / f"tmp_{recipe}_s{seed}"
    cmd = [
        sys.executable,
        str(BENCHMARK),
        f"--corpus={_CORPUS.value}",
        f"--epochs={_EPOCHS.value}",
        f"--seed={seed}",
        "--repeats=1",
        f"--keep_vectors={keep}",
        f"--ours_overrides={','.join(RECIPES[recipe])}",
    ]
    if not with_gensim:
        cmd.append("--skip_gensim")
    print(f"[quality_by_frequency] {recipe} seed {seed}", file=sys.stderr, flush=True)
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
    os.replace(keep / "ours_0.bin", paths[recipe])
    if with_gensim:
        os.replace(keep / "gensim_0.bin", paths["gensim"])
    keep.rmdir()
    return paths


def measure(label: str, vector_paths: list[pathlib.Path], questions, pairs) -> dict:
    """Per band: analogy and WS353 (mean over seeds) and seed-to-seed neighbour overlap."""
    loaded = [keyed_vectors.load_word2vec(p) for p in vector_paths]
    analogy_bands, ws_bands, totals = [], [], []
    for kv in loaded:
        outcomes = analogy.question_outcomes(kv.words, kv.vectors, questions)
        analogy_bands.append(by_frequency.analogy_by_band(outcomes))
        ws_bands.append(by_frequency.similarity_by_band(kv.words, kv.vectors, pairs))
        totals.append(
            (
                float(outcomes.correct.sum() / max(outcomes.answerable.sum(), 1)),
                similarity.similarity_spearman(kv.words, kv.vectors, pairs).spearman,
            )
        )
    overlap = None
    if len(loaded) >= 2:
        a, b = loaded[0], loaded[1]
        overlap = by_frequency.neighbour_overlap(a.words, a.vectors, b.words, b.vectors)
    labels = by_frequency.band_labels()
    return {
        "recipe": label,
        "seeds": len(loaded),
        "analogy": statistics.mean(t[0] for t in totals),
        "ws353": statistics.mean(t[1] for t in totals),
        "bands": [
            {
                "band": labels[i],
                "analogy": statistics.mean(r[i].value for r in analogy_bands),
                "questions": analogy_bands[0][i].count,
                "ws353": _mean_or_nan([r[i].value for r in ws_bands]),
                "pairs": ws_bands[0][i].count,
                "neighbour_overlap": None if overlap is None else overlap[i].value,
            }
            for i in range(len(labels))
        ],
    }


def _mean_or_nan(values):
    values = [v for v in values if not math.isnan(v)]
    return statistics.mean(values) if values else math.nan


def table(rows: list[dict]) -> str:
    lines = [
        "| recipe | band (ranks) | analogy | questions | WS353 ρ | pairs "
        "| top-10 overlap, seed 0 vs 1 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['recipe']} | all | {100 * row['analogy']:.1f}% | | {row['ws353']:.3f} | | |"
        )
        for band in row["bands"]:
            overlap = band["neighbour_overlap"]
            lines.append(
                f"| | {band['band']} | {100 * band['analogy']:.1f}% | {band['questions']:,} "
                f"| {band['ws353']:.3f} | {band['pairs']} "
                f"| {'—' if overlap is None else f'{overlap:.3f}'} |"
            )
    return "\n".join(lines) + "\n"


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if not _OUT_DIR.value:
        raise app.UsageError("--out_dir is required (where vectors, summary and table go)")
    for recipe in _RECIPES.value:
        if recipe not in RECIPES:
            raise app.UsageError(f"--recipes: unknown {recipe!r}; use {list(RECIPES)}")
    data = pathlib.Path(os.environ.get("W2V_DATA_DIR", ""))
    if not (data / "questions-words.txt").is_file() or not (data / "wordsim353.tsv").is_file():
        raise app.UsageError(
            f"W2V_DATA_DIR={str(data)!r} lacks questions-words.txt or wordsim353.tsv; "
            "point it at shared/data"
        )
    out = pathlib.Path(_OUT_DIR.value)
    out.mkdir(parents=True, exist_ok=True)
    vectors_dir = pathlib.Path(_VECTORS_DIR.value or out / "vectors")
    vectors_dir.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in _SEEDS.value]
    runs: dict[str, list[pathlib.Path]] = {}
    for recipe in _RECIPES.value:
        for seed in seeds:
            for side, path in train(vectors_dir, recipe, seed).items():
                runs.setdefault(side, []).append(path)
    questions = analogy.read_analogies(data / "questions-words.txt")
    pairs = similarity.read_word_pairs(data / "wordsim353.tsv")
    rows = [measure(label, paths, questions, pairs) for label, paths in runs.items()]
    (out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "table.md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    cli.run(main)  # one-line errors, tracebacks with --verbose
