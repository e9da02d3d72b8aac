"""Plots of a sweep directory, from its files only (``summary.json``, ``*/metrics.jsonl``).

* `metric_vs_k`: a summary metric against k on a log axis, one line per sampled loss
  (mean over seeds, min-max band), softmax and hs as horizontal reference lines (mean
  over seeds, min-max band).
* `convergence`: a logged metric against step and against training seconds, one row of
  panels per loss, one line per k (mean over seeds, min-max band), the reference losses
  overlaid in grey.
* `plot_sweep`: every such figure as a PNG under ``DIR/plots/``.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never pyplot: no
display is needed and a notebook's backend is left alone (a notebook shows a returned
figure with ``display(fig)``). This module does not import JAX.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import pathlib
import re
from collections.abc import Sequence

import matplotlib
import numpy as np
from absl import logging
from matplotlib import figure
from matplotlib.backends import backend_agg

SUMMARY_JSON = "summary.json"
PLOTS_DIR = "plots"
REFERENCES = ("softmax", "hs")  # drawn as horizontal lines in metric-vs-k plots
_REFERENCE_STYLE = {"softmax": "--", "hs": ":"}
# Summary columns that are not metrics, or not worth a plot against k.
_NOT_METRICS = re.compile(r"^(point|loss|k|seed|status|steps|error|analogy_coverage|log_z_q\d+)$")
_NOT_CURVES = re.compile(r"(/coverage|/log_z_q\d+|/progress|/lr|/examples|/grad_norm)")
_LOG_Y = ("wall_s", "words_per_s", "train/words_per_s", "heldout_ppl", "heldout_ppl_unnormalised")


def read_summary(sweep_dir: str | os.PathLike) -> list[dict]:
    """The rows of ``sweep_dir/summary.json``."""
    return json.loads((pathlib.Path(sweep_dir) / SUMMARY_JSON).read_text())["rows"]


def read_curves(sweep_dir: str | os.PathLike, rows: Sequence[dict]) -> dict[str, list[dict]]:
    """Each point's metrics.jsonl rows, keyed by point name, with ``seconds`` added.

    ``seconds`` is the training time at that row: ``train/elapsed_s`` made cumulative
    across resumes (the meter restarts at each one) and interpolated over steps for rows
    that lack it (an evaluation between log steps).
    """
    curves = {}
    for row in rows:
        path = pathlib.Path(sweep_dir) / row["point"] / "metrics.jsonl"
        if not path.exists():
            continue
        logged = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        curves[row["point"]] = _add_seconds(logged)
    return curves


def _add_seconds(logged: list[dict]) -> list[dict]:
    steps, seconds, offset, previous = [], [], 0.0, 0.0
    for r in logged:
        if "train/elapsed_s" in r:
            if r["train/elapsed_s"] < previous:  # a resumed run's meter restarted
                offset += previous
            previous = r["train/elapsed_s"]
            steps.append(r["step"])
            seconds.append(offset + previous)
    out = []
    for r in logged:
        t = float(np.interp(r["step"], steps, seconds)) if steps else math.nan
        out.append({**r, "seconds": t})
    return out


def _finite(values) -> np.ndarray:
    a = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    return a[np.isfinite(a)]


def _ok(rows: Sequence[dict]) -> list[dict]:
    return [r for r in rows if r.get("status") == "ok"]


def new_figure(width: float, height: float, rows: int = 1, cols: int = 1):
    """A constrained-layout Figure on the Agg canvas and its [rows, cols] axes."""
    fig = figure.Figure(figsize=(width, height), layout="constrained")
    backend_agg.FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def band(ax, xs, groups, color, label, style="o-") -> None:
    """A mean line with a min-max band; ``groups`` holds one array of values per x."""
    ax.plot(xs, [np.mean(g) for g in groups], style, color=color, label=label)
    if any(len(g) > 1 for g in groups):
        lows, highs = [np.min(g) for g in groups], [np.max(g) for g in groups]
        ax.fill_between(xs, lows, highs, color=color, alpha=0.2, linewidth=0)


def log_k_axis(ax, ks) -> None:
    """A log x axis ticked at exactly the k values, with a grid."""
    ax.set_xscale("log")
    if ks:
        ax.set_xlim(min(ks) / 1.3, max(ks) * 1.3)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
    ax.grid(True, alpha=0.3)


def metric_vs_k(rows: Sequence[dict], metric: str, title: str | None = None) -> figure.Figure:
    """``metric`` (a summary column) against k: sampled losses as lines, references as bands.

    Only finished points (status ok) are drawn; each line is the mean over seeds with a
    min-max band.
    """
    rows = _ok(rows)
    fig, axes = new_figure(6.4, 4.2)
    ax = axes[0, 0]
    ks = sorted({r["k"] for r in rows if r.get("k") is not None and r["k"] > 0})
    colors = (f"C{i % 10}" for i in itertools.count())
    for loss in dict.fromkeys(r["loss"] for r in rows if r.get("k") is not None):
        values = {k: _finite(r.get(metric) for r in rows if r["loss"] == loss and r["k"] == k)
                  for k in ks}  # fmt: skip
        xs = [k for k in ks if values[k].size]
        if xs:
            band(ax, xs, [values[k] for k in xs], next(colors), loss)
    for loss in REFERENCES:
        v = _finite(r.get(metric) for r in rows if r["loss"] == loss)
        if v.size:
            color, style = next(colors), _REFERENCE_STYLE[loss]
            ax.axhline(v.mean(), color=color, linestyle=style, label=f"{loss} (reference)")
            ax.axhspan(v.min(), v.max(), color=color, alpha=0.12, linewidth=0)
    log_k_axis(ax, ks)
    if metric in _LOG_Y:
        ax.set_yscale("log")
    ax.set_xlabel("k (noise samples per example)")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} against k (mean over seeds, min-max band)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    return fig


def metric_table(rows: Sequence[dict], metric: str, digits: int = 3) -> str:
    """A markdown table of ``metric``: one row per loss, one column per k, cells
    "mean [min–max]" over seeds of the finished points (references in a "—" column)."""
    rows = _ok(rows)
    ks = sorted({r["k"] for r in rows if r.get("k") is not None and r["k"] > 0})
    losses = list(dict.fromkeys(r["loss"] for r in rows))

    def cell(values) -> str:
        v = _finite(values)
        if not v.size:
            return ""
        if v.size == 1 or v.min() == v.max():
            return f"{v.mean():.{digits}f}"
        return f"{v.mean():.{digits}f} [{v.min():.{digits}f}–{v.max():.{digits}f}]"

    head = ["loss"] + ["—" if not ks else "k = —"] + [f"k = {k}" for k in ks]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for loss in losses:
        mine = [r for r in rows if r["loss"] == loss]
        if loss in REFERENCES:
            cells = [cell(r.get(metric) for r in mine)] + [""] * len(ks)
        else:
            cells = [""] + [cell(r.get(metric) for r in mine if r.get("k") == k) for k in ks]
        lines.append("| " + " | ".join([loss, *cells]) + " |")
    return "\n".join(lines) + "\n"


def _group_curve(curves: Sequence[list[dict]], key: str):
    """Mean / min / max of ``key`` over seeds at the steps they share, and mean seconds."""
    per_seed = [
        {r["step"]: (r[key], r["seconds"]) for r in c if _is_num(r.get(key))} for c in curves
    ]
    per_seed = [s for s in per_seed if s]
    if not per_seed:
        return None
    steps = sorted(set.intersection(*(set(s) for s in per_seed)))
    if not steps:
        return None
    values = np.array([[s[t][0] for t in steps] for s in per_seed], dtype=np.float64)
    seconds = np.array([[s[t][1] for t in steps] for s in per_seed], dtype=np.float64)
    return np.array(steps), seconds.mean(0), values.mean(0), values.min(0), values.max(0)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def convergence(
    rows: Sequence[dict], curves: dict[str, list[dict]], key: str = "train/loss"
) -> figure.Figure:
    """``key`` (a metrics.jsonl key) against step and against seconds, one panel row per loss.

    Lines are the mean over seeds (min-max band), one per k; each sampled loss's panels
    also show the reference losses in grey for comparison.
    """
    rows = _ok(rows)
    losses = list(dict.fromkeys(r["loss"] for r in rows))
    fig, axes = new_figure(11.0, 2.8 * max(len(losses), 1), max(len(losses), 1), 2)
    groups = {}
    for r in rows:
        if r["point"] in curves:
            groups.setdefault((r["loss"], r["k"]), []).append(curves[r["point"]])
    stats = {g: _group_curve(c, key) for g, c in groups.items()}
    references = [(g, s) for g, s in stats.items() if s is not None and g[0] in REFERENCES]
    for i, loss in enumerate(losses):
        ks = sorted(k for (name, k) in stats if name == loss and k is not None)
        mine = [((loss, k), stats[(loss, k)]) for k in ks] or [
            ((loss, None), stats.get((loss, None)))
        ]
        for j, (xi, xlabel) in enumerate(((0, "step"), (1, "training seconds"))):
            ax = axes[i, j]
            if loss not in REFERENCES:
                for (ref, _), s in references:
                    style = _REFERENCE_STYLE[ref]
                    ax.plot(s[xi], s[2], color="0.5", linestyle=style, linewidth=1, label=ref)
            for n, ((_, k), s) in enumerate(mine):
                if s is None:
                    continue
                color = _ramp(n, len(mine))
                label = loss if k is None else f"k={k}"
                ax.plot(s[xi], s[2], color=color, label=label)
                ax.fill_between(s[xi], s[3], s[4], color=color, alpha=0.2, linewidth=0)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(key)
            ax.set_title(f"{loss}: {key} against {xlabel}", fontsize="medium")
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize="x-small", ncol=2)
    return fig


def _ramp(n: int, total: int) -> tuple:
    return matplotlib.colormaps["viridis"](0.1 + 0.8 * n / max(total - 1, 1))


def curve_keys(curves: dict[str, list[dict]]) -> list[str]:
    """The logged keys worth a convergence plot: train/loss and eval/* seen at >= 2 steps."""
    seen = {}
    for logged in curves.values():
        for r in logged:
            for key, v in r.items():
                if (key == "train/loss" or key.startswith("eval/")) and _is_num(v):
                    seen.setdefault(key, set()).add(r["step"])
    keys = [k for k, steps in seen.items() if len(steps) >= 2 and not _NOT_CURVES.search(k)]
    return sorted(keys, key=lambda k: (k != "train/loss", k))


def summary_metrics(rows: Sequence[dict]) -> list[str]:
    """The summary columns with at least one finite value among finished points."""
    ok = _ok(rows)
    columns = dict.fromkeys(k for r in ok for k in r)
    return [c for c in columns if not _NOT_METRICS.match(c) and _finite(r.get(c) for r in ok).size]


def plot_sweep(sweep_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list:
    """Writes every metric-vs-k and convergence plot of a sweep as PNGs; returns the paths.

    Reads only ``summary.json`` and the points' ``metrics.jsonl``; writes to
    ``sweep_dir/plots`` unless ``out_dir`` is given.
    """
    sweep_dir = pathlib.Path(sweep_dir)
    out_dir = pathlib.Path(out_dir) if out_dir else sweep_dir / PLOTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = read_summary(sweep_dir)
    paths = []
    for metric in summary_metrics(rows):
        paths.append(_save(metric_vs_k(rows, metric), out_dir / f"vs_k_{_slug(metric)}.png"))
    curves = read_curves(sweep_dir, _ok(rows))
    for key in curve_keys(curves):
        fig = convergence(rows, curves, key)
        paths.append(_save(fig, out_dir / f"convergence_{_slug(key)}.png"))
    logging.info("wrote %d plots to %s", len(paths), out_dir)
    return paths


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _save(fig: figure.Figure, path: pathlib.Path) -> pathlib.Path:
    fig.savefig(path, dpi=100)
    return path
