"""Claim 4: the gradient bias of each sampled loss at fixed trained states, against k.

  python experiments/grad_bias.py --out_dir=DIR \
      --run_dirs=runs/claim5_synthetic/softmax_s0,runs/claim5_synthetic/nce_k25_s0 \
      [--ks=1,2,5,10,25,50,100] [--losses=sampled_softmax,nce,neg] [--draws=256] [--batches=4]

For each run folder (any finished run: its ``config.json`` and ``checkpoint/``), take
``--batches`` held-out batches as training makes them (`input_pipeline.heldout_batches`,
`likelihood.batch_examples`, padding dropped, at most ``--max_examples`` examples each)
and, per batch, `gradient_bias.gradient_bias`: over ``--draws`` independent noise draws,
the cosine between each sampled loss's mean gradient and the exact softmax gradient, the
relative bias and the single-draw variance, for every k (common random numbers across k
and losses). Each held-out batch is one estimate; the plot shows the mean over batches
with a min-max band. The state's mean log Z on those examples is recorded beside them:
NCE's expected gradient tends to the softmax's only where the model is self-normalised.
``--accidental_hits=keep`` scores sampled softmax without removing samples equal to the
label: removing them (the usual default, and the run's unless its config says otherwise)
leaves the label's only weight in the normaliser on its own term, so the bias stops
falling, then grows, once k·q(label) is not small.

Writes ``DIR/gradient_bias.json`` (one row per state, loss, k and batch), ``DIR/table.md``
(means over batches) and ``DIR/gradient_bias.png`` (`figures.gradient_bias_figure`).
"""

from __future__ import annotations

import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from absl import flags, logging

from w2v_jax import cli, errors, run_folder
from w2v_jax.analysis import figures, gradient_bias
from w2v_jax.data import input_pipeline
from w2v_jax.evaluation import likelihood
from w2v_jax.model import output_layers

_RUN_DIRS = flags.DEFINE_list("run_dirs", None, "Finished run folders (trained states).")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where the JSON, table and plot go.")
_KS = flags.DEFINE_list("ks", ["1", "2", "5", "10", "25", "50", "100"], "Noise samples k.")
_LOSSES = flags.DEFINE_list("losses", list(output_layers.SAMPLED), "Sampled losses.")
_DRAWS = flags.DEFINE_integer("draws", 256, "Independent noise draws per (loss, k, batch).")
_BATCHES = flags.DEFINE_integer("batches", 4, "Held-out batches (one estimate each).")
_MAX_EXAMPLES = flags.DEFINE_integer("max_examples", 512, "Examples per batch, at most.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the noise draws.")
_HITS = flags.DEFINE_enum(
    "accidental_hits",
    "config",
    ["config", "remove", "keep"],
    "neg and sampled softmax: remove samples equal to the label (as the run's config says, or "
    "force it). Removing them makes sampled softmax inconsistent once k·q(label) is not "
    "small. NCE always keeps them.",
)
flags.mark_flags_as_required(["run_dirs", "out_dir"])


def state_label(config) -> str:
    loss = config.loss.name
    tag = "" if loss in ("softmax", "hs") else f" k={config.loss.k}"
    return f"trained with {loss}{tag}"


def log_z_mean(params: dict, inputs) -> float:
    """Mean over examples of log Σ_v exp(s(v)): 0 where the model is self-normalised."""
    scores = likelihood.scores(params, inputs, loss_name="softmax")  # [E, V], with biases
    return float(np.mean(scipy.special.logsumexp(scores, axis=1)))


def measure_run(run_dir: str, ks: list[int], key: jax.Array) -> list[dict]:
    """The rows of one trained state: every (loss, k, held-out batch)."""
    config, run, dataset, state = run_folder.load_run(run_dir)
    if dataset.heldout is None:
        raise errors.RunFolderError(
            f"{run_dir} has no held-out text; train it with corpus.heldout set"
        )
    params = state.params
    heldout = dataset.heldout
    batches = input_pipeline.heldout_batches(
        run.pipeline, heldout.ids, heldout.offsets, heldout.vocab.counts, _BATCHES.value
    )
    label, rows = state_label(config), []
    for b, batch in enumerate(batches):
        inputs, labels, weights = likelihood.batch_examples(
            params, batch, model=config.model, cbow_mean=config.cbow_mean
        )
        keep = np.flatnonzero(np.asarray(weights) == 1)[: _MAX_EXAMPLES.value]
        inputs, labels = jnp.asarray(inputs)[keep], jnp.asarray(labels)[keep]
        stats = gradient_bias.gradient_bias(
            params,
            inputs,
            labels,
            dataset.train.vocab.counts,
            key=jax.random.fold_in(key, b),
            ks=ks,
            draws=_DRAWS.value,
            losses=_LOSSES.value,
            ns_exponent=config.loss.ns_exponent,
            remove_accidental_hits=(
                config.loss.remove_accidental_hits
                if _HITS.value == "config"
                else _HITS.value == "remove"
            ),
        )
        log_z = log_z_mean(params, inputs)
        for loss, by_k in stats.items():
            for k, s in by_k.items():
                rows.append(
                    {"state": label, "run_dir": str(run_dir), "loss": loss, "k": k, "batch": b,
                     "examples": int(keep.size), "log_z_mean": log_z, **s._asdict()}
                )  # fmt: skip
        logging.info("%s: batch %d (%d examples, log Z %.2f) done", label, b, keep.size, log_z)
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: one line per (state, loss, k), means over the held-out batches."""
    lines = [
        "| state | mean log Z | loss | k | cosine | rel. bias | rel. variance (one draw) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["state"], r["loss"], r["k"]), []).append(r)
    for (state, loss, k), group in groups.items():

        def mean(field, group=group):
            return float(np.mean([r[field] for r in group]))

        lines.append(
            f"| {state} | {mean('log_z_mean'):.2f} | {loss} | {k} | {mean('cosine'):.4f} "
            f"| {mean('rel_bias'):.3g} | {mean('rel_variance'):.3g} |"
        )
    return "\n".join(lines) + "\n"


def main(argv) -> None:
    if len(argv) > 1:
        raise errors.ConfigError(f"unexpected arguments: {argv[1:]}")
    ks = [int(k) for k in _KS.value]
    if _DRAWS.value < 2 or _BATCHES.value < 1 or min(ks) < 1:
        raise errors.ConfigError(
            f"--draws={_DRAWS.value}, --batches={_BATCHES.value}, --ks={','.join(_KS.value)}: "
            "--draws must be >= 2, --batches >= 1 and every k >= 1"
        )
    start = time.perf_counter()
    out_dir = pathlib.Path(_OUT_DIR.value)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = jax.random.PRNGKey(_SEED.value)
    rows = []
    for run_dir in _RUN_DIRS.value:
        rows += measure_run(run_dir, ks, key)
    (out_dir / "gradient_bias.json").write_text(json.dumps(rows, indent=1) + "\n")
    text = table(rows)
    (out_dir / "table.md").write_text(text)
    figures.gradient_bias_figure(rows).savefig(out_dir / "gradient_bias.png", dpi=100)
    print(text)
    # The time the docs state (experiments/README.md, claim 4) is this line's.
    print(f"grad_bias: {len(_RUN_DIRS.value)} state(s) in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    cli.run(main)  # one-line errors, tracebacks with --verbose
