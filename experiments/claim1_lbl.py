r"""Claim 1 at full fidelity: Mnih & Teh's log-bilinear model on PTB, stopped on validation.

  W2V_DATA_DIR=../shared/data python experiments/claim1_lbl.py --workdir=runs/claim1_lbl

Every point (loss, k) trains `experiments/configs/ptb_lbl_full.py` — the LBL model with
full C_i, biases, unigram noise, sparse AdaGrad — at a *constant* learning rate (AdaGrad
anneals by itself), so the state after S steps does not depend on how many epochs were
planned. Two stages, each an `experiments/sweep_k.py`-style sweep (`analysis.sweep`):

1. ``DIR/select``: ``--max_epochs`` epochs, the exact perplexity of ``ptb.valid.txt``
   every ``--eval_every`` steps; the step S* of the lowest validation perplexity is the
   point's stopping step (early stopping, as the paper's learning-rate schedule keyed to
   validation perplexity).
2. ``DIR/test``: the same run stopped at S* (``max_steps``), scored on ``ptb.test.txt``:
   test perplexity and log Z (mean, spread) of the model validation chose.

Rerunning skips finished points. Writes ``DIR/claim1_lbl.json`` and ``DIR/table.md``:
per point S*, validation and test perplexity, log Z mean and standard deviation, the
selection run's words/s, beside Mnih & Teh's Table 1 (recollected numbers, marked as
such); and
``DIR/validation.png``: every point's validation perplexity and log Z spread against
epochs, its stopping step marked.
"""

from __future__ import annotations

import json
import math
import pathlib

from absl import flags
from ml_collections import config_flags

from w2v_jax import cli, errors, run_folder, settings
from w2v_jax.analysis import sweep

_CONFIG = config_flags.DEFINE_config_file(
    "config", str(pathlib.Path(__file__).with_name("configs") / "ptb_lbl_full.py"), "Base."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep directory (select/ and test/ inside).")
_POINTS = flags.DEFINE_list(
    "points", ["nce:5", "nce:25", "nce:100", "softmax", "softmax_penalty"], "loss:k points."
)
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds.")
_MAX_EPOCHS = flags.DEFINE_integer("max_epochs", 6, "Epochs of the selection run.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 433, "Steps between validation scores.")
flags.mark_flags_as_required(["workdir"])

# Mnih & Teh (2012), Table 1 as recollected in ../shared/notes/claims.md [R]: LBL, 100-d,
# 2-word context, unigram noise; test perplexity. Not verified against the paper's text
# (not reachable from this machine).
PAPER = {"softmax": 163.5, "nce:1": 192.5, "nce:5": 172.6, "nce:25": 163.1, "nce:100": 159.1}


def _label(point: sweep.Point) -> str:
    return point.loss if point.k is None else f"{point.loss}:{point.k}"


def _evaluations(run_dir: pathlib.Path) -> list[dict]:
    rows = run_folder.read_metrics(str(run_dir))
    return [r for r in rows if "eval/heldout_ppl" in r]


def best_step(run_dir: pathlib.Path) -> tuple[int, float]:
    """(step, validation perplexity) of the lowest validation perplexity of a run."""
    evals = [r for r in _evaluations(run_dir) if math.isfinite(r["eval/heldout_ppl"])]
    if not evals:
        raise errors.RunFolderError(
            f"{run_dir}: no finite validation perplexity; did the run train?"
        )
    best = min(evals, key=lambda r: r["eval/heldout_ppl"])
    return int(best["step"]), float(best["eval/heldout_ppl"])


def main(argv) -> None:
    if len(argv) > 1:
        raise errors.ConfigError(f"unexpected arguments {argv[1:]}")
    base = _CONFIG.value
    base.optimizer.min_alpha = base.optimizer.alpha  # constant: S steps mean the same state
    base.epochs = _MAX_EPOCHS.value
    base.eval_every = _EVAL_EVERY.value
    base.checkpoint_every = 10**9  # by time only: the stopping step is read from metrics
    workdir = pathlib.Path(_WORKDIR.value)
    points = sweep.parse_points(_POINTS.value, [int(s) for s in _SEEDS.value])

    select = base.copy_and_resolve_references()
    select.corpus.heldout = "valid"
    test = base.copy_and_resolve_references()
    test.corpus.heldout = "test"
    for config in (select, test):  # PTB's three splits are there before anything trains
        settings.check_data(config)
    sweep.run_sweep(select, workdir / "select", points, make_plots=False)

    stops = {}
    for point in points:
        run = workdir / "select" / point.name
        if sweep.is_finished(run):
            stops[point] = best_step(run)

    def stop_at(config, point):
        config.max_steps = stops[point][0]
        config.eval_every = 0  # only the final score, on test

    chosen = [p for p in points if p in stops]
    sweep.run_sweep(test, workdir / "test", chosen, configure=stop_at, make_plots=False)

    rows = []
    for point in chosen:
        run = workdir / "test" / point.name
        if not sweep.is_finished(run):
            continue
        final = _evaluations(run)[-1]
        # words/s of the selection run: the longer of the two, so the steadier figure
        metrics = run_folder.read_metrics(str(workdir / "select" / point.name))
        speed = [r["train/words_per_s"] for r in metrics if "train/words_per_s" in r]
        rows.append(
            {
                "point": _label(point),
                "seed": point.seed,
                "stop_step": stops[point][0],
                "valid_ppl": stops[point][1],
                "test_ppl": final["eval/heldout_ppl"],
                "log_z_mean": final["eval/log_z_mean"],
                "log_z_std": final["eval/log_z_std"],
                "words_per_s": speed[-1] if speed else None,
                "paper_test_ppl": PAPER.get(_label(point)),
            }
        )
    (workdir / "claim1_lbl.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = [
        "| point | seed | stop step | valid ppl | test ppl | log Z mean | log Z std "
        "| words/s | Mnih & Teh test ppl [R] |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        paper = "—" if r["paper_test_ppl"] is None else f"{r['paper_test_ppl']:.1f}"
        speed = "—" if r["words_per_s"] is None else f"{r['words_per_s']:,.0f}"
        lines.append(
            f"| {r['point']} | {r['seed']} | {r['stop_step']:,} | {r['valid_ppl']:.1f} "
            f"| {r['test_ppl']:.1f} | {r['log_z_mean']:+.3f} | {r['log_z_std']:.3f} "
            f"| {speed} | {paper} |"
        )
    table = "\n".join(lines) + "\n"
    (workdir / "table.md").write_text(table)
    plot_validation(workdir, points, stops)
    print(table)


def plot_validation(workdir: pathlib.Path, points, stops) -> None:
    """Validation perplexity and log Z standard deviation against epochs, per point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ppl_ax, z_ax) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for point in points:
        run = workdir / "select" / point.name
        if point not in stops:
            continue
        evals = _evaluations(run)
        steps_per_epoch = max(r["step"] for r in evals) / _MAX_EPOCHS.value
        epochs = [r["step"] / steps_per_epoch for r in evals]
        (line,) = ppl_ax.plot(epochs, [r["eval/heldout_ppl"] for r in evals], label=_label(point))
        z_ax.plot(epochs, [r["eval/log_z_std"] for r in evals], color=line.get_color())
        stop, best = stops[point]
        ppl_ax.plot([stop / steps_per_epoch], [best], "o", color=line.get_color())
    ppl_ax.set(xlabel="epoch", ylabel="validation perplexity (exact)", yscale="log")
    z_ax.set(xlabel="epoch", ylabel="std of log Z over validation contexts")
    ppl_ax.legend(fontsize=8)
    fig.suptitle("PTB, log-bilinear model: validation curves (dot: the stopping step)")
    fig.savefig(workdir / "validation.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    cli.run(main)  # one-line errors, tracebacks with --verbose
