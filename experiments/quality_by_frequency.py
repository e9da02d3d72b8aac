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

import itertools
import json
import math
import os
import pathlib
import shutil
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
    # More, smaller steps (a frequent row gets 2x / 4x the normalised updates an epoch;
    # the same rows per jitted call as the default).
    "batch512": ["batch_size=512", "steps_per_call=2"],
    "batch256": ["batch_size=256", "steps_per_call=4"],
    # The batch study's fastest recipe: summed SGD with a row's n duplicates scaled by
    # n^-0.5 (a frequent row's step grows with its count, as word2vec's n SGD updates do,
    # where AdaGrad's shrinks), alpha 0.1 at 1,024 rows.
    "sgd_dup05": ["optimizer.name=sgd", "optimizer.duplicate_power=0.5", "optimizer.alpha=0.1"],
    # No linear decay: AdaGrad's own 1/sqrt(sum g^2) only (the run ends at a higher rate).
    "const_alpha": ["optimizer.min_alpha=0.3"],
}

# Recipes that run the default with some of its random streams taken from seed 0 whatever
# the seed (patched in the training process: the trainer has one seed for all of them), so
# seed 1 against seed 0 shows how much churn the remaining streams cause. Streams: "init"
# (the input vectors' uniform start), "data" (device-mode subsampling, epoch offset and
# window spans: `on_device.data_key`), "negatives" (the step key the negatives are drawn
# from). A seed-0 run of these is the default's seed-0 run, so it is not trained again.
FIXED_STREAMS = {
    "fix_init": ("init",),
    "fix_data": ("data",),
    "fix_init_data": ("init", "data"),
}
RECIPES.update({name: [] for name in FIXED_STREAMS})

_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where vectors, summary and table go.")
_RECIPES = flags.DEFINE_list("recipes", list(RECIPES), f"Recipes: {list(RECIPES)}.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1"], "Seeds (two or more for neighbour overlap).")
_CORPUS = flags.DEFINE_string("corpus", "text8-head", "Corpus (benchmark.py --corpus).")
_EPOCHS = flags.DEFINE_integer("epochs", 5, "Epochs.", lower_bound=1)
_GENSIM = flags.DEFINE_bool("gensim", True, "Train gensim beside the default recipe.")
_VECTORS_DIR = flags.DEFINE_string("vectors_dir", None, "Trained vectors (default DIR/vectors).")
_COLLECT_ONLY = flags.DEFINE_bool(
    "collect_only", False, "Train nothing: measure every seed of each recipe in --vectors_dir."
)

BENCHMARK = pathlib.Path(__file__).with_name("benchmark.py")


# Run in the training process before benchmark.py (`python -c`): takes the streams named
# in argv[1] from seed 0, then runs benchmark.py with argv[2:].
_PATCH_STREAMS = """
import runpy, sys
import jax
from w2v_jax.data import on_device
from w2v_jax.model import word2vec
from w2v_jax.step import update
fixed, sys.argv = sys.argv[1].split(","), sys.argv[2:]
init_key, step_key = jax.random.split(jax.random.PRNGKey(0))  # update.init_state's split
if "init" in fixed:
    init_params = word2vec.init_params
    word2vec.init_params = lambda key, *a, **k: init_params(init_key, *a, **k)
if "data" in fixed:
    data_key = on_device.data_key
    on_device.data_key = lambda seed: data_key(0)
if "negatives" in fixed:
    init_state = update.init_state
    update.init_state = lambda *a, **k: init_state(*a, **k)._replace(key=step_key)
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def train(vectors_dir: pathlib.Path, recipe: str, seed: int) -> dict[str, pathlib.Path]:
    """{side: vectors path} of one benchmark run (ours, and gensim beside the default).

    Each run's benchmark JSON (speed included) goes beside its vectors as ``.json``."""
    if recipe in FIXED_STREAMS and seed == 0:  # the default's run: streams of seed 0
        path = vectors_dir / f"default_s{seed}.bin"
        return {recipe: path if path.is_file() else train(vectors_dir, "default", 0)["default"]}
    with_gensim = recipe == "default" and _GENSIM.value
    paths = {recipe: vectors_dir / f"{recipe}_s{seed}.bin"}
    if with_gensim:
        paths["gensim"] = vectors_dir / f"gensim_s{seed}.bin"
    if all(p.is_file() for p in paths.values()):
        return paths
    keep = vectors_dir / f"tmp_{recipe}_s{seed}"
    cmd = [
        str(BENCHMARK),
        f"--corpus={_CORPUS.value}",
        f"--epochs={_EPOCHS.value}",
        f"--seed={seed}",
        "--repeats=1",
        f"--keep_vectors={keep}",
        f"--output_json={keep}.json",
        f"--ours_overrides={','.join(RECIPES[recipe])}",
    ]
    if recipe in FIXED_STREAMS:  # ours only: --run_one trains in the patched process
        keep.mkdir(parents=True, exist_ok=True)
        data_dir = os.environ.get("W2V_DATA_DIR", "")
        cmd = [*cmd[:-3], f"--data_dir={data_dir}", "--run_one=ours", f"--run_dir={keep}"]
        cmd = [sys.executable, "-c", _PATCH_STREAMS, ",".join(FIXED_STREAMS[recipe]), *cmd]
    else:
        cmd = [sys.executable, *cmd, *([] if with_gensim else ["--skip_gensim"])]
    env = dict(os.environ)
    if recipe in FIXED_STREAMS:
        env.pop("W2V_DATA_DIR")  # as benchmark.py's own child: no evaluation at the end
    print(f"[quality_by_frequency] {recipe} seed {seed}", file=sys.stderr, flush=True)
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True, env=env)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if recipe in FIXED_STREAMS:
        os.replace(keep / "vectors.bin", paths[recipe])
        shutil.rmtree(keep)
    else:
        os.replace(keep / "ours_0.bin", paths[recipe])
        if with_gensim:
            os.replace(keep / "gensim_0.bin", paths["gensim"])
        keep.rmdir()
        pathlib.Path(f"{keep}.json").unlink()
    for path in paths.values():  # gensim's side: its gensim_* fields
        path.with_suffix(".json").write_text(json.dumps(result) + "\n")
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
    # every pair of seeds (one pair with two seeds); per band, the mean over pairs
    pair_overlaps = [
        [
            band.value
            for band in by_frequency.neighbour_overlap(a.words, a.vectors, b.words, b.vectors)
        ]
        for a, b in itertools.combinations(loaded, 2)
    ]
    overlap = [statistics.mean(col) for col in zip(*pair_overlaps, strict=True)] or None
    noise = None
    if len(loaded) >= 2:
        a, b = loaded[:2]
        noise = [
            c._asdict()
            for c in by_frequency.neighbour_noise(a.words, a.vectors, b.words, b.vectors)
        ]
    labels = by_frequency.band_labels()
    runs = [json.loads(p.with_suffix(".json").read_text()) for p in vector_paths]
    speed = "gensim_words_per_s" if label == "gensim" else "words_per_s"
    return {
        "recipe": label,
        "overrides": RECIPES.get(label, []),
        "fixed_streams": list(FIXED_STREAMS.get(label, ())),
        "vectors": [p.name for p in vector_paths],
        "seeds": len(loaded),
        # busy machine: one training at a time, at nice 19 beside others' work
        "words_per_s": statistics.mean(r[speed] for r in runs if r.get(speed)),
        "analogy": statistics.mean(t[0] for t in totals),
        "ws353": statistics.mean(t[1] for t in totals),
        "bands": [
            {
                "band": labels[i],
                "analogy": statistics.mean(r[i].value for r in analogy_bands),
                "questions": analogy_bands[0][i].count,
                "ws353": _mean_or_nan([r[i].value for r in ws_bands]),
                "pairs": ws_bands[0][i].count,
                "neighbour_overlap": None if overlap is None else overlap[i],
                "overlap_per_pair": [o[i] for o in pair_overlaps],
                "churn_seeds_0_1": None if noise is None else noise[i],
            }
            for i in range(len(labels))
        ],
    }


def _churn_cell(band: dict) -> str:
    c = band.get("churn_seeds_0_1")
    return "—" if c is None else f"{c['noise']:.3f} / {c['gap']:.3f}"


def _seed_of(path: pathlib.Path) -> int:
    return int(path.stem.rsplit("_s", 1)[1])


def _mean_or_nan(values):
    values = [v for v in values if not math.isnan(v)]
    return statistics.mean(values) if values else math.nan


def table(rows: list[dict]) -> str:
    lines = [
        "| recipe | band (ranks) | analogy | questions | WS353 ρ | pairs "
        "| top-10 overlap between seeds | cosine noise / gap | words/s (busy) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['recipe']} ({row['seeds']} seeds) | all | {100 * row['analogy']:.1f}% | "
            f"| {row['ws353']:.3f} | | | | {row['words_per_s'] / 1e3:.0f}k |"
        )
        for band in row["bands"]:
            overlap = band["neighbour_overlap"]
            lines.append(
                f"| | {band['band']} | {100 * band['analogy']:.1f}% | {band['questions']:,} "
                f"| {band['ws353']:.3f} | {band['pairs']} "
                f"| {'—' if overlap is None else f'{overlap:.3f}'} | {_churn_cell(band)} | |"
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
        if _COLLECT_ONLY.value:
            sides = [recipe] + (["gensim"] if recipe == "default" and _GENSIM.value else [])
            for side in sides:
                found = sorted(vectors_dir.glob(f"{side}_s*.bin"), key=_seed_of)
                if recipe in FIXED_STREAMS:  # seed 0 is the default's run
                    found = [vectors_dir / "default_s0.bin", *found]
                if found:
                    runs[side] = found
            continue
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
