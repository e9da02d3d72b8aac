"""How every figure of the study looks: one colour per loss from a colour-blind-safe
palette, metric labels with their units, log axes only over wide ranges, wrapped titles,
min-max bands mentioned only when there is one, and figures on the Agg canvas.

Used by `plots` (sweep figures) and `figures` (PMI shift, gradient bias, cost). Figures
are `matplotlib.figure.Figure` on the Agg canvas, never pyplot: no display is needed and a
notebook's backend is left alone. This module does not import JAX.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
from matplotlib import figure
from matplotlib.backends import backend_agg

# Okabe & Ito's colour-blind-safe palette without its yellow (unreadable on white): blue,
# vermillion, bluish green, reddish purple, orange, sky blue, black.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
LOSS_COLORS = {  # one colour per loss in every figure
    "sampled_softmax": PALETTE[0],
    "nce": PALETTE[1],
    "neg": PALETTE[2],
    "hs": PALETTE[3],
    "softmax": PALETTE[6],
    "softmax_penalty": PALETTE[4],
}
LOG_RATIO = 10.0  # a y axis is logarithmic only if max / min over its values reaches this


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
    v = finite(np.ravel(values))
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


def finite(values) -> np.ndarray:
    a = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    return a[np.isfinite(a)]


def new_figure(width: float, height: float, rows: int = 1, cols: int = 1):
    """A constrained-layout Figure on the Agg canvas and its [rows, cols] axes."""
    fig = figure.Figure(figsize=(width, height), layout="constrained")
    backend_agg.FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def band(ax, pairs, color, label) -> list[list]:
    """A mean line over x with a min-max band, from ``pairs`` of (x, value); returns the
    values drawn, one list per x (ascending; nothing is drawn without pairs)."""
    by_x: dict = {}
    for x, value in sorted(pairs, key=lambda pair: pair[0]):
        by_x.setdefault(x, []).append(value)
    xs, groups = list(by_x), list(by_x.values())
    if groups:
        ax.plot(xs, [np.mean(g) for g in groups], "o-", color=color, label=label)
    if any(len(g) > 1 for g in groups):
        lows, highs = [np.min(g) for g in groups], [np.max(g) for g in groups]
        ax.fill_between(xs, lows, highs, color=color, alpha=0.2, linewidth=0)
    return groups


def log_k_axis(ax, ks) -> None:
    """A log x axis ticked at exactly the k values, with a grid."""
    ax.set_xscale("log")
    if ks:
        ax.set_xlim(min(ks) / 1.3, max(ks) * 1.3)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
    ax.grid(True, alpha=0.3)
