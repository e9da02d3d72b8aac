"""Regenerate every plot of a sweep directory from its files (no training, no JAX).

  python experiments/plot.py --sweep_dir=/tmp/sweep_ptb

Reads ``summary.json`` and each point's ``metrics.jsonl``; writes ``plots/*.png``
(or ``--out_dir``): ``vs_k_<metric>.png`` and ``convergence_<metric>.png``.
"""

from __future__ import annotations

from absl import app, flags, logging

from w2v_jax.analysis import plots

_SWEEP_DIR = flags.DEFINE_string("sweep_dir", None, "A directory written by sweep_k.py.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where to write the PNGs (default DIR/plots).")
_TABLES = flags.DEFINE_list(
    "tables", [], "Summary columns to print as markdown tables (loss x k, seed mean [min-max])."
)
flags.mark_flag_as_required("sweep_dir")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    for path in plots.plot_sweep(_SWEEP_DIR.value, _OUT_DIR.value):
        print(path)
    rows = plots.read_summary(_SWEEP_DIR.value)
    for metric in _TABLES.value:
        print(f"\n{metric}\n\n{plots.metric_table(rows, metric)}")


if __name__ == "__main__":
    app.run(main)
