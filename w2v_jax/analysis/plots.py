"""Plots of a sweep directory, from its files only (``summary.json``, ``*/metrics.jsonl``).

* `metric_vs_k`: a summary metric against k on a log axis, one line per sampled loss
  (mean over seeds, min-max band), softmax and hs as horizontal reference lines where the
  metric is comparable across losses.
* `convergence`: a logged metric against step and against training seconds, one row of
  panels per loss, one line per k (mean over seeds, min-max band), the reference losses
  overlaid in grey where the metric is comparable across losses.
* `plot_sweep`: every such figure as a PNG under ``DIR/plots/``.

Axis labels name the quantity and its unit (`metric`); a training loss is each loss's own
objective, so no other loss is drawn beside it as a "reference". The band is mentioned
only when there is one (two seeds or more). Colours come from `PALETTE`, colour-blind
safe and readable on white; a y axis is logarithmic only when its values span a factor
of `LOG_RATIO` or more.

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
import textwrap
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
from absl import logging
from matplotlib import figure
from matplotlib.backends import backend_agg

SUMMARY_JSON = "summary.json"
PLOTS_DIR = "plots"
REFERENCES = ("softmax", "hs")  # drawn as horizontal lines in metric-vs-k plots
_REFERENCE_STYLE = {"softmax": "--", "hs": ":"}
# Okabe & Ito's colour-blind-safe palette without its yellow (unreadable on white): blue,
# vermillion, bluish green, reddish purple, orange, sky blue, black.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
LOSS_COLORS = {  # one colour per loss in every figure
    "sampled_softmax": PALETTE[0],
    "nce": PALETTE[1],
    "neg": PALETTE[2],
    "hs": PALETTE[3],
    "softmax": PALETTE[6],
}
LOG_RATIO = 10.0  # a y axis is logarithmic only if max / min over its values reaches this
# Summary columns that are not metrics, or not worth a plot against k.
_NOT_METRICS = re.compile(r"^(point|loss|k|seed|status|steps|error|analogy_coverage|log_z_q\d+)$")
_NOT_CURVES = re.compile(r"(/coverage|/log_z_q\d+|/progress|/lr|/examples|/grad_norm)")


class Metric(NamedTuple):
    """How a metric is shown: ``name`` and ``unit`` make the axis label."""

    name: str  # what it is, in words
    unit: str  # its unit ("" for a pure number)
    scale: float = 1.0  # plotted value = scale * stored value (fractions drawn as %)
    comparable: bool = True  # the same quantity for every loss; False: each loss's objective
    log: bool = False  # a log axis when the values span LOG_RATIO or more

    @property
    def label(self) -> str:
        return f"{self.name} ({self.unit})" if self.unit else self.name


# By column name: a summary column, or a metrics.jsonl key through `column`.
METRICS = {
    "train_loss": Metric("training loss", "nats/example", comparable=False),
    "heldout_loss": Metric("held-out loss", "nats/example", comparable=False),
    "heldout_nll": Metric("held-out NLL", "nats/word"),
    "heldout_ppl": Metric("held-out perplexity", "exp NLL", log=True),
    "heldout_nll_unnormalised": Metric("held-out NLL with Z = 1", "nats/word"),
    "heldout_ppl_unnormalised": Metric("held-out perplexity with Z = 1", "exp NLL", log=True),
    "log_z_mean": Metric("mean log Z(context)", "nats"),
    "log_z_std": Metric("std of log Z(context)", "nats"),
    "kl_truth": Metric("KL(truth ‖ model)", "nats/word"),
    "kl_truth_heldout": Metric("KL(truth ‖ model), held-out", "nats/word"),
    "corr_true_logp": Metric("Pearson r(score, true log p(w|c))", ""),
    "corr_true_pmi": Metric("Pearson r(score, true PMI)", ""),
    "analogy_total": Metric("analogy accuracy", "%", scale=100.0),
    "analogy_semantic": Metric("semantic analogy accuracy", "%", scale=100.0),
    "analogy_syntactic": Metric("syntactic analogy accuracy", "%", scale=100.0),
    "analogy_coverage": Metric("analogy coverage", "%", scale=100.0),
    "words_per_s": Metric("throughput", "words/s", log=True),
    "wall_s": Metric("wall time", "s", log=True),
}
_SIMILARITY = re.compile(r"^similarity_(.+)_spearman$")


def column(key: str) -> str:
    """The summary column of a metrics.jsonl key: ``eval/x/y`` -> ``x_y``,
    ``train/loss`` -> ``train_loss``, ``train/x`` -> ``x``; a column stays as it is."""
    if key == "train/loss":
        return "train_loss"
    return key.removeprefix("eval/").removeprefix("train/").replace("/", "_")


def metric(key: str) -> Metric:
    """How ``key`` (a summary column or a metrics.jsonl key) is labelled and compared."""
    name = column(key)
    if name in METRICS:
        return METRICS[name]
    if similarity := _SIMILARITY.match(name):
        return Metric(f"{similarity.group(1)} similarity", "Spearman ρ")
    return Metric(key, "")


def colors(names: Iterable[str]) -> dict[str, str]:
    """A `PALETTE` colour per name: a loss keeps its `LOSS_COLORS` one, others take the
    palette in order (skipping colours already used), cycling past seven."""
    names = list(dict.fromkeys(names))
    taken = {LOSS_COLORS[n] for n in names if n in LOSS_COLORS}
    free = [c for c in PALETTE if c not in taken] or list(PALETTE)
    out, i = {}, 0
    for n in names:
        if n in LOSS_COLORS:
            out[n] = LOSS_COLORS[n]
        else:
            out[n], i = free[i % len(free)], i + 1
    return out


def set_y_scale(ax, values, log: bool = True) -> None:
    """A log y axis if ``log`` and the positive ``values`` span `LOG_RATIO` or more, else linear."""
    v = _finite(np.ravel(values))
    if log and v.size and v.min() > 0 and v.max() / v.min() >= LOG_RATIO:
        ax.set_yscale("log")
    else:
        ax.set_yscale("linear")


def band_note(groups: Iterable[Sequence], what: str = "seeds") -> str:
    """ "mean over N seeds, min–max band" if any group has 2+ values, else ""."""
    n = max((len(g) for g in groups), default=0)
    return f"mean over {n} {what}, min–max band" if n > 1 else ""


def set_title(ax, text: str, *notes: str, width: int = 60, **kwargs) -> None:
    """``text`` as the axes title wrapped at ``width`` characters, then each non-empty note
    in parentheses on its own line."""
    lines = textwrap.wrap(text, width)
    lines += [line for note in notes if note for line in textwrap.wrap(f"({note})", width)]
    ax.set_title("\n".join(lines), **kwargs)


OWN_OBJECTIVE = "each loss's own objective: not comparable across losses"


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


def metric_vs_k(rows: Sequence[dict], metric_key: str, title: str | None = None) -> figure.Figure:
    """``metric_key`` (a summary column) against k: sampled losses as lines, references flat.

    Only finished points (status ok) are drawn; each line is the mean over seeds, with a
    min-max band when there are two seeds or more. softmax and hs are horizontal lines
    only where the metric is comparable across losses (`Metric.comparable`): a training
    loss is each loss's own objective.
    """
    rows = _ok(rows)
    info = metric(metric_key)
    fig, axes = new_figure(6.4, 4.2)
    ax = axes[0, 0]
    ks = sorted({r["k"] for r in rows if r.get("k") is not None and r["k"] > 0})
    losses = list(dict.fromkeys(r["loss"] for r in rows))
    palette = colors(losses)
    drawn = []  # every group of values on the axes, for the y scale and the band note
    for loss in losses:
        if loss in REFERENCES:
            continue
        values = {k: info.scale * _finite(r.get(metric_key) for r in rows
                                          if r["loss"] == loss and r["k"] == k)
                  for k in ks}  # fmt: skip
        xs = [k for k in ks if values[k].size]
        if xs:
            band(ax, xs, [values[k] for k in xs], palette[loss], loss)
            drawn.extend(values[k] for k in xs)
    for loss in REFERENCES if info.comparable else ():
        v = info.scale * _finite(r.get(metric_key) for r in rows if r["loss"] == loss)
        if v.size:
            color, style = palette.get(loss, LOSS_COLORS[loss]), _REFERENCE_STYLE[loss]
            ax.axhline(v.mean(), color=color, linestyle=style, label=f"{loss} (reference)")
            if v.size > 1:
                ax.axhspan(v.min(), v.max(), color=color, alpha=0.12, linewidth=0)
            drawn.append(v)
    log_k_axis(ax, ks)
    set_y_scale(ax, np.concatenate(drawn) if drawn else [], log=info.log)
    ax.set_xlabel("k (noise samples per example)")
    ax.set_ylabel(info.label)
    own = "" if info.comparable else OWN_OBJECTIVE
    set_title(ax, title or f"{info.name} against k", band_note(drawn), own)
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

    Lines are the mean over seeds (min-max band with two seeds or more), one per k; each
    sampled loss's panels also show the reference losses in grey where the metric is
    comparable across losses (not ``train/loss``: each loss's own objective).
    """
    rows = _ok(rows)
    info = metric(key)
    losses = list(dict.fromkeys(r["loss"] for r in rows))
    fig, axes = new_figure(11.0, 0.4 + 2.8 * max(len(losses), 1), max(len(losses), 1), 2)
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
        palette = colors(f"k={k}" for (_, k), _ in mine)
        for j, (xi, xlabel) in enumerate(((0, "step"), (1, "training seconds"))):
            ax = axes[i, j]
            if loss not in REFERENCES and info.comparable:
                for (ref, _), s in references:
                    style = _REFERENCE_STYLE[ref]
                    y = info.scale * s[2]
                    ax.plot(s[xi], y, color="0.45", linestyle=style, linewidth=1, label=ref)
            for (_, k), s in mine:
                if s is None:
                    continue
                color = LOSS_COLORS.get(loss, PALETTE[0]) if k is None else palette[f"k={k}"]
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
    notes = [n for n in (band_note([range(seeds)]), "" if info.comparable else OWN_OBJECTIVE) if n]
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
