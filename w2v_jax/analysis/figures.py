"""Figures of the measurements that are not sweeps: PMI shift (claim 3), gradient bias
(claim 4), cost (claim 6).

Built like `plots` (a `matplotlib.figure.Figure` on the Agg canvas, never pyplot). Both
take plain rows (dicts), as the scripts' JSON files hold them; no JAX here.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from matplotlib import figure

from w2v_jax.analysis import plots

BIAS_METRICS = (
    ("cosine", "cos(mean gradient, softmax gradient)", "linear"),
    ("rel_bias", "‖E g − g*‖ / ‖g*‖ (bias)", "log"),
    ("rel_variance", "E‖g − E g‖² / ‖g*‖² (one draw)", "log"),
)


def gradient_bias_figure(rows: Sequence[dict]) -> figure.Figure:
    """Cosine, bias and single-draw variance against k: a column per trained state.

    ``rows``: one per (state, loss, k, batch) with the `gradient_bias.BiasStats` fields;
    each line is a loss (mean over held-out batches, min-max band across them).
    """
    states = list(dict.fromkeys(r["state"] for r in rows))
    fig, axes = plots.new_figure(4.6 * len(states), 9.0, len(BIAS_METRICS), len(states))
    for col, state in enumerate(states):
        mine = [r for r in rows if r["state"] == state]
        ks = sorted({r["k"] for r in mine})
        colors = (f"C{i}" for i in itertools.count())
        for loss in dict.fromkeys(r["loss"] for r in mine):
            color = next(colors)
            for row, (metric, label, scale) in enumerate(BIAS_METRICS):
                groups = [
                    [r[metric] for r in mine if r["loss"] == loss and r["k"] == k] for k in ks
                ]
                ax = axes[row, col]
                plots.band(ax, ks, groups, color, loss)
                ax.set_yscale(scale)
                ax.set_ylabel(label, fontsize="small")
        for row in range(len(BIAS_METRICS)):
            plots.log_k_axis(axes[row, col], ks)
        axes[0, col].set_title(state, fontsize="small")
        axes[-1, col].set_xlabel("k (noise samples per example)")
        axes[0, col].legend(fontsize="small")
    return fig


def cost_figure(rows: Sequence[dict], k_for_v: int = 5) -> figure.Figure:
    """Step time per pair against V (left) and against k (right), one line per loss.

    ``rows``: `experiments/bench_losses.py`'s rows (``loss``, ``vocab_size``, ``k``, ``dim``,
    ``pairs_per_s``; skipped ones are left out); only the first dim of each loss is drawn.
    Left: at k = ``k_for_v`` (else each loss's smallest k); right: at the largest V where
    the loss ran.
    """
    rows = [{**r, "ns_per_pair": 1e9 / r["pairs_per_s"]} for r in rows if r.get("pairs_per_s")]
    fig, axes = plots.new_figure(11.0, 4.2, 1, 2)
    left, right = axes[0, 0], axes[0, 1]
    colors = {loss: f"C{i}" for i, loss in enumerate(dict.fromkeys(r["loss"] for r in rows))}
    ks: set[int] = set()
    for loss, color in colors.items():
        mine = [r for r in rows if r["loss"] == loss]
        dim = mine[0]["dim"]
        mine = [r for r in mine if r["dim"] == dim]
        k0 = min(r["k"] or 0 for r in mine) or None
        k0 = k_for_v if any(r["k"] == k_for_v for r in mine) else k0
        at_k0 = sorted((r["vocab_size"], r["ns_per_pair"]) for r in mine if r["k"] == k0)
        tag = "" if loss in ("softmax", "hs") else f" (k={k0})"
        left.plot(*zip(*at_k0, strict=True), "o-", color=color, label=f"{loss}{tag}")
        v_max = max(r["vocab_size"] for r in mine)
        at_v = sorted((r["k"], r["ns_per_pair"]) for r in mine if r["vocab_size"] == v_max)
        if loss in ("softmax", "hs"):
            right.axhline(at_v[0][1], color=color, linestyle="--", label=f"{loss}, V={v_max:,}")
        else:
            right.plot(*zip(*at_v, strict=True), "o-", color=color, label=f"{loss}, V={v_max:,}")
            ks.update(k for k, _ in at_v)
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("vocabulary size V")
    left.set_ylabel("ns per (centre, context) pair")
    left.set_title("step time per pair against V")
    left.grid(True, alpha=0.3)
    left.legend(fontsize="small")
    right.set_yscale("log")
    plots.log_k_axis(right, sorted(ks))
    right.set_xlabel("k (noise samples per example)")
    right.set_title("step time per pair against k (each loss's largest V)")
    right.legend(fontsize="small")
    return fig


def pmi_shift_figure(rows: Sequence[dict]) -> figure.Figure:
    """Fitted offsets (unit slope) against k, beside the theory's predictions.

    ``rows``: `experiments/pmi_shift.py`'s rows (``loss``, ``k``, ``pmi.offset``,
    ``log_cond.offset``). Negative sampling against PMI (prediction −log k); NCE against
    log p̂(w|c) (prediction 0). Mean over seeds with a min-max band.
    """
    fig, axes = plots.new_figure(6.4, 4.2)
    ax = axes[0, 0]
    series = (("neg", "pmi", "negative sampling: s − PMI", "C2"),
              ("nce", "log_cond", "NCE: s − log p̂(w|c)", "C1"))  # fmt: skip
    ks = sorted({r["k"] for r in rows})
    for loss, fit, label, color in series:
        mine = sorted({r["k"] for r in rows if r["loss"] == loss})
        if mine:
            groups = [[r[fit]["offset"] for r in rows if r["loss"] == loss and r["k"] == k]
                      for k in mine]  # fmt: skip
            plots.band(ax, mine, groups, color, label)
    grid = np.geomspace(min(ks), max(ks), 50)
    ax.plot(grid, -np.log(grid), "--", color="C2", alpha=0.6, label="prediction: −log k")
    ax.axhline(0.0, linestyle="--", color="C1", alpha=0.6, label="prediction: 0")
    plots.log_k_axis(ax, ks)
    ax.set_xlabel("k (noise samples per example)")
    ax.set_ylabel("offset of learned scores (slope fixed at 1)")
    ax.set_title("What the scores learn: PMI − log k (neg), log p(w|c) (NCE)")
    ax.legend(fontsize="small")
    return fig
