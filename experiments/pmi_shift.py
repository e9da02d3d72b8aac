"""Claim 3 (Levy & Goldberg 2014): the PMI shift of every neg / NCE point of a sweep.

  python experiments/pmi_shift.py --sweep_dir=DIR [--min_count=10]

For each finished point whose loss is ``neg`` or ``nce``: rebuild its training corpus from
its ``config.json``, count the training pairs with the same window rule
(`pmi_shift.count_pairs`), read the parameters from its ``checkpoint/`` and fit the learned
scores of the pairs seen at least ``--min_count`` times (`pmi_shift.pmi_shift`). Prints one
markdown table and writes ``DIR/pmi_shift.json`` and ``DIR/pmi_shift.png`` (offsets
against k beside the predictions, `figures.pmi_shift_figure`). Negative sampling
predicts a unit slope against PMI with offset −log k (exactly: against
log p̂(w|c) − log q(w)); NCE predicts scores = log p̂(w|c) (offset 0). Compare only runs
trained with ``sample=0``: subsampling changes the pair distribution the counts describe.
"""

from __future__ import annotations

import json
import math
import pathlib

from absl import app, flags, logging

from w2v_jax import cli, run_folder
from w2v_jax.analysis import figures, plots, pmi_shift
from w2v_jax.model import output_layers

_SWEEP_DIR = flags.DEFINE_string("sweep_dir", None, "A directory written by sweep_k.py.")
_MIN_COUNT = flags.DEFINE_float("min_count", 10.0, "Fit only pairs seen this many times.")
flags.mark_flag_as_required("sweep_dir")

LOSSES = ("neg", "nce")


def point_shift(point_dir: pathlib.Path, min_count: float) -> dict:
    """The PMI-shift fits of one finished run folder."""
    config, run, dataset, state = run_folder.load_run(point_dir)
    corpus = dataset.train
    vocab_size = len(corpus.vocab)
    pairs = pmi_shift.count_pairs(
        corpus.ids,
        corpus.offsets,
        vocab_size,
        window=config.window,
        dynamic_window=config.dynamic_window,
        left_only=config.left_only,
    )
    aux = output_layers.constants_for(run.step.loss, corpus.vocab.counts, run.loop.ns_exponent)
    shift = pmi_shift.pmi_shift(
        pairs,
        state.params,
        min_count=min_count,
        k=config.loss.k,
        log_q=aux.log_q,
        loss_name=config.loss.name,
        aux=aux,
    )
    return {
        "loss": config.loss.name,
        "k": config.loss.k,
        "sample": config.sample,
        "pairs": shift.num_pairs,
        "minus_log_k": -math.log(config.loss.k),
        "pmi": shift.pmi._asdict(),
        "log_cond": shift.log_cond._asdict(),
        "log_ratio": None if shift.log_ratio is None else shift.log_ratio._asdict(),
    }


def table(rows: list[dict]) -> str:
    head = (
        "| loss | k | seed runs | −log k | vs PMI: slope | offset (slope 1) | r "
        "| vs log p̂(w\\|c): offset | vs log p̂(w\\|c) − log q(w): offset |"
    )
    lines = [head, "|" + " --- |" * 9]
    for (loss, k), group in sorted(_groups(rows).items()):

        def mean(get, group=group):
            return sum(get(r) for r in group) / len(group)

        lines.append(
            f"| {loss} | {k} | {len(group)} | {-math.log(k):.2f} "
            f"| {mean(lambda r: r['pmi']['slope']):.2f} "
            f"| {mean(lambda r: r['pmi']['offset']):.2f} "
            f"| {mean(lambda r: r['pmi']['pearson']):.2f} "
            f"| {mean(lambda r: r['log_cond']['offset']):.2f} "
            f"| {mean(lambda r: r['log_ratio']['offset']):.2f} |"
        )
    return "\n".join(lines) + "\n"


def _groups(rows: list[dict]) -> dict:
    out: dict = {}
    for row in rows:
        out.setdefault((row["loss"], row["k"]), []).append(row)
    return out


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    sweep_dir = pathlib.Path(_SWEEP_DIR.value)
    rows = []
    for summary in plots.read_summary(sweep_dir):
        if summary.get("status") != "ok" or summary.get("loss") not in LOSSES:
            continue
        logging.info("PMI shift of %s", summary["point"])
        row = point_shift(sweep_dir / summary["point"], _MIN_COUNT.value)
        rows.append({"point": summary["point"], "seed": summary.get("seed"), **row})
    (sweep_dir / "pmi_shift.json").write_text(json.dumps(rows, indent=1) + "\n")
    if rows:
        fig = figures.pmi_shift_figure(rows)
        fig.savefig(sweep_dir / "pmi_shift.png", dpi=100)
    print(table(rows))


if __name__ == "__main__":
    cli.run(main)  # one-line errors, tracebacks with --verbose
