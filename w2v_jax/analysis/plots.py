"""Plots of a sweep directory, from its files only (``summary.json``, ``*/metrics.jsonl``).

* `metric_vs_k`: a summary metric against k on a log axis, one line per sampled loss
  (mean over seeds, min-max band), softmax and hs as horizontal reference lines where the
  metric is comparable across losses.
* `convergence`: a logged metric against step and against training seconds, one row of
  panels per loss, one line per k (mean over seeds, min-max band), the reference losses
  overlaid in grey where the metric is comparable across losses.
* `plot_sweep`: every such figure as a PNG under ``DIR/plots/``.

Axis labels name the quantity and its unit; a training loss is each loss's own objective,
so no other loss is drawn beside it as a "reference". Colours, labels, log axes and the
band note come from `style`.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never pyplot: no
display is needed and a notebook's backend is left alone (a notebook shows a returned
figure with ``display(fig)``). This module does not import JAX.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
from collections.abc import Sequence

import numpy as np
from absl import logging
from matplotlib import figure

from w2v_jax import files
from w2v_jax.analysis import style

SUMMARY_JSON = "summary.json"
PLOTS_DIR = "plots"
REFERENCES = ("softmax", "softmax_penalty", "hs")  # horizontal lines in metric-vs-k plots
_REFERENCE_STYLE = {"softmax": "--", "softmax_penalty": "-.", "hs": ":"}
# Summary columns that are not metrics, or not worth a plot against k.
_NOT_METRICS = re.compile(r"^(point|loss|k|seed|status|steps|error|analogy_coverage|log_z_q\d+)$")
_NOT_CURVES = re.compile(r"(/coverage|/log_z_q\d+|/progress|/lr|/examples|/grad_norm)")


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
        curves[row["point"]] = _add_seconds(files.read_jsonl(path))
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


def _ok(rows: Sequence[dict]) -> list[dict]:
    return [r for r in rows if r.get("status") == "ok"]


def metric_vs_k(rows: Sequence[dict], metric_key: str, title: str | None = None) -> figure.Figure:
    """``metric_key`` (a summary column) against k: sampled losses as lines, references flat.

    Only finished points (status ok) are drawn; each line is the mean over seeds, with a
    min-max band when there are two seeds or more. softmax and hs are horizontal lines
    only where the metric is comparable across losses (`Metric.comparable`): a training
    loss is each loss's own objective.
    """
    rows = _ok(rows)
    info = style.metric(metric_key)
    fig, axes = style.new_figure(6.4, 4.2)
    ax = axes[0, 0]
    ks = sorted({r["k"] for r in rows if r.get("k") is not None and r["k"] > 0})
    losses = list(dict.fromkeys(r["loss"] for r in rows))
    palette = style.colors(losses)
    drawn = []  # every group of values on the axes, for the y scale and the band note
    for loss in losses:
        if loss in REFERENCES:
            continue
        pairs = [(r["k"], info.scale * v) for r in rows if r["loss"] == loss and r["k"] in ks
                 for v in style.finite([r.get(metric_key)])]  # fmt: skip
        drawn.extend(style.band(ax, pairs, palette[loss], loss))
    for loss in REFERENCES if info.comparable else ():
        v = info.scale * style.finite(r.get(metric_key) for r in rows if r["loss"] == loss)
        if v.size:
            color, line = palette.get(loss, style.LOSS_COLORS[loss]), _REFERENCE_STYLE[loss]
            ax.axhline(v.mean(), color=color, linestyle=line, label=f"{loss} (reference)")
            if v.size > 1:
                ax.axhspan(v.min(), v.max(), color=color, alpha=0.12, linewidth=0)
            drawn.append(v)
    style.log_k_axis(ax, ks)
    style.set_y_scale(ax, np.concatenate(drawn) if drawn else [], log=info.log)
    ax.set_xlabel("k (noise samples per example)")
    ax.set_ylabel(info.label)
    own = "" if info.comparable else style.OWN_OBJECTIVE
    style.set_title(ax, title or f"{info.name} against k", style.band_note(drawn), own)
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
        v = style.finite(values)
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

    Lines are the mean over seeds (min-max band with two seeds or more), one per k; each
    sampled loss's panels also show the reference losses in grey where the metric is
    comparable across losses (not ``train/loss``: each loss's own objective).
    """
    rows = _ok(rows)
    info = style.metric(key)
    losses = list(dict.fromkeys(r["loss"] for r in rows))
    fig, axes = style.new_figure(11.0, 0.4 + 2.8 * max(len(losses), 1), max(len(losses), 1), 2)
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
        palette = style.colors(f"k={k}" for (_, k), _ in mine)
        for j, (xi, xlabel) in enumerate(((0, "step"), (1, "training seconds"))):
            ax = axes[i, j]
            if loss not in REFERENCES and info.comparable:
                for (ref, _), s in references:
                    line = _REFERENCE_STYLE[ref]
                    y = info.scale * s[2]
                    ax.plot(s[xi], y, color="0.45", linestyle=line, linewidth=1, label=ref)
            for (_, k), s in mine:
                if s is None:
                    continue
                color = (
                    style.LOSS_COLORS.get(loss, style.PALETTE[0])
                    if k is None
                    else palette[f"k={k}"]
                )
                label = loss if k is None else f"k={k}"
                ax.plot(s[xi], info.scale * s[2], color=color, label=label)
                if (s[3] < s[4]).any():  # two seeds or more
                    low, high = info.scale * s[3], info.scale * s[4]
                    ax.fill_between(s[xi], low, high, color=color, alpha=0.2, linewidth=0)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(info.label, fontsize="small")
            ax.set_title(loss, fontsize="medium")
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize="x-small", ncol=2)
    seeds = max((len(c) for c in groups.values()), default=0)
    notes = [
        n
        for n in (style.band_note([range(seeds)]), "" if info.comparable else style.OWN_OBJECTIVE)
        if n
    ]
    text = f"{info.name} against step and against training seconds"
    fig.suptitle("\n".join([text, *(f"({n})" for n in notes)]))
    return fig


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
    return [
        c for c in columns if not _NOT_METRICS.match(c) and style.finite(r.get(c) for r in ok).size
    ]


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
    for name in summary_metrics(rows):
        paths.append(_save(metric_vs_k(rows, name), out_dir / f"vs_k_{_slug(name)}.png"))
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
