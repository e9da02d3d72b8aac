"""Regenerate plots from the files a measurement wrote (no training, no JAX).

  python experiments/plot.py --sweep_dir=/tmp/sweep_ptb
  python experiments/plot.py --figure_json=experiments/results/claim3_synthetic/pmi_shift.json

``--sweep_dir``: reads ``summary.json`` and each point's ``metrics.jsonl``; writes
``plots/*.png`` (or ``--out_dir``): ``vs_k_<metric>.png`` and ``convergence_<metric>.png``.
``--figure_json``: redraws the figure of a ``pmi_shift.json`` (experiments/pmi_shift.py) or
a ``gradient_bias*.json`` (experiments/grad_bias.py) as the PNG of the same name beside it
(or under ``--out_dir``). The cost figure is redrawn by ``bench_losses.py --plot_from``.
"""

from __future__ import annotations

import json
import pathlib

from absl import app, flags, logging

from w2v_jax import cli
from w2v_jax.analysis import figures, plots

_SWEEP_DIR = flags.DEFINE_string("sweep_dir", None, "A directory written by sweep_k.py.")
_FIGURE_JSON = flags.DEFINE_list(
    "figure_json", [], "pmi_shift.json or gradient_bias*.json files to redraw as PNGs."
)
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where to write the PNGs (default: see above).")
_TABLES = flags.DEFINE_list(
    "tables", [], "Summary columns to print as markdown tables (loss x k, seed mean [min-max])."
)
FIGURES = {"pmi_shift": figures.pmi_shift_figure, "gradient_bias": figures.gradient_bias_figure}


def redraw(path: pathlib.Path, out_dir: pathlib.Path | None) -> pathlib.Path:
    """Writes the figure of one measurement's JSON rows as ``<stem>.png``; returns its path."""
    kind = next((name for name in FIGURES if path.stem.startswith(name)), None)
    if kind is None:
        raise app.UsageError(
            f"--figure_json={path}: the file name must start with one of {sorted(FIGURES)}"
        )
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise app.UsageError(f"--figure_json={path}: not a readable JSON file ({e})") from e
    out = (out_dir or path.parent) / f"{path.stem}.png"
    FIGURES[kind](rows).savefig(out, dpi=100)
    return out


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not (_SWEEP_DIR.value or _FIGURE_JSON.value):
        raise app.UsageError("give --sweep_dir=DIR or --figure_json=FILE.json")
    logging.set_verbosity(logging.INFO)
    out_dir = pathlib.Path(_OUT_DIR.value) if _OUT_DIR.value else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    for path in _FIGURE_JSON.value:
        print(redraw(pathlib.Path(path), out_dir))
    if not _SWEEP_DIR.value:
        return
    for path in plots.plot_sweep(_SWEEP_DIR.value, _OUT_DIR.value):
        print(path)
    rows = plots.read_summary(_SWEEP_DIR.value)
    for metric in _TABLES.value:
        print(f"\n{metric}\n\n{plots.metric_table(rows, metric)}")


if __name__ == "__main__":
    cli.run(main)  # one-line errors, tracebacks with --verbose
