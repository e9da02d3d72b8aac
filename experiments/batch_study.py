r"""Quality and speed against rows per step: which large-batch recipe keeps word2vec's quality.

  W2V_DATA_DIR=../shared/data python experiments/batch_study.py --out_dir=/tmp/batch_study

For every (recipe, rows per step, learning rate, seed) it runs `experiments/benchmark.py`
once on our side (a fresh process: training wall time, then analogy with the 30k cap and
WordSim-353 in our evaluator), and for every seed one benchmark of the reference pair: our
word2vec SGD config (32-row sequential steps, `configs/word2vec.py`'s settings) against
gensim, side by side. Every run writes ``DIR/runs/NAME.json`` (the benchmark's JSON line);
a run whose file exists is not run again, so the study resumes where it stopped.

At the end it writes ``DIR/summary.json`` (every run), ``DIR/table.md`` (per recipe and
rows per step: the best learning rate by mean analogy over seeds, its analogy, WS353 and
words/s, beside the references) and ``DIR/batch_study.png`` (analogy, WS353 and words/s
against rows per step, the references as horizontal lines).

A recipe is a list of config overrides (``--recipes`` picks them by name, see RECIPES);
each recipe has its own learning-rate grid (``--alphas`` replaces them all). The default grid is
the one issue 13 asks for; the committed results say which subset was run.
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import subprocess
import sys

from absl import app, flags

from w2v_jax import cli
from w2v_jax.configs import word2vec

# Recipes: config overrides on top of the project's default config (see configs/default.py)
# and the learning rates tried for each (``--alphas`` replaces every recipe's grid).
RECIPES = {
    # Sparse per-element AdaGrad (optax scale_by_rss semantics, applied to touched rows).
    "adagrad": (["optimizer.name=adagrad", "optimizer.initial_accumulator=0.1"], ["0.1", "0.3"]),
    # The same with GloVe's accumulator start (1.0): rare rows move like SGD at alpha.
    "adagrad_init1": (
        ["optimizer.name=adagrad", "optimizer.initial_accumulator=1.0"],
        ["0.3", "1.0"],
    ),
    # Row-wise AdaGrad: one accumulator per row (FBGEMM / PyTorch-BigGraph).
    "rowwise_adagrad": (
        ["optimizer.name=rowwise_adagrad", "optimizer.initial_accumulator=0.1"],
        ["0.03", "0.1", "0.3", "1.0"],
    ),
    # word2vec's SGD on large steps, a row's n summed updates scaled by n^-0.5.
    "sgd_dup": (["optimizer.name=sgd", "optimizer.duplicate_power=0.5"], ["0.05", "0.1", "0.2"]),
    # Cheaper groupings under the default optimiser (speed: docs/performance.md). The
    # centre's vector predicts its contexts (one input row per centre, so its K negatives
    # are scored once, not once per context) ...
    "adagrad_centre": (
        [
            "optimizer.name=adagrad",
            "optimizer.initial_accumulator=1.0",
            "loss.skipgram_input=centre",
        ],
        ["0.3"],
    ),
    # ... one set of K negatives per block of 64 centre rows (a [64·C, D]·[D, K] matmul) ...
    "adagrad_block": (
        ["optimizer.name=adagrad", "optimizer.initial_accumulator=1.0", "loss.share=block"],
        ["0.3"],
    ),
    # ... and both.
    "adagrad_centre_block": (
        [
            "optimizer.name=adagrad",
            "optimizer.initial_accumulator=1.0",
            "loss.skipgram_input=centre",
            "loss.share=block",
        ],
        ["0.3"],
    ),
}
# Shared by every recipe: sparse updates, one step per call, one set of negatives per
# centre row with word2vec C's orientation (each context's vector predicts the centre),
# and the on-device pipeline (its B strided streams keep neighbouring windows, which share
# rows, out of one step).
COMMON = [
    "optimizer.sparse=true",
    "optimizer.min_alpha=0.0001",
    "steps_per_call=1",
    "loss.share=row",
    "loss.skipgram_input=context",
    "input.mode=device",
]
# The original estimator: word2vec's 32-row sequential SGD steps, 32 per call.
WORD2VEC = word2vec.overrides()

_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where runs, summary, table and plot go.")
_RECIPES = flags.DEFINE_list("recipes", list(RECIPES), f"Recipes to run: {list(RECIPES)}.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1024", "4096", "16384", "65536"], "Rows.")
_ALPHAS = flags.DEFINE_list("alphas", [], "Learning rates for every recipe (default: its own).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1"], "Seeds.")
_CORPUS = flags.DEFINE_string("corpus", "text8-head", "Corpus (benchmark.py --corpus).")
_EPOCHS = flags.DEFINE_integer("epochs", 5, "Epochs.", lower_bound=1)
_MODEL = flags.DEFINE_enum("model", "skipgram", ["skipgram", "cbow"], "sg=1 or sg=0.")
_EXTRA = flags.DEFINE_list("extra_overrides", [], "More overrides for every recipe run.")
_REFERENCES = flags.DEFINE_bool("references", True, "Run word2vec SGD vs gensim per seed.")
_GENSIM = flags.DEFINE_bool("gensim", True, "Include gensim in the reference runs.")
_COLLECT_ONLY = flags.DEFINE_bool(
    "collect_only", False, "Run nothing: summarise the runs already in DIR/runs (any grid)."
)

BENCHMARK = pathlib.Path(__file__).with_name("benchmark.py")


def run_name(recipe: str, rows: int, alpha: float, seed: int) -> str:
    return f"{recipe}_b{rows}_a{alpha:g}_s{seed}"


def benchmark(out: pathlib.Path, overrides: list[str], seed: int, gensim: bool) -> dict:
    """One `benchmark.py` run (repeats 1); its JSON result, cached in ``out``. With
    ``--collect_only`` a missing run is None."""
    if out.exists():
        return json.loads(out.read_text())
    if _COLLECT_ONLY.value:
        return None
    cmd = [
        sys.executable,
        str(BENCHMARK),
        f"--corpus={_CORPUS.value}",
        f"--epochs={_EPOCHS.value}",
        f"--model={_MODEL.value}",
        f"--seed={seed}",
        "--repeats=1",
        f"--ours_overrides={','.join(overrides)}",
        f"--output_json={out}.tmp",
    ]
    if not gensim:
        cmd.append("--skip_gensim")
    print(f"[batch_study] {out.stem}", file=sys.stderr, flush=True)
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL)
    if done.returncode:  # recorded too, so a diverged point is not run again
        record = {"failed": True, "returncode": done.returncode, "overrides": overrides}
        out.write_text(json.dumps(record) + "\n")
        return record
    os.replace(f"{out}.tmp", out)
    return json.loads(out.read_text())


def collect(out_dir: pathlib.Path) -> list[dict]:
    """Every run of the study: recipe, rows, alpha, seed and the measured values."""
    rows = []
    seeds = [int(s) for s in _SEEDS.value]
    runs = out_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        if _REFERENCES.value:
            result = benchmark(runs / f"word2vec_s{seed}.json", WORD2VEC, seed, _GENSIM.value)
            if result is not None:
                rows.append(_row("word2vec_sgd32", 32, None, seed, result, "ours"))
                if result.get("gensim_words_per_s"):
                    rows.append(_row("gensim", None, None, seed, result, "gensim"))
        for recipe in _RECIPES.value:
            if recipe not in RECIPES:
                raise app.UsageError(f"--recipes: unknown {recipe!r}; use {list(RECIPES)}")
            for rows_per_step in (int(b) for b in _BATCH_SIZES.value):
                recipe_overrides, alphas = RECIPES[recipe]
                for alpha in (float(a) for a in (_ALPHAS.value or alphas)):
                    overrides = [
                        *COMMON,
                        *recipe_overrides,
                        f"batch_size={rows_per_step}",
                        f"optimizer.alpha={alpha}",
                        *_EXTRA.value,
                    ]
                    name = run_name(recipe, rows_per_step, alpha, seed)
                    result = benchmark(runs / f"{name}.json", overrides, seed, gensim=False)
                    if result is not None:
                        rows.append(_row(recipe, rows_per_step, alpha, seed, result, "ours"))
    return rows


def _row(recipe, rows_per_step, alpha, seed, result, side) -> dict:
    prefix = "gensim_" if side == "gensim" else ""
    failed = bool(result.get("failed"))
    return {
        "recipe": recipe,
        "rows": rows_per_step,
        "alpha": alpha,
        "seed": seed,
        "failed": failed,
        "analogy": None if failed else result.get(f"{prefix}analogy"),
        "ws353": None if failed else result.get(f"{prefix}ws353"),
        "words_per_s": None if failed else result.get(f"{prefix}words_per_s"),
    }


def best_per_setting(rows: list[dict]) -> list[dict]:
    """Per (recipe, rows): the alpha with the best mean analogy over seeds, and its means."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["recipe"], r["rows"], r["alpha"]), []).append(r)
    means = []
    for (recipe, rows_per_step, alpha), runs in groups.items():
        ok = [r for r in runs if not r["failed"] and r["analogy"] is not None]
        entry = {"recipe": recipe, "rows": rows_per_step, "alpha": alpha, "seeds": len(ok)}
        entry["failed"] = len(runs) - len(ok)
        for key in ("analogy", "ws353", "words_per_s"):
            values = [r[key] for r in ok if r[key] is not None]
            entry[key] = statistics.fmean(values) if values else None
        means.append(entry)
    best: dict = {}
    for m in means:
        key = (m["recipe"], m["rows"])
        score = -1.0 if m["analogy"] is None else m["analogy"]
        if key not in best or score > (best[key]["analogy"] or -1.0):
            best[key] = m
    return sorted(best.values(), key=lambda m: (m["recipe"], m["rows"] or 0))


def table(best: list[dict]) -> str:
    lines = [
        "| recipe | rows/step | best α | analogy | WS353 | words/s | seeds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in best:
        fmt = lambda v, f: "—" if v is None else f.format(v)  # noqa: E731
        lines.append(
            f"| {m['recipe']} | {fmt(m['rows'], '{:,}')} | {fmt(m['alpha'], '{:g}')} "
            f"| {fmt(m['analogy'], '{:.1%}')} | {fmt(m['ws353'], '{:.3f}')} "
            f"| {fmt(m['words_per_s'], '{:,.0f}')} | {m['seeds']}"
            + (f" ({m['failed']} failed)" if m["failed"] else "")
            + " |"
        )
    return "\n".join(lines) + "\n"


def all_runs_table(rows: list[dict]) -> str:
    lines = [
        "| recipe | rows/step | α | seed | analogy | WS353 | words/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["recipe"], r["rows"] or 0, r["alpha"] or 0, r["seed"])):
        if r["failed"]:
            values = "failed (diverged or error) | | "
        else:
            values = f"{r['analogy']:.1%} | {r['ws353']:.3f} | {r['words_per_s']:,.0f}"
        rows_text = "—" if r["rows"] is None else f"{r['rows']:,}"
        alpha = "—" if r["alpha"] is None else f"{r['alpha']:g}"
        lines.append(f"| {r['recipe']} | {rows_text} | {alpha} | {r['seed']} | {values} |")
    return "\n".join(lines) + "\n"


def plot(best: list[dict], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("analogy", "analogy accuracy (%)", 100), ("ws353", "WS353 Spearman ρ", 1)]
    panels.append(("words_per_s", "training speed (corpus words/s)", 1))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), layout="constrained")
    # Okabe–Ito, then matplotlib's tab10 once those run out
    colours = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#E69F00", "#F0E442"]
    colours += [plt.get_cmap("tab10")(i) for i in range(10)]
    references = [m for m in best if m["recipe"] in ("word2vec_sgd32", "gensim")]
    recipes = sorted({m["recipe"] for m in best} - {"word2vec_sgd32", "gensim"})
    for ax, (key, label, scale) in zip(axes, panels, strict=True):
        for i, recipe in enumerate(recipes):
            pts = [m for m in best if m["recipe"] == recipe and m[key] is not None]
            xs = [m["rows"] for m in pts]
            colour = colours[i % len(colours)]
            ax.plot(xs, [m[key] * scale for m in pts], "o-", color=colour, label=recipe)
        for j, ref in enumerate(references):
            if ref[key] is not None:
                ax.axhline(
                    ref[key] * scale, color="0.3", ls=("--", ":")[j % 2], label=ref["recipe"]
                )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("centre rows per step")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{_CORPUS.value}, {_MODEL.value}, {_EPOCHS.value} epochs: best α per point")
    fig.savefig(path, dpi=100)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if not _OUT_DIR.value:
        raise app.UsageError("--out_dir is required (where runs and results go)")
    out_dir = pathlib.Path(_OUT_DIR.value)
    rows = collect(out_dir)
    best = best_per_setting(rows)
    (out_dir / "summary.json").write_text(json.dumps({"runs": rows, "best": best}, indent=1))
    (out_dir / "table.md").write_text(table(best) + "\nEvery run:\n\n" + all_runs_table(rows))
    plot(best, out_dir / "batch_study.png")
    print(table(best))


if __name__ == "__main__":
    cli.run(main)  # one-line errors, tracebacks with --verbose
