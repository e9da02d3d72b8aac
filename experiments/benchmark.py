r"""Our trainer against gensim on one corpus with one set of settings (issue 7, targets 1, 4, 5).

  W2V_DATA_DIR=../shared/data python experiments/benchmark.py                     # skip-gram
  W2V_DATA_DIR=../shared/data python experiments/benchmark.py --model=cbow
  W2V_DATA_DIR=../shared/data python experiments/benchmark.py \
      --ours_overrides=loss.share=row,batch_size=1024 --output_json=/tmp/bench.json

Every run is its own process: the script re-invokes itself with ``--run_one=ours`` or
``--run_one=gensim``, which trains once, writes its input vectors and prints one JSON
line. Runs alternate (ours, gensim, then gensim, ours, ...) ``--repeats`` times, so peak
RSS (the child's own high-water mark, `peak_rss_bytes`) and timings of one side never
include the other's.
After the last run the parent evaluates every run's vectors with *our* evaluator
(`evaluate.evaluate_vectors`: analogies 3CosAdd over the first 30,000 words, WordSim-353
Spearman), so evaluation never overlaps a timed run.

What is timed (vocabulary building and evaluation excluded on both sides):
  * ours: ``train/loop_wall_s`` of `trainer.train_and_evaluate`, the whole training loop
    including the first step's JAX compilation; words/s = ``train/tokens`` / that. The
    trainer's ``train/words_per_s`` (from the end of the first step) is reported too.
  * gensim: ``model.train(...)`` alone, after ``build_vocab``; words/s = corpus tokens x
    epochs / its wall, which is gensim's "raw words" (``train``'s ``raw_word_count``,
    reported as ``raw_words``; a mismatch is warned about).

What gensim is fed: the SAME sentences as ours, decoded from our corpus reader
(`corpus.load_corpus`, the train split: out-of-vocabulary tokens removed, text8's single
line cut into 10,000-token sentences), as an in-memory list of token lists
(``--gensim_input=sentences``, the default), or written one sentence per line to a
temporary file for gensim's ``corpus_file`` mode (``--gensim_input=corpus_file``; its
workers read approximate byte ranges, so the words it trains on only roughly match). Every
token fed has count >= min_count, so gensim's ``build_vocab`` with the same min_count
keeps exactly our vocabulary; the sizes are printed and checked.

Settings on both sides: skip-gram (``sg=1``) or CBOW (``sg=0, cbow_mean=1``), negative
sampling (``--negative``, ``ns_exponent`` 0.75, ``hs=0``), ``--window`` (word2vec's random
effective window), ``--dim``, ``--sample``, ``--min_count``, ``--epochs``, ``--seed``.
Ours trains with the project's default config otherwise (its optimiser, learning rate,
batch size, negative sharing and input mode: configs/default.py); gensim with its own
alpha 0.025 (CBOW 0.05) decayed linearly to 1e-4 and ``--gensim_workers`` threads, ours
with all of JAX's. ``--ours_overrides`` changes our config only (e.g.
``--ours_overrides=optimizer.name=sgd,...``; configs/word2vec.py lists word2vec's own).

Ours-only measurements: the device-idle upper bound ``train/input_wait_s`` /
``train/loop_wall_s`` (target < 10%) and peak RSS against the bytes of the parameter
tables + optimiser state + token ids (int32 [N]) (target < 1.5x); the RSS of the JAX
runtime alone (after start-up and one tiny jit, before any data) is reported beside it.
The trainer's own end-of-run evaluation is switched off in the child (no held-out split,
no evaluation files visible) so the peak RSS is training's.

Time to quality (``--time_to_quality``, issue 23): for each of ``--models``, gensim trains
once for ``--epochs`` (or ``--target_analogy`` / ``--target_wall_s`` stand in for it), then
ours once per rung of ``--ours_epochs``, each run planned for that many epochs (its
learning rate decays to the end of that run; 2.5 ends the third pass half way), until ours
reaches gensim's analogy accuracy (`climb`); ``ratio`` = gensim's wall / that run's wall
(> 1: ours is sooner).
The last stdout line is then one JSON object of the rows; ``--out_dir`` gets
``CORPUS.json`` and ``CORPUS.md`` (the table). docs/performance.md, "Time to quality".

Prints a table; the last stdout line is one JSON object (also written to
``--output_json``): ``words_per_s``, ``gensim_words_per_s``, ``ratio``, ``analogy``,
``gensim_analogy``, ``ws353``, ``gensim_ws353`` (medians over repeats), their ``*_min`` /
``*_max``, RSS, idle fraction, vocabulary sizes, settings, date, machine and every run.
Without gensim (an optional dependency, not in requirements.txt) only our side runs and
every ``gensim_*`` value and ``ratio`` are null.
"""

import datetime
import functools
import json
import os
import pathlib
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

from w2v_jax import cli, errors
from w2v_jax.data import corpus
from w2v_jax.evaluation import keyed_vectors

_MODEL = flags.DEFINE_enum("model", "skipgram", ["skipgram", "cbow"], "sg=1 or sg=0.")
_EPOCHS = flags.DEFINE_float(
    "epochs",
    5,
    "Epochs (both sides; ours may take a fraction, gensim a whole number).",
    lower_bound=0,
)
_REPEATS = flags.DEFINE_integer("repeats", 3, "Runs per side; medians reported.", lower_bound=1)
_CORPUS = flags.DEFINE_string("corpus", "text8-head", "Corpus name or path (corpus.load_corpus).")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", os.environ.get("W2V_DATA_DIR"), "Corpora and evaluation files (W2V_DATA_DIR)."
)
_DIM = flags.DEFINE_integer("dim", 100, "vector_size.", lower_bound=1)
_WINDOW = flags.DEFINE_integer("window", 5, "window.", lower_bound=1)
_NEGATIVE = flags.DEFINE_integer("negative", 5, "negative (samples per example).", lower_bound=1)
_SAMPLE = flags.DEFINE_float("sample", 1e-3, "sample (subsampling threshold).")
_MIN_COUNT = flags.DEFINE_integer("min_count", 5, "min_count.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed (both sides).")
_OURS_OVERRIDES = flags.DEFINE_list(
    "ours_overrides", [], "Our config only: key=value,... e.g. loss.share=row,batch_size=1024."
)
_SKIP_GENSIM = flags.DEFINE_bool("skip_gensim", False, "Run our side only.")
_GENSIM_WORKERS = flags.DEFINE_integer("gensim_workers", 2, "gensim worker threads.")
_GENSIM_INPUT = flags.DEFINE_enum(
    "gensim_input", "sentences", ["sentences", "corpus_file"], "How gensim gets our sentences."
)
_RESTRICT_VOCAB = flags.DEFINE_integer("restrict_vocab", 30_000, "Analogy vocabulary cap.")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Also write the JSON object here.")
_RUN_ONE = flags.DEFINE_enum(
    "run_one", None, ["ours", "gensim"], "Internal: train one side once, print one JSON line."
)
_RUN_DIR = flags.DEFINE_string("run_dir", None, "Internal: the child's output directory.")
_KEEP_VECTORS = flags.DEFINE_string(
    "keep_vectors", None, "Copy each run's vectors here as SIDE_REPEAT.bin (word2vec binary)."
)
_TIME_TO_QUALITY = flags.DEFINE_bool(
    "time_to_quality",
    False,
    "Instead of one comparison: gensim for --epochs, then ours for each of --ours_epochs "
    "until ours reaches gensim's analogy accuracy, for each of --models (module docstring).",
)
_OURS_EPOCHS = flags.DEFINE_list(
    "ours_epochs",
    ["1", "1.5", "2", "2.5", "3", "4", "5"],
    "--time_to_quality: our epoch ladder (fractions end the last pass part way).",
)
_MODELS = flags.DEFINE_list("models", ["skipgram", "cbow"], "--time_to_quality: models.")
_TARGET_ANALOGY = flags.DEFINE_float(
    "target_analogy",
    None,
    "--time_to_quality: gensim's analogy accuracy given instead of measured (with "
    "--target_wall_s; gensim is then not run). For tests and reruns of our side.",
)
_TARGET_WALL_S = flags.DEFINE_float("target_wall_s", None, "See --target_analogy.")
_OUT_DIR = flags.DEFINE_string(
    "out_dir", None, "--time_to_quality: write CORPUS.json and CORPUS.md here."
)

ANALOGIES, WORDSIM = "questions-words.txt", "wordsim353.tsv"
MB = 1 << 20


def peak_rss_bytes() -> int:
    """This process's peak resident set size.

    Linux: VmHWM of /proc/self/status. ``ru_maxrss`` is not used there because it
    survives exec: a child started by ``subprocess`` (vfork + exec) reports at least its
    parent's peak. Elsewhere ``ru_maxrss`` (bytes on macOS, KiB otherwise).
    """
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def alpha() -> float:
    return 0.05 if _MODEL.value == "cbow" else 0.025


def load_train_corpus() -> corpus.Corpus:
    """The corpus our trainer reads (`data.load`'s train split, same cache entry)."""
    return corpus.load_corpus(_CORPUS.value, data_dir=_DATA_DIR.value, min_count=_MIN_COUNT.value)


# ------------------------------------------------------------------------ the two sides


def parse_value(text: str, old):
    """``text`` as the type of the field it replaces."""
    if isinstance(old, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise errors.ConfigError(f"expected true or false, got {text!r}")
        return text.lower() in ("true", "1")
    return type(old)(text) if isinstance(old, (int, float)) else text


def apply_overrides(config, overrides) -> None:
    """Sets ``key=value`` items (dotted keys) on a locked ConfigDict; a typo raises."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise app.UsageError(f"--ours_overrides: expected key=value, got {item!r}")
        *path, field = key.strip().split(".")
        node = functools.reduce(getattr, path, config)
        setattr(node, field, parse_value(text.strip(), getattr(node, field)))


def leaves_bytes(leaves) -> int:
    """Bytes of arrays or shape structs."""
    return sum(x.size * x.dtype.itemsize for x in leaves)


def run_ours(run_dir: pathlib.Path) -> dict:
    """Trains with `trainer.train_and_evaluate` once; vectors go to run_dir/vectors.bin."""
    # Imported here, not at the top: the gensim child must not load JAX (its RSS).
    import jax

    from w2v_jax import settings, trainer
    from w2v_jax.configs import text8_head
    from w2v_jax.step import update

    jax.jit(lambda x: x + 1)(np.zeros(4, np.float32)).block_until_ready()
    runtime_rss = peak_rss_bytes()
    config = text8_head.get_config()
    config.corpus.name = _CORPUS.value
    config.corpus.data_dir = _DATA_DIR.value or ""
    config.corpus.min_count = _MIN_COUNT.value
    config.corpus.heldout = ""  # no held-out loss at the end: training's RSS only
    config.model = _MODEL.value
    config.dim = _DIM.value
    config.window = _WINDOW.value
    config.sample = _SAMPLE.value
    config.loss.name = "neg"
    config.loss.k = _NEGATIVE.value
    config.epochs = _EPOCHS.value
    config.seed = _SEED.value
    config.eval_every = 0
    config.checkpoint_every = 10**9  # only the final checkpoint, after the timed loop
    config.export = True
    apply_overrides(config, _OURS_OVERRIDES.value)
    final = trainer.train_and_evaluate(config, str(run_dir))
    peak = peak_rss_bytes()

    data = load_train_corpus()
    vocab_size, tokens = len(data.vocab), int(data.ids.shape[0])
    cfg = settings.step_config(config)
    shapes = jax.eval_shape(
        lambda: update.init_state(
            jax.random.PRNGKey(0), vocab_size, config.dim, cfg, config.loss.use_bias
        )
    )
    wall, words = final["train/loop_wall_s"], int(final["train/tokens"])
    return {
        "side": "ours",
        "wall_s": wall,
        "words": words,
        "words_per_s": words / wall,
        "words_per_s_excl_first_step": final["train/words_per_s"],
        "input_wait_s": final["train/input_wait_s"],
        "idle_fraction": final["train/input_wait_s"] / wall,
        "steps": int(final["step"]),
        "peak_rss_bytes": peak,
        "runtime_rss_bytes": runtime_rss,
        "param_bytes": leaves_bytes(jax.tree.leaves(shapes.params)),
        "opt_state_bytes": leaves_bytes(jax.tree.leaves(shapes.opt_state)),
        "token_id_bytes": 4 * tokens,
        "vocab_size": vocab_size,
        "tokens": tokens,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "config": {
            key: functools.reduce(getattr, key.split("."), config)
            for key in (
                "loss.share",
                "loss.block_size",
                "batch_size",
                "layout",
                "prefetch",
                "vectors",
            )
        },
    }


def gensim_sentences(data: corpus.Corpus) -> list[list[str]]:
    """Our sentences as token lists: ids decoded through the vocabulary."""
    words = np.asarray(data.vocab.words, dtype=object)[np.asarray(data.ids)]
    bounds = np.asarray(data.offsets)
    return [words[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def run_gensim(run_dir: pathlib.Path) -> dict:
    """Trains gensim's Word2Vec once on our sentences; vectors go to run_dir/vectors.bin."""
    import gensim  # optional dependency: imported only when this side runs
    from gensim.models import word2vec, word2vec_inner

    runtime_rss = peak_rss_bytes()
    data = load_train_corpus()
    sentences = gensim_sentences(data)
    model = word2vec.Word2Vec(
        vector_size=_DIM.value,
        alpha=alpha(),
        min_alpha=1e-4,
        window=_WINDOW.value,
        min_count=_MIN_COUNT.value,
        sample=_SAMPLE.value,
        seed=_SEED.value,
        workers=_GENSIM_WORKERS.value,
        sg=int(_MODEL.value == "skipgram"),
        hs=0,
        negative=_NEGATIVE.value,
        ns_exponent=0.75,
        cbow_mean=1,
        epochs=gensim_epochs(),
    )
    if _GENSIM_INPUT.value == "corpus_file":
        path = run_dir / "sentences.txt"
        with path.open("w", encoding="utf-8") as f:
            f.writelines(" ".join(s) + "\n" for s in sentences)
        del sentences
        source = {"corpus_file": str(path)}
        model.build_vocab(**source)
        extent = {"total_words": model.corpus_total_words, "total_examples": model.corpus_count}
    else:
        source = {"corpus_iterable": sentences}
        model.build_vocab(**source)
        extent = {"total_examples": model.corpus_count}
    start = time.perf_counter()
    trained, raw = model.train(**source, **extent, epochs=model.epochs)
    wall = time.perf_counter() - start
    peak = peak_rss_bytes()
    keyed_vectors.save_word2vec_binary(
        run_dir / "vectors.bin", model.wv.index_to_key, model.wv.vectors
    )
    words = int(data.ids.shape[0]) * gensim_epochs()  # what it was given (see raw_words)
    return {
        "side": "gensim",
        "wall_s": wall,
        "words": words,
        "words_per_s": words / wall,
        # gensim's own counts: raw = words with the iterable input; with corpus_file each
        # worker reads an approximate byte range, so raw can differ (gensim issue 2693).
        "raw_words": int(raw),
        "effective_words": int(trained),
        "peak_rss_bytes": peak,
        "runtime_rss_bytes": runtime_rss,
        "vocab_size": len(model.wv.index_to_key),
        "ours_vocab_size": len(data.vocab),
        "vocab_match": set(model.wv.index_to_key) == set(data.vocab.words),
        "tokens": int(data.ids.shape[0]),
        "gensim": gensim.__version__,
        "fast_version": int(word2vec_inner.FAST_VERSION),
        "input": _GENSIM_INPUT.value,
    }


# ------------------------------------------------------------------------------ parent


def gensim_epochs() -> int:
    """--epochs for gensim, which trains whole epochs only."""
    if _EPOCHS.value != int(_EPOCHS.value) or _EPOCHS.value < 1:
        raise app.UsageError(f"--epochs={_EPOCHS.value:g}: gensim trains a whole number >= 1")
    return int(_EPOCHS.value)


def gensim_problem() -> str | None:
    """Why gensim cannot run here (absent or broken install), or None when it can."""
    try:
        import gensim.models.word2vec  # noqa: F401  (the children import it again)
    except Exception as e:  # a broken install fails with anything from ImportError up
        return f"{type(e).__name__}: {e}"
    return None


def run_child(side: str, run_dir: pathlib.Path, extra=()) -> dict:
    """One run in a fresh process; its stderr (logs) passes through, stdout is its JSON.
    ``extra``: flags that override the parent's (the later flag wins)."""
    cmd = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], *extra]
    data_dir = corpus.resolve_data_dir(_DATA_DIR.value)
    cmd += [f"--data_dir={data_dir}", f"--run_one={side}", f"--run_dir={run_dir}"]
    env = dict(os.environ)
    if side == "ours":
        # The trainer evaluates at the end when W2V_DATA_DIR holds evaluation files; the
        # child gets the directory through --data_dir instead, so it trains only.
        env.pop("W2V_DATA_DIR", None)
    print(f"[{side}] {run_dir.name} {' '.join(extra)} ...", file=sys.stderr, flush=True)
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"{side} run failed (exit {done.returncode}); see its stderr above")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["vectors"] = str(run_dir / "vectors.bin")
    return result


def evaluation_files() -> tuple[str | None, list[str]]:
    root = corpus.resolve_data_dir(_DATA_DIR.value)
    analogies = root / ANALOGIES
    similarity = [str(p) for p in [root / WORDSIM] if p.is_file()]
    return (str(analogies) if analogies.is_file() else None), similarity


def evaluate_run(run: dict) -> None:
    """Adds our evaluator's metrics of the run's vectors (None where a file is missing)."""
    from w2v_jax.evaluation import evaluate  # loads JAX: only in the parent, after every timed run

    scores = evaluate.score_file(run["vectors"], *evaluation_files(), _RESTRICT_VOCAB.value)
    ws353 = scores.pop(f"similarity_{pathlib.Path(WORDSIM).stem}_spearman", None)
    run.update(scores, ws353=ws353)


def spread(runs: list[dict], key: str) -> tuple:
    """(median, min, max) of ``key`` over runs; Nones when absent."""
    values = [r[key] for r in runs if r.get(key) is not None]
    if not values:
        return None, None, None
    return statistics.median(values), min(values), max(values)


def summarise(ours: list[dict], theirs: list[dict], note: str | None) -> dict:
    out = {}

    def put(name, runs, key):
        out[name], out[f"{name}_min"], out[f"{name}_max"] = spread(runs, key)

    put("words_per_s", ours, "words_per_s")
    put("words_per_s_excl_first_step", ours, "words_per_s_excl_first_step")
    put("wall_s", ours, "wall_s")
    put("analogy", ours, "analogy_total")
    put("ws353", ours, "ws353")
    put("gensim_words_per_s", theirs, "words_per_s")
    put("gensim_wall_s", theirs, "wall_s")
    put("gensim_analogy", theirs, "analogy_total")
    put("gensim_ws353", theirs, "ws353")
    for side, runs in (("", ours), ("gensim_", theirs)):
        for key in ("semantic", "syntactic", "coverage"):
            out[f"{side}analogy_{key}"] = spread(runs, f"analogy_{key}")[0]
        put(f"{side}peak_rss_bytes", runs, "peak_rss_bytes")
    gensim_wps = out["gensim_words_per_s"]
    out["ratio"] = out["words_per_s"] / gensim_wps if gensim_wps else None
    put("idle_fraction", ours, "idle_fraction")
    first = ours[0]
    memory = first["param_bytes"] + first["opt_state_bytes"] + first["token_id_bytes"]
    out["memory_bytes"] = memory  # parameter tables + optimiser state + token ids
    out["rss_ratio"] = out["peak_rss_bytes"] / memory
    out["runtime_rss_bytes"] = statistics.median(r["runtime_rss_bytes"] for r in ours)
    out["rss_above_runtime_ratio"] = (out["peak_rss_bytes"] - out["runtime_rss_bytes"]) / memory
    out["vocab_size"] = first["vocab_size"]
    out["gensim_vocab_size"] = theirs[0]["vocab_size"] if theirs else None
    out["vocab_match"] = theirs[0]["vocab_match"] if theirs else None
    out["tokens"] = first["tokens"]
    out["gensim_note"] = note
    return out


def settings() -> dict:
    return {
        "corpus": _CORPUS.value,
        "model": _MODEL.value,
        "epochs": _EPOCHS.value,
        "dim": _DIM.value,
        "window": _WINDOW.value,
        "negative": _NEGATIVE.value,
        "sample": _SAMPLE.value,
        "min_count": _MIN_COUNT.value,
        "alpha": alpha(),
        "min_alpha": 1e-4,
        "seed": _SEED.value,
        "repeats": _REPEATS.value,
        "ours_overrides": list(_OURS_OVERRIDES.value),
        "gensim_workers": _GENSIM_WORKERS.value,
        "gensim_input": _GENSIM_INPUT.value,
        "restrict_vocab": _RESTRICT_VOCAB.value,
    }


def machine(ours: list[dict], theirs: list[dict]) -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "jax": ours[0]["jax"],
        "backend": ours[0]["backend"],
        "gensim": theirs[0]["gensim"] if theirs else None,
        "gensim_fast_version": theirs[0]["fast_version"] if theirs else None,
        "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES"),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
    }


def _fmt(median, low, high, scale=1.0, digits=3, percent=False) -> str:
    if median is None:
        return "n/a"
    unit = 100.0 if percent else scale
    text = f"{median * unit:.{digits}f}"
    if low is not None and high is not None and low != high:
        text += f" [{low * unit:.{digits}f}-{high * unit:.{digits}f}]"
    return text + ("%" if percent else "")


def print_table(result: dict) -> None:
    def row(label, key, **kw):
        ours = _fmt(*(result.get(k) for k in (key, f"{key}_min", f"{key}_max")), **kw)
        g = f"gensim_{key}"
        theirs = _fmt(*(result.get(k) for k in (g, f"{g}_min", f"{g}_max")), **kw)
        print(f"{label:34} {ours:>30} {theirs:>30}")

    s = result["settings"]
    print(
        f"\n{s['corpus']}, {s['model']}, negative {s['negative']}, window {s['window']}, "
        f"dim {s['dim']}, sample {s['sample']}, min_count {s['min_count']}, "
        f"{s['epochs']} epochs, {s['repeats']} repeats; ours {s['ours_overrides'] or 'defaults'}"
    )
    print(f"{'median [min-max]':34} {'ours':>30} {'gensim':>30}")
    row("M corpus words/s", "words_per_s", scale=1e-6)
    row("  ours excl. first (compiling) step", "words_per_s_excl_first_step", scale=1e-6)
    row("training wall (s)", "wall_s", digits=1)
    row("analogy total (30k cap, 3CosAdd)", "analogy", digits=2, percent=True)
    row("WordSim-353 Spearman", "ws353")
    row("peak RSS (MB)", "peak_rss_bytes", scale=1 / MB, digits=0)
    ratio = result["ratio"]
    print(f"ratio ours / gensim words/s: {'n/a' if ratio is None else f'{ratio:.2f}x'}")
    idle = _fmt(
        *(result[f"idle_fraction{suffix}"] for suffix in ("", "_min", "_max")),
        digits=1,
        percent=True,
    )
    print(f"ours input wait / loop wall (device idle, at most): {idle}  (target < 10%)")
    print(
        f"ours peak RSS / (tables + optimiser state + token ids = "
        f"{result['memory_bytes'] / MB:.1f} MB): {result['rss_ratio']:.2f}x (target < 1.5x); "
        f"above the JAX runtime alone ({result['runtime_rss_bytes'] / MB:.0f} MB): "
        f"{result['rss_above_runtime_ratio']:.2f}x"
    )
    theirs = result["gensim_vocab_size"]
    print(
        f"vocabulary: ours V={result['vocab_size']:,}, gensim V="
        f"{'n/a' if theirs is None else f'{theirs:,}'}; corpus tokens N={result['tokens']:,}"
    )
    if result["vocab_match"] is False:
        print("WARNING: the two vocabularies differ; the comparison is not like for like")
    if result["gensim_note"]:
        print(f"NOTE: {result['gensim_note']}")


# ------------------------------------------------------------------- time to quality


def gensim_target(runs: list[dict]) -> dict:
    """gensim's side of the time to quality from its evaluated ``runs``: the medians of
    ``wall_s``, ``analogy_total`` and ``ws353``, and each run's (wall, analogy). gensim's
    threads make its accuracy vary between runs of one seed (skip-gram 8.2–8.8% on
    text8-head), so one run would set the bar by chance; the median is its typical run."""
    target = {k: spread(runs, k)[0] for k in ("wall_s", "analogy_total", "ws353")}
    target["runs"] = [{"wall_s": r["wall_s"], "analogy_total": r["analogy_total"]} for r in runs]
    return target


def climb(target: dict, train_ours, ladder) -> dict:
    """Our runs up the epoch ladder until one reaches gensim's analogy accuracy.

    ``target``: gensim's run (``wall_s``, ``analogy_total``, ``ws353``); ``train_ours(e)``
    trains ours planned for e epochs and returns its evaluated run (same keys plus
    ``epochs``); ``ladder``: epoch counts, increasing. Stops at the first run whose analogy
    is >= gensim's; ``ratio`` = gensim's wall / that run's wall (> 1: ours is sooner), None
    when no rung reached it.
    """
    runs = []
    for epochs in ladder:
        runs.append(train_ours(epochs))
        if runs[-1]["analogy_total"] >= target["analogy_total"]:
            break
    hit = runs[-1] if runs and runs[-1]["analogy_total"] >= target["analogy_total"] else None
    return {
        "gensim_wall_s": target["wall_s"],
        "gensim_analogy": target["analogy_total"],
        "gensim_ws353": target.get("ws353"),
        "gensim_runs": target.get("runs"),
        "reached": hit is not None,
        "epochs": hit and hit["epochs"],
        "wall_s": hit and hit["wall_s"],
        "analogy": hit and hit["analogy_total"],
        "ws353": hit and hit.get("ws353"),
        "ratio": hit and target["wall_s"] / hit["wall_s"],
        "ws353_at_least_gensim": None
        if hit is None or hit.get("ws353") is None or target.get("ws353") is None
        else hit["ws353"] >= target["ws353"],
        "ladder": [
            {k: r.get(k) for k in ("epochs", "wall_s", "analogy_total", "ws353", "words_per_s")}
            for r in runs
        ],
    }


def ttq_table(rows: list[dict]) -> str:
    """The markdown table of `time_to_quality`'s rows (one per model)."""

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.2f}%"

    def num(x, fmt=".3f"):
        return "n/a" if x is None else format(x, fmt)

    lines = [
        "| model | gensim: epochs, wall, analogy / WS353 | ours: epochs tried (analogy, wall) "
        "| ours at gensim's analogy: epochs, wall, analogy / WS353 | gensim wall / ours |",
        "| --- | --- | --- | --- | ---: |",
    ]
    for r in rows:
        tried = "; ".join(
            f"{x['epochs']:g}: {pct(x['analogy_total'])}, {x['wall_s']:.1f} s" for x in r["ladder"]
        )
        ours = "not reached"
        if r["reached"]:
            ours = f"{r['epochs']:g}, {r['wall_s']:.1f} s, {pct(r['analogy'])} / {num(r['ws353'])}"
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        runs = r.get("gensim_runs") or []
        medians = ""
        if len(runs) > 1:
            low, high = (f(x["analogy_total"] for x in runs) for f in (min, max))
            medians = f" (medians of {len(runs)} runs; analogy {pct(low)}–{pct(high)})"
        lines.append(
            f"| {r['model']} | {r['gensim_epochs']:g}, {r['gensim_wall_s']:.1f} s, "
            f"{pct(r['gensim_analogy'])} / {num(r['gensim_ws353'])}{medians} | {tried} "
            f"| {ours} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def time_to_quality(tmp: pathlib.Path) -> dict:
    """For each of --models: gensim for --epochs, --repeats times (`gensim_target`), or
    --target_* in its place, then `climb`."""
    ladder = sorted({float(e) for e in _OURS_EPOCHS.value})
    given = _TARGET_ANALOGY.value is not None
    if given and _TARGET_WALL_S.value is None:
        raise app.UsageError("--target_analogy needs --target_wall_s")
    if not given and (problem := gensim_problem()):
        raise errors.UserError(
            f"--time_to_quality needs gensim ({problem}): pip install -e .[peers], "
            "or give --target_analogy and --target_wall_s"
        )
    rows = []
    for model in _MODELS.value:
        if model not in ("skipgram", "cbow"):
            raise app.UsageError(f"--models: expected skipgram or cbow, got {model!r}")
        if given:
            target = {"wall_s": _TARGET_WALL_S.value, "analogy_total": _TARGET_ANALOGY.value}
        else:
            runs = []
            for repeat in range(_REPEATS.value):
                run_dir = tmp / f"gensim_{model}_{repeat}"
                run_dir.mkdir()
                runs.append(run_child("gensim", run_dir, [f"--model={model}"]))
                evaluate_run(runs[-1])
            target = gensim_target(runs)

        def train_ours(epochs, model=model):
            run_dir = tmp / f"ours_{model}_{epochs:g}"
            run_dir.mkdir()
            run = run_child("ours", run_dir, [f"--model={model}", f"--epochs={epochs:g}"])
            evaluate_run(run)
            return {**run, "epochs": epochs}

        row = climb(target, train_ours, ladder)
        row.update(model=model, gensim_epochs=gensim_epochs(), gensim_measured=not given)
        rows.append(row)
        print(ttq_table([row]), file=sys.stderr, flush=True)
    return {
        "rows": rows,
        "settings": settings(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "experiments/benchmark.py", *sys.argv[1:]]),
    }


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if _RUN_ONE.value:
        run_dir = pathlib.Path(_RUN_DIR.value)
        result = (run_ours if _RUN_ONE.value == "ours" else run_gensim)(run_dir)
        print(json.dumps(result))
        return
    if _TIME_TO_QUALITY.value:
        with tempfile.TemporaryDirectory(prefix="w2v_ttq_") as tmp:
            result = time_to_quality(pathlib.Path(tmp))
        table = ttq_table(result["rows"])
        print(table)
        line = json.dumps(result)
        if _OUT_DIR.value:
            out = pathlib.Path(_OUT_DIR.value)
            out.mkdir(parents=True, exist_ok=True)
            stem = pathlib.Path(_CORPUS.value).name
            (out / f"{stem}.json").write_text(line + "\n")
            (out / f"{stem}.md").write_text(f"`{result['command']}`\n\n{table}")
        print(line)
        return
    note = None
    if _SKIP_GENSIM.value:
        note = "gensim skipped (--skip_gensim): our side only"
    elif problem := gensim_problem():
        note = f"gensim cannot be imported ({problem}; pip install gensim): our side only"
    with_gensim = note is None
    if note:
        print(f"NOTE: {note}", file=sys.stderr)
    ours, theirs = [], []
    with tempfile.TemporaryDirectory(prefix="w2v_benchmark_") as tmp:
        for r in range(_REPEATS.value):
            sides = ["ours", "gensim"] if with_gensim else ["ours"]
            for side in sides if r % 2 == 0 else sides[::-1]:  # alternate who goes first
                run_dir = pathlib.Path(tmp) / f"{side}_{r}"
                run_dir.mkdir()
                (ours if side == "ours" else theirs).append(run_child(side, run_dir))
        for run in ours + theirs:
            evaluate_run(run)
            vectors = pathlib.Path(run.pop("vectors"))
            if _KEEP_VECTORS.value and vectors.is_file():
                keep = pathlib.Path(_KEEP_VECTORS.value)
                keep.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(vectors, keep / f"{vectors.parent.name}.bin")
    for run in theirs:
        if not run["vocab_match"] or run["vocab_size"] != ours[0]["vocab_size"]:
            print("WARNING: gensim's vocabulary differs from ours", file=sys.stderr)
        if abs(run["raw_words"] - run["words"]) > 0.01 * run["words"]:
            print(
                f"WARNING: gensim counted {run['raw_words']:,} raw words, fed "
                f"{run['words']:,}; words/s uses the words fed",
                file=sys.stderr,
            )
        if run["fast_version"] < 0:
            print("WARNING: gensim runs without its compiled routines (slow)", file=sys.stderr)
    result = summarise(ours, theirs, note)
    result.update(
        settings=settings(),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        machine=machine(ours, theirs),
        runs=ours + theirs,
    )
    print_table(result)
    line = json.dumps(result)
    if _OUTPUT_JSON.value:
        pathlib.Path(_OUTPUT_JSON.value).write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    cli.run(main)  # one-line errors, tracebacks with --verbose
