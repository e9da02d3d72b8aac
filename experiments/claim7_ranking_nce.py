"""Claim 7 (Ma & Collins, 2018): ranking NCE against binary NCE where Z cannot be 1.

  python experiments/claim7_ranking_nce.py --out_dir=experiments/results/claim7_synthetic \
      [--workdir=runs/claim7] [--ks=1,5,25,100] [--seeds=0] [--settings=sg_d32,sg_d8,...] \
      [--recipe=default|word2vec]

Binary NCE (loss ``nce``: a sigmoid per label and sample, the model taken as normalised,
Z = 1) is consistent only if the model can make every context's scores sum to one; as k
grows its objective tends to the log-likelihood minus E[Z − 1 − log Z] (the layer
``softmax_penalty`` with penalty 1). Ranking NCE (``sampled_softmax`` with accidental hits
kept: a softmax over the label and its samples with scores s − log q) is consistent
without that: its objective tends to the log-likelihood itself. So where the model cannot
self-normalise, the prediction is that binary NCE stays above ranking NCE in KL to the
truth at every k, towards ``softmax_penalty``; where it can, both meet the softmax.

On the synthetic corpus (w2v_jax/configs/synthetic.py: a rank-16 Markov chain over
V = 500 words, whose true conditional is known), for each setting in ``--settings``
(`SETTINGS`), one `sweep.run_sweep` in ``WORKDIR/<setting>/``: softmax, softmax_penalty,
and nce and sampled_softmax at every k, for every seed. A rerun skips finished points.
Every run trains with the project's default recipe (sparse AdaGrad from 1.0 at α 0.3,
1,024-row steps, row-shared samples, `configs/default.py`); ``--recipe=word2vec`` keeps
configs/synthetic.py's word2vec SGD (α 0.025, 32-row steps), under which softmax_penalty
(whose gradient grows as e^s) and NCE at k = 100 diverge at 8-d.
Writes to ``--out_dir``: ``claim7.json`` (one row per run: KL to the truth, held-out
NLL, log Z mean and std), ``table.md`` and ``claim7.png`` (`figures.ranking_nce_figure`).
"""

from __future__ import annotations

import json
import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from w2v_jax import cli, errors, files
from w2v_jax.analysis import figures, plots, sweep
from w2v_jax.configs import default

# name: (title, config overrides). Each starts from configs/synthetic.py (skip-gram, 32-d,
# window 2, word2vec's SGD, 3 epochs); the chain's interaction logits have rank 16.
SETTINGS = {
    "sg_d32": ("skip-gram, 32-d (claim 5: can self-normalise)", {}),
    "sg_d8": ("skip-gram, 8-d (below the chain's rank 16)", {"dim": 8}),
    "sg_d4": ("skip-gram, 4-d", {"dim": 4}),
    "cbow_prev_d8": (
        "CBOW, previous word only (left_only, window 1), 8-d",
        {"model": "cbow", "left_only": True, "window": 1, "dim": 8},
    ),
    "cbow_prev_d32": (
        "CBOW, previous word only, 32-d (the truth, normaliser included, fits in 18 dims)",
        {"model": "cbow", "left_only": True, "window": 1, "dim": 32},
    ),
}
LOSSES = ("softmax", "softmax_penalty", "nce", "sampled_softmax")
COLUMNS = ("kl_truth", "heldout_nll", "log_z_mean", "log_z_std")  # read from each summary

_CONFIG = config_flags.DEFINE_config_file(
    "config", "w2v_jax/configs/synthetic.py", "Base config of every run.", lock_config=False
)
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where claim7.json, table.md and the plot go.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/claim7", "Run folders, one sweep per setting.")
_KS = flags.DEFINE_list("ks", ["1", "5", "25", "100"], "Noise samples k.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "config.seed of each repetition.")
_SETTINGS = flags.DEFINE_list("settings", list(SETTINGS), f"Settings among {list(SETTINGS)}.")
_RECIPE = flags.DEFINE_enum(
    "recipe",
    "default",
    ["default", "word2vec"],
    "The optimiser: configs/default.py's or word2vec's.",
)
flags.mark_flags_as_required(["out_dir"])


def keep_accidental_hits(config, point) -> None:
    """Ranking NCE keeps samples equal to the label (Ma & Collins' estimator)."""
    del point
    config.loss.remove_accidental_hits = False


def default_recipe(config):
    """``config`` trained as configs/default.py trains: its optimiser, step size, sample
    sharing and input mode; returns it."""
    recipe = default.get_config()
    config.optimizer = recipe.optimizer
    config.batch_size, config.steps_per_call = recipe.batch_size, recipe.steps_per_call
    config.loss.share, config.loss.skipgram_input = recipe.loss.share, recipe.loss.skipgram_input
    config.input.mode = recipe.input.mode
    return config


def setting_config(base, overrides: dict, recipe: str):
    config = base.copy_and_resolve_references()
    if recipe == "default":
        default_recipe(config)
    config.update_from_flattened_dict(overrides)
    return config


def collect(workdir: pathlib.Path, settings) -> list[dict]:
    """One row per finished run of every setting, with `COLUMNS` from its summary."""
    rows = []
    for name in settings:
        for r in plots.read_summary(workdir / name):
            if r.get("status") == "ok":
                keep = ("loss", "k", "seed", "wall_s", *COLUMNS)
                rows.append({"setting": name, **{key: r.get(key) for key in keep}})
    return rows


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def table(rows: list[dict], settings) -> str:
    """Markdown: per setting and loss, KL to the truth (log Z mean / std) per k."""
    ks = sorted({r["k"] for r in rows if r["k"] is not None})
    head = ["setting", "loss", "no k", *(f"k = {k}" for k in ks)]
    lines = ["| " + " | ".join(head) + " |", "| --- | --- |" + " ---: |" * (len(head) - 2)]
    for name in settings:
        for loss in LOSSES:
            cells = []
            for k in [None, *ks]:
                mine = [r for r in rows if r["setting"] == name and r["loss"] == loss]
                mine = [r for r in mine if r["k"] == k]
                kl = _mean(r["kl_truth"] for r in mine)
                if kl is None:
                    cells.append("")
                    continue
                mean = _mean(r["log_z_mean"] for r in mine)
                std = _mean(r["log_z_std"] for r in mine)
                cells.append(f"{kl:.3f} ({mean:+.2f} / {std:.2f})")
            lines.append("| " + " | ".join([name, loss, *cells]) + " |")
    return "\n".join(lines) + "\n"


def verdict(rows: list[dict], settings) -> list[dict]:
    """Per setting and k: KL(binary) − KL(ranking), seed means (positive: prediction holds)."""
    out = []
    for name in settings:
        for k in sorted({r["k"] for r in rows if r["k"] is not None}):

            def kl(loss, name=name, k=k):
                return _mean(
                    r["kl_truth"]
                    for r in rows
                    if r["setting"] == name and r["loss"] == loss and r["k"] == k
                )

            binary, ranking = kl("nce"), kl("sampled_softmax")
            if binary is not None and ranking is not None:
                out.append({"setting": name, "k": k, "gap": binary - ranking})
    return out


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    unknown = sorted(set(_SETTINGS.value) - set(SETTINGS))
    if unknown:
        raise errors.ConfigError(f"--settings: unknown {unknown}; use some of {list(SETTINGS)}")
    ks, seeds = [int(k) for k in _KS.value], [int(s) for s in _SEEDS.value]
    workdir, out_dir = pathlib.Path(_WORKDIR.value), pathlib.Path(_OUT_DIR.value)
    base = _CONFIG.value
    points = sweep.make_points(LOSSES, ks, seeds)
    configs = {}
    for name in _SETTINGS.value:  # every setting's points validated before any training
        configs[name] = setting_config(base, SETTINGS[name][1], _RECIPE.value)
        sweep.validated_configs(configs[name], points, keep_accidental_hits)
    failed = 0
    for name in _SETTINGS.value:
        logging.info("claim 7: setting %s (%s)", name, SETTINGS[name][0])
        result = sweep.run_sweep(
            configs[name], workdir / name, points, configure=keep_accidental_hits,
            make_plots=False,
        )  # fmt: skip
        failed += result.failed
    rows = collect(workdir, _SETTINGS.value)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "settings": {n: {"title": SETTINGS[n][0], "overrides": SETTINGS[n][1]} for n in configs},
        "recipe": _RECIPE.value,
        "configs": {n: json.loads(c.to_json_best_effort()) for n, c in configs.items()},
        "rows": rows,
        "gaps": verdict(rows, _SETTINGS.value),
    }
    files.write_json(out_dir / "claim7.json", payload, indent=1)
    text = table(rows, _SETTINGS.value)
    files.write_atomic(out_dir / "table.md", text)
    titles = {n: SETTINGS[n][0] for n in configs}
    figures.ranking_nce_figure(rows, titles).savefig(out_dir / "claim7.png", dpi=100)
    print(text)
    for gap in payload["gaps"]:
        print(f"{gap['setting']:>14} k={gap['k']:<4} KL(nce) - KL(sampled_softmax) = "
              f"{gap['gap']:+.4f}")  # fmt: skip
    if failed:
        sys.stderr.write(f"{failed} run(s) failed; see error.txt in {workdir}\n")
        sys.exit(1)


if __name__ == "__main__":
    cli.run(main)  # one-line errors, tracebacks with --verbose
