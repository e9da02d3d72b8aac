"""Figures of the measurements that are not single sweeps: PMI shift (claim 3), gradient
bias (claim 4), cost (claim 6), ranking against binary NCE over several settings (claim 7).

Built like `plots`, from `style`: a `matplotlib.figure.Figure` on the Agg canvas, never
pyplot, with one colour per loss (`style.LOSS_COLORS`), log-only-when-wide y axes
(`style.set_y_scale`) and a band note only with two values or more per point. All take
plain rows (dicts), as the scripts' JSON files hold them; no JAX here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib import figure

from w2v_jax.analysis import style

# Layers without k (one value per V in the cost figure): sweep.REFERENCE_LOSSES, restated
# here because this module does not import JAX.
_NO_K = ("softmax", "softmax_penalty", "hs")

BIAS_METRICS = (
    ("cosine", "cos(mean gradient, softmax gradient)", "linear"),
    ("rel_bias", "‖E g − g*‖ / ‖g*‖ (bias)", "log"),
    ("rel_variance", "E‖g − E g‖² / ‖g*‖² (one draw)", "log"),
)  # (field, y label, scale: "log" where the values span style.LOG_RATIO or more)


def gradient_bias_figure(rows: Sequence[dict]) -> figure.Figure:
    """Cosine, bias and single-draw variance against k: a column per trained state.

    ``rows``: one per (state, loss, k, batch) with the `gradient_bias.BiasStats` fields;
    each line is a loss (mean over held-out batches, min-max band across them).
    """
    states = list(dict.fromkeys(r["state"] for r in rows))
    fig, axes = style.new_figure(4.6 * len(states), 9.4, len(BIAS_METRICS), len(states))
    colors = style.colors(r["loss"] for r in rows)
    sizes = []  # batches per (state, loss, k): the band note
    for col, state in enumerate(states):
        mine = [r for r in rows if r["state"] == state]
        ks = sorted({r["k"] for r in mine})
        for row, (metric, label, scale) in enumerate(BIAS_METRICS):
            ax = axes[row, col]
            drawn = []
            for loss in dict.fromkeys(r["loss"] for r in mine):
                pairs = [(r["k"], r[metric]) for r in mine if r["loss"] == loss]
                groups = style.band(ax, pairs, colors[loss], loss)
                drawn.extend(v for g in groups for v in g)
                sizes.extend(groups)
            style.set_y_scale(ax, drawn, log=scale == "log")
            ax.set_ylabel(label, fontsize="small")
            style.log_k_axis(ax, ks)
        style.set_title(axes[0, col], state, width=40, fontsize="small")
        axes[-1, col].set_xlabel("k (noise samples per example)")
        axes[0, col].legend(fontsize="small")
    note = style.band_note(sizes, "held-out batches")
    if note:
        fig.suptitle(note[0].upper() + note[1:], fontsize="small")
    return fig


def cost_figure(rows: Sequence[dict], k_for_v: int = 5) -> figure.Figure:
    """Step time per pair against V (left) and against k (right), one line per loss.

    ``rows``: `experiments/bench_losses.py`'s rows (``loss``, ``vocab_size``, ``k``, ``dim``,
    ``pairs_per_s``; skipped ones are left out); only the first dim of each loss is drawn.
    Left: at k = ``k_for_v`` (else each loss's smallest k); right: at the largest V where
    the loss ran.
    """
    rows = [{**r, "ns_per_pair": 1e9 / r["pairs_per_s"]} for r in rows if r.get("pairs_per_s")]
    fig, axes = style.new_figure(11.0, 4.2, 1, 2)
    left, right = axes[0, 0], axes[0, 1]
    colors = style.colors(r["loss"] for r in rows)
    ks: set[int] = set()
    for loss, color in colors.items():
        mine = [r for r in rows if r["loss"] == loss]
        dim = mine[0]["dim"]
        mine = [r for r in mine if r["dim"] == dim]
        k0 = min(r["k"] or 0 for r in mine) or None
        k0 = k_for_v if any(r["k"] == k_for_v for r in mine) else k0
        at_k0 = sorted((r["vocab_size"], r["ns_per_pair"]) for r in mine if r["k"] == k0)
        tag = "" if loss in _NO_K else f" (k={k0})"
        left.plot(*zip(*at_k0, strict=True), "o-", color=color, label=f"{loss}{tag}")
        v_max = max(r["vocab_size"] for r in mine)
        at_v = sorted((r["k"], r["ns_per_pair"]) for r in mine if r["vocab_size"] == v_max)
        if loss in _NO_K:
            right.axhline(at_v[0][1], color=color, linestyle="--", label=f"{loss}, V={v_max:,}")
        else:
            right.plot(*zip(*at_v, strict=True), "o-", color=color, label=f"{loss}, V={v_max:,}")
            ks.update(k for k, _ in at_v)
    left.set_xscale("log")
    style.set_y_scale(left, [r["ns_per_pair"] for r in rows])
    left.set_xlabel("vocabulary size V")
    left.set_ylabel("ns per (centre, context) pair")
    style.set_title(left, "step time per pair against V")
    left.grid(True, alpha=0.3)
    left.legend(fontsize="small")
    style.set_y_scale(right, [r["ns_per_pair"] for r in rows])
    style.log_k_axis(right, sorted(ks))
    right.set_ylabel("ns per (centre, context) pair")
    right.set_xlabel("k (noise samples per example)")
    style.set_title(right, "step time per pair against k (each loss's largest V)")
    right.legend(fontsize="small")
    return fig


def pmi_shift_figure(rows: Sequence[dict]) -> figure.Figure:
    """Fitted offsets (unit slope) against k, beside the theory's predictions.

    ``rows``: `experiments/pmi_shift.py`'s rows (``loss``, ``k``, ``pmi.offset``,
    ``log_cond.offset``). Negative sampling against PMI (prediction −log k); NCE against
    log p̂(w|c) (prediction 0). Mean over seeds with a min-max band.
    """
    fig, axes = style.new_figure(6.4, 4.2)
    ax = axes[0, 0]
    neg, nce = style.LOSS_COLORS["neg"], style.LOSS_COLORS["nce"]
    series = (("neg", "pmi", "negative sampling: s − PMI", neg),
              ("nce", "log_cond", "NCE: s − log p̂(w|c)", nce))  # fmt: skip
    sizes = []
    ks = sorted({r["k"] for r in rows})
    for loss, fit, label, color in series:
        pairs = [(r["k"], r[fit]["offset"]) for r in rows if r["loss"] == loss]
        sizes.extend(style.band(ax, pairs, color, label))
    grid = np.geomspace(min(ks), max(ks), 50)
    ax.plot(grid, -np.log(grid), "--", color=neg, alpha=0.6, label="prediction: −log k")
    ax.axhline(0.0, linestyle="--", color=nce, alpha=0.6, label="prediction: 0")
    style.log_k_axis(ax, ks)
    ax.set_xlabel("k (noise samples per example)")
    ax.set_ylabel("offset of learned scores (nats, slope fixed at 1)")
    title = "What the scores learn: PMI − log k (neg), log p(w|c) (NCE)"
    style.set_title(ax, title, style.band_note(sizes))
    ax.legend(fontsize="small")
    return fig


RANKING_METRICS = (
    ("kl_truth", "KL(truth ‖ model) (nats/word)"),
    ("log_z_std", "std of log Z(context) (nats)"),
)  # (summary column, y label): the rows of `ranking_nce_figure`
RANKING_REFERENCES = {"softmax": "--", "softmax_penalty": "-."}  # flat lines, by style


def ranking_nce_figure(rows: Sequence[dict], titles: dict[str, str] | None = None):
    """KL to the truth and the spread of log Z against k, one column per setting.

    ``rows``: one per finished run with ``setting``, ``loss``, ``k`` (None for the
    references), ``kl_truth`` and ``log_z_std``, as `experiments/claim7_ranking_nce.py`
    writes them. Sampled losses are lines (mean over seeds, min-max band); the softmax and
    the penalised softmax are horizontal lines. ``titles`` maps a setting to its title.
    """
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    fig, axes = style.new_figure(4.3 * len(settings), 7.4, len(RANKING_METRICS), len(settings))
    colors = style.colors(r["loss"] for r in rows)
    sizes = []
    for col, setting in enumerate(settings):
        mine = [r for r in rows if r["setting"] == setting]
        ks = sorted({r["k"] for r in mine if r["k"] is not None})
        for row, (metric, label) in enumerate(RANKING_METRICS):
            ax = axes[row, col]
            drawn = []
            for loss in dict.fromkeys(r["loss"] for r in mine):
                values = [r[metric] for r in mine if r["loss"] == loss and r[metric] is not None]
                if loss in RANKING_REFERENCES:
                    if values:
                        ax.axhline(np.mean(values), color=colors[loss],
                                   linestyle=RANKING_REFERENCES[loss], label=loss)  # fmt: skip
                        drawn.append(values)
                    continue
                pairs = [(r["k"], r[metric]) for r in mine if r["loss"] == loss
                         and r["k"] is not None and r[metric] is not None]  # fmt: skip
                groups = style.band(ax, pairs, colors[loss], loss)
                drawn.extend(groups)
                sizes.extend(groups)
            style.set_y_scale(ax, [v for g in drawn for v in g])
            ax.set_ylabel(label, fontsize="small")
            style.log_k_axis(ax, ks)
        style.set_title(axes[0, col], (titles or {}).get(setting, setting), width=42,
                        fontsize="small")  # fmt: skip
        axes[-1, col].set_xlabel("k (noise samples per example)")
    axes[0, 0].legend(fontsize="small")
    note = style.band_note(sizes)
    text = "Binary NCE (nce, Z = 1) against ranking NCE (sampled_softmax, hits kept)"
    fig.suptitle(text + (f"\n({note})" if note else ""), fontsize="medium")
    return fig


TABLE1_COLORS = {"NEG-5": style.PALETTE[2], "NEG-15": style.PALETTE[0],
                 "HS-Huffman": style.PALETTE[3], "NCE-5": style.PALETTE[1]}  # fmt: skip
TABLE1_MARKERS = {0.0: "o", 1e-4: "s", 1e-5: "^"}  # by subsampling threshold


def table1_figure(rows: Sequence[dict], paper: Sequence[dict]) -> figure.Figure:
    """Analogy accuracy against training time, ours (left) and Mikolov et al.'s Table 1
    (right): colour = method, marker = subsampling threshold, hollow = gensim.

    ``rows``: one per run with ``side`` ("ours" or "gensim"), ``method`` (NEG-5, ...),
    ``sample``, ``status``, ``wall_s`` and ``analogy_total`` (a fraction), as
    `experiments/claim2_table1.py` writes them; ``paper``: rows with ``method``,
    ``sample``, ``minutes`` and ``total`` (%).
    """
    fig, axes = style.new_figure(10.5, 4.4, 1, 2)
    ours_ax, paper_ax = axes[0]

    def draw(ax, method, sample, x, y, hollow=False):
        color = TABLE1_COLORS.get(method, style.PALETTE[6])
        ax.scatter([x], [y], s=55, marker=TABLE1_MARKERS.get(sample, "D"),
                   facecolors="none" if hollow else color, edgecolors=color)  # fmt: skip

    for r in rows:
        if r.get("status") == "ok" and r.get("analogy_total") is not None:
            draw(ours_ax, r["method"], r["sample"], r["wall_s"] / 60, 100 * r["analogy_total"],
                 hollow=r["side"] == "gensim")  # fmt: skip
    for r in paper:
        draw(paper_ax, r["method"], r["sample"], r["minutes"], r["total"])
    methods = list(dict.fromkeys([r["method"] for r in paper] + [r["method"] for r in rows]))
    for method in methods:
        ours_ax.scatter([], [], marker="o", color=TABLE1_COLORS.get(method, "k"), label=method)
    for sample, marker in TABLE1_MARKERS.items():
        exp = f"{sample:.0e}".replace("e-0", "e-")
        name = "no subsampling" if sample == 0 else f"subsampling {exp}"
        ours_ax.scatter([], [], marker=marker, color=style.PALETTE[6], label=name)
    ours_ax.scatter([], [], marker="o", facecolors="none", edgecolors="k", label="gensim")
    ours_ax.legend(fontsize="x-small", loc="best")
    ours_ax.set_xlabel("training minutes (this machine, one core per run)")
    paper_ax.set_xlabel("training minutes (the paper's machine)")
    for ax in (ours_ax, paper_ax):
        ax.set_ylabel("analogy accuracy, total (%)")
        ax.grid(True, alpha=0.3)
    style.set_title(ours_ax, "ours: wiki-60m (60M tokens), 100-d, 3 epochs", width=50,
                    fontsize="small")  # fmt: skip
    style.set_title(paper_ax, "Mikolov et al. 2013b, Table 1: 1B words, 300-d", width=50,
                    fontsize="small")  # fmt: skip
    return fig
