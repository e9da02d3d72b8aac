"""The figures say what they show: units, bands only with seeds, comparable references,
readable colours, sensible axes, titles inside the figure (built from rows, no training)."""

import colorsys
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from matplotlib import colors as mcolors
from matplotlib import layout_engine

from w2v_jax.analysis import figures, plots, style

ROOT = pathlib.Path(__file__).resolve().parents[1]
KS = (1, 5, 25, 100)


def _rows(seeds=(0,), losses=("neg", "nce"), references=("softmax", "hs")):
    """Summary rows of a made-up sweep: metric values that depend on loss, k and seed."""
    rows = []
    for seed in seeds:
        for i, loss in enumerate(losses):
            for k in KS:
                rows.append(_row(f"{loss}_k{k}_s{seed}", loss, k, seed, 1.0 + i + 0.1 * k))
        for loss in references:
            rows.append(_row(f"{loss}_s{seed}", loss, None, seed, 0.5))
    return rows


def _row(point, loss, k, seed, x):
    return {
        "point": point, "loss": loss, "k": k, "seed": seed, "status": "ok", "steps": 10,
        "wall_s": 10.0 + seed, "words_per_s": 1e5 * (1 + 0.01 * x + 0.001 * seed),
        "train_loss": x + 0.01 * seed, "heldout_loss": x, "heldout_nll": 5 + x / 10,
        "heldout_ppl": 150.0 * x, "log_z_mean": x, "kl_truth": 0.1 * x,
        "analogy_total": 0.01 * x, "similarity_wordsim353_spearman": 0.1 * x,
    }  # fmt: skip


def _curves(rows):
    """Three logged rows per point: train/loss and eval/heldout_nll falling with the step."""
    return {
        r["point"]: [
            {"step": s, "seconds": float(s), "train/loss": r["train_loss"] / s,
             "eval/heldout_nll": r["heldout_nll"] / s}
            for s in (1, 2, 3)
        ]
        for r in rows
    }  # fmt: skip


def _all_text(fig) -> str:
    texts = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
    return "\n".join(texts)


def _line_labels(ax) -> list[str]:
    return [line.get_label() for line in ax.get_lines()]


def _has_band(fig) -> bool:
    return any(ax.collections for ax in fig.axes)


def test_band_is_mentioned_and_drawn_only_with_two_seeds_or_more():
    one, two = _rows(seeds=(0,)), _rows(seeds=(0, 1))
    fig = plots.metric_vs_k(one, "train_loss")
    assert "band" not in _all_text(fig) and "seeds" not in _all_text(fig)
    assert not _has_band(fig)
    fig = plots.metric_vs_k(two, "train_loss")
    assert "mean over 2 seeds, min–max band" in fig.axes[0].get_title()
    assert _has_band(fig)
    fig = plots.convergence(one, _curves(one), "train/loss")
    assert "band" not in _all_text(fig) and not _has_band(fig)
    fig = plots.convergence(two, _curves(two), "train/loss")
    assert "mean over 2 seeds, min–max band" in fig.get_suptitle()
    assert style.band_note([[1.0], [2.0]]) == ""
    assert style.band_note([[1.0], [2.0, 3.0, 4.0]], "batches") == (
        "mean over 3 batches, min–max band"
    )


def test_no_reference_beside_a_training_loss():
    """A training loss is each loss's own objective: softmax's is no reference for neg's."""
    rows = _rows(seeds=(0, 1))
    curves = _curves(rows)
    fig = plots.convergence(rows, curves, "train/loss")
    for ax in fig.axes:
        if ax.get_title() in ("neg", "nce"):
            assert not {"softmax", "hs"} & set(_line_labels(ax)), ax.get_title()
    assert "not comparable across losses" in fig.get_suptitle()
    fig = plots.convergence(rows, curves, "eval/heldout_nll")  # the same quantity for all
    neg_axes = [ax for ax in fig.axes if ax.get_title() == "neg"]
    assert len(neg_axes) == 2
    assert all({"softmax", "hs"} <= set(_line_labels(ax)) for ax in neg_axes)
    for name in ("train_loss", "heldout_loss"):
        labels = _line_labels(plots.metric_vs_k(rows, name).axes[0])
        assert not any("reference" in label for label in labels), name
    for name in ("heldout_nll", "heldout_ppl", "kl_truth", "analogy_total", "words_per_s"):
        labels = _line_labels(plots.metric_vs_k(rows, name).axes[0])
        assert {"softmax (reference)", "hs (reference)"} <= set(labels), name


@pytest.mark.parametrize(
    "key, unit",
    [
        ("train_loss", "nats"),
        ("train/loss", "nats"),
        ("heldout_nll", "nats"),
        ("eval/kl_truth", "nats"),
        ("log_z_mean", "nats"),
        ("analogy_total", "%"),
        ("eval/analogy_total", "%"),
        ("words_per_s", "words/s"),
        ("train/words_per_s", "words/s"),
        ("wall_s", "(s)"),
        ("similarity_wordsim353_spearman", "Spearman ρ"),
        ("eval/similarity/wordsim353/spearman", "Spearman ρ"),
    ],
)
def test_labels_name_the_quantity_and_its_unit(key, unit):
    label = style.metric(key).label
    assert unit in label and key not in label


def test_axes_show_labels_with_units_and_percentages():
    rows = _rows()
    for name in ("train_loss", "heldout_nll", "analogy_total", "words_per_s"):
        ax = plots.metric_vs_k(rows, name).axes[0]
        assert ax.get_ylabel() == style.metric(name).label
        assert "(" in ax.get_ylabel() and name not in ax.get_ylabel()
    ax = plots.metric_vs_k(rows, "analogy_total").axes[0]
    neg = next(line for line in ax.get_lines() if line.get_label() == "neg")
    expected = [100 * r["analogy_total"] for r in rows if r["loss"] == "neg"]
    np.testing.assert_allclose(neg.get_ydata(), expected)  # fractions drawn as %
    fig = plots.convergence(rows, _curves(rows), "eval/heldout_nll")
    assert all(ax.get_ylabel() == "held-out NLL (nats/word)" for ax in fig.axes)


def test_log_axis_only_over_a_wide_range():
    rows = _rows()  # words_per_s spans about 1%, heldout_ppl a factor of ~15
    assert plots.metric_vs_k(rows, "words_per_s").axes[0].get_yscale() == "linear"
    assert plots.metric_vs_k(rows, "heldout_ppl").axes[0].get_yscale() == "log"
    assert plots.metric_vs_k(rows, "train_loss").axes[0].get_yscale() == "linear"
    fig, axes = style.new_figure(3, 3)
    style.set_y_scale(axes[0, 0], [100.0, 103.0])
    assert axes[0, 0].get_yscale() == "linear"
    style.set_y_scale(axes[0, 0], [1.0, 10.0])
    assert axes[0, 0].get_yscale() == "log"
    style.set_y_scale(axes[0, 0], [-1.0, 10.0])  # not all positive
    assert axes[0, 0].get_yscale() == "linear"


def _bias_rows():
    rows = []
    for state in ("trained with softmax", "trained with a much longer state name, nce k=25"):
        for loss in ("sampled_softmax", "nce", "neg"):
            for k in KS:
                for batch in range(2):
                    v = (1 + batch) / k
                    rows.append({"state": state, "loss": loss, "k": k, "batch": batch,
                                 "cosine": 1 - v, "rel_bias": v, "rel_variance": v**2})  # fmt: skip
    return rows


def _cost_rows():
    rows = []
    for loss in ("softmax", "sampled_softmax", "nce", "neg", "hs"):
        for v in (10_000, 100_000):
            for k in (None,) if loss in ("softmax", "hs") else (1, 5, 25):
                speed = 1e6 / (v if loss == "softmax" else (k or 10))
                rows.append({"loss": loss, "vocab_size": v, "k": k, "dim": 100,
                             "pairs_per_s": speed})  # fmt: skip
    return rows


def _pmi_rows(seeds=(0, 1)):
    return [
        {"loss": loss, "k": k, "seed": s, "pmi": {"offset": -np.log(k) + 0.01 * s},
         "log_cond": {"offset": 0.01 * s}}
        for loss in ("neg", "nce") for k in KS for s in seeds
    ]  # fmt: skip


def _every_figure():
    rows = _rows(seeds=(0, 1), losses=("sampled_softmax", "nce", "neg", "other"))
    many_ks = [
        {**r, "point": f"{r['point']}_{k}", "k": k}
        for r in rows
        if r["k"] == 1
        for k in (1, 2, 5, 10, 25, 50, 100, 200)
    ] + [r for r in rows if r["k"] is None]
    yield "vs_k", plots.metric_vs_k(rows, "similarity_wordsim353_spearman")
    yield "vs_k_long", plots.metric_vs_k(rows, "heldout_loss")
    yield "convergence", plots.convergence(many_ks, _curves(many_ks), "eval/heldout_nll")
    yield "gradient_bias", figures.gradient_bias_figure(_bias_rows())
    yield "cost", figures.cost_figure(_cost_rows())
    yield "pmi_shift", figures.pmi_shift_figure(_pmi_rows())
    yield "table1", figures.table1_figure(_table1_rows(), _table1_paper())


def _table1_rows():
    return [
        {"side": side, "method": m, "sample": s, "status": "ok", "wall_s": 600.0 * (i + 1),
         "analogy_total": 0.4 + 0.02 * i}
        for i, (side, m, s) in enumerate([("ours", "NEG-5", 0.0), ("ours", "HS-Huffman", 1e-5),
                                          ("ours", "NEG-15", 1e-5), ("gensim", "NEG-5", 1e-4)])
    ] + [{"side": "ours", "method": "NCE-5", "sample": 0.0, "status": "not run",
          "wall_s": None, "analogy_total": None}]  # fmt: skip


def _table1_paper():
    return [{"method": "NEG-5", "sample": 0.0, "minutes": 38, "total": 59},
            {"method": "HS-Huffman", "sample": 1e-5, "minutes": 21, "total": 55}]  # fmt: skip


def _contrast_on_white(rgba) -> float:
    """WCAG contrast ratio of a colour (blended over white by its alpha) against white."""
    r, g, b, a = rgba
    rgb = [a * c + (1 - a) for c in (r, g, b)]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    luminance = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    return 1.05 / (luminance + 0.05)


def _is_yellowish(rgba) -> bool:
    h, s, v = colorsys.rgb_to_hsv(*rgba[:3])
    return 45 <= 360 * h <= 90 and s > 0.4 and v > 0.5  # yellow, lime, olive


def test_palette_is_readable_on_white_and_has_no_yellow():
    for color in style.PALETTE:
        rgba = mcolors.to_rgba(color)
        assert not _is_yellowish(rgba) and _contrast_on_white(rgba) >= 2.0, color
    assert len(set(style.LOSS_COLORS.values())) == len(style.LOSS_COLORS)


@pytest.mark.parametrize("name, fig", list(_every_figure()), ids=lambda x: str(x)[:20])
def test_every_figure_is_readable(name, fig):
    """No yellow, every line readable on white, constrained layout, nothing clipped."""
    for ax in fig.axes:
        for line in ax.get_lines():
            rgba = mcolors.to_rgba(line.get_color(), line.get_alpha())
            assert not _is_yellowish(rgba), (name, line.get_label(), line.get_color())
            assert _contrast_on_white(rgba) >= 2.0, (name, line.get_label(), line.get_color())
        for collection in ax.collections:
            for rgba in collection.get_facecolor():
                assert not _is_yellowish(rgba), (name, rgba)
    assert isinstance(fig.get_layout_engine(), layout_engine.ConstrainedLayoutEngine), name
    fig.canvas.draw()
    box = fig.get_tightbbox(fig.canvas.get_renderer())  # inches: everything drawn
    width, height = fig.get_size_inches()
    slack = 0.02
    assert box.x0 >= -slack and box.y0 >= -slack, (name, box)
    assert box.x1 <= width + slack and box.y1 <= height + slack, (name, box)


def test_the_fit_check_catches_a_clipped_title():
    fig, axes = style.new_figure(6.4, 4.2)
    axes[0, 0].set_title("a title far too long for its figure " * 3)
    fig.canvas.draw()
    assert fig.get_tightbbox(fig.canvas.get_renderer()).x1 > 6.4


def test_plot_cli_redraws_a_figure_from_its_json(tmp_path):
    (tmp_path / "pmi_shift.json").write_text(json.dumps(_pmi_rows()))
    (tmp_path / "gradient_bias_keep_hits.json").write_text(json.dumps(_bias_rows()))
    (tmp_path / "other.json").write_text("[]")
    files = [tmp_path / "pmi_shift.json", tmp_path / "gradient_bias_keep_hits.json"]
    proc = _plot(f"--figure_json={','.join(map(str, files))}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for stem in ("pmi_shift", "gradient_bias_keep_hits"):
        assert (tmp_path / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
    proc = _plot(f"--figure_json={tmp_path / 'other.json'}")
    assert proc.returncode != 0 and "must start with one of" in proc.stderr
    assert _plot().returncode != 0


def _plot(*args):
    return subprocess.run(
        [sys.executable, "experiments/plot.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
