r"""What the theory predicts the learned scores to be, checked on the training corpus.

Levy & Goldberg (2014): with enough capacity, negative sampling with ``k`` samples from
``q`` reaches, for every (centre w, context c) pair the data holds,

.. math::
    s(w \mid c) = \log\frac{p(w \mid c)}{k\, q(w)}
               = \mathrm{PMI}(w, c) + \log\frac{p(w)}{q(w)} - \log k,

i.e. the PMI shifted by :math:`-\log k` when ``q`` is the unigram distribution (word2vec's
unigram^0.75 adds a per-word term :math:`0.25\log p(w) + \mathrm{const}`). NCE reaches the
normalised conditional, :math:`s(w \mid c) = \log p(w \mid c)` (offset 0).

`count_pairs` counts the training corpus's (centre, context) pairs with the training
window rule; `pmi_shift` fits the learned scores against the empirical PMI,
:math:`\log p̂(w \mid c)` and (given ``log_q``) :math:`\log p̂(w \mid c) - \log q(w)`,
restricted to pairs seen at least ``min_count`` times. Both are library functions for
experiments, not per-step metrics (counting a real corpus takes seconds).

Orientation, as in training (word2vec C): the model is p(centre | context); the input is
the context word's ``in_embed`` row and the output the centre word's ``out_embed`` row,
so :math:`s(w \mid c) = \mathrm{in}_c \cdot \mathrm{out}_w + b_w`.

Shape letters: N tokens, S sentences, V vocab, D dim, P distinct pairs, W window.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from absl import logging

from w2v_jax.data import synthetic
from w2v_jax.model import output_layers


class PairCounts(NamedTuple):
    """Co-occurrence counts of (centre w, context c) pairs, sparse."""

    centre: np.ndarray  # int32 [P] the centre (output, label) word of each distinct pair
    context: np.ndarray  # int32 [P] the context (input) word
    count: np.ndarray  # float64 [P] #(w, c), expected over the dynamic window's draws
    centre_total: np.ndarray  # float64 [V] #(w) = sum_c #(w, c), over all pairs
    context_total: np.ndarray  # float64 [V] #(c) = sum_w #(w, c), over all pairs
    total: float  # |D| = sum over all pairs of #(w, c)


def _reduce(keys: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sums ``weights`` of equal ``keys``: unique keys [P] and their sums [P]."""
    uniq, inverse = np.unique(keys, return_inverse=True)
    return uniq, np.bincount(inverse.ravel(), weights=weights, minlength=uniq.shape[0])


def count_pairs(
    ids: np.ndarray,
    offsets: np.ndarray,
    vocab_size: int,
    *,
    window: int,
    dynamic_window: bool = True,
    left_only: bool = False,
    top_words: int | None = None,
    chunk_tokens: int = 1 << 20,
) -> PairCounts:
    r"""Counts the training pairs with the pipeline's window rule, vectorised NumPy.

    A token at distance d <= W of the centre in the same sentence (the corpus's, cut to
    ``corpus.max_sentence_length`` when it was loaded) is a context. With word2vec's
    dynamic window it is used with probability :math:`a_d = (W - d + 1) / W`
    (`synthetic.window_weights`); the counts are these expectations, so they are
    deterministic and equal, in expectation, one epoch of `input_pipeline.iterate_batches`
    with ``sample=0`` (with ``dynamic_window=False`` exactly; tested). Subsampling is not
    modelled: compare with runs trained with ``sample=0``.

    Args:
      ids: int [N] token ids; offsets: int [S + 1] sentence bounds.
      vocab_size: V.
      window, dynamic_window, left_only: as the training config.
      top_words: keep only pairs whose two words both have id < top_words (ids are sorted
        by frequency, so the frequent pairs); the marginals still count every pair. Bounds
        memory on large vocabularies (V = 70k: use ~10-20k).
      chunk_tokens: tokens per vectorised block.

    Returns:
      `PairCounts`, pairs sorted by (centre, context).
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    ids = np.asarray(ids, np.int64)
    pieces = np.asarray(offsets, np.int64)
    sentence = np.repeat(np.arange(pieces.shape[0] - 1), np.diff(pieces))  # [N]
    ids = ids[pieces[0] : pieces[-1]]
    a = synthetic.window_weights(window, dynamic=dynamic_window)  # [W]
    top = vocab_size if top_words is None else min(int(top_words), vocab_size)
    centre_total = np.zeros(vocab_size)
    context_total = np.zeros(vocab_size)
    acc = (np.zeros(0, np.int64), np.zeros(0))
    pending, pending_size = [], 0
    n = ids.shape[0]
    for lo in range(0, n, chunk_tokens):
        keys, weights = [], []
        for d in range(1, window + 1):
            left = np.arange(lo, min(lo + chunk_tokens, n - d))  # left word at i, right at i + d
            left = left[sentence[left] == sentence[left + d]]
            before, after = ids[left], ids[left + d]
            # (centre, context): the right word's left context, and (two-sided) the reverse.
            oriented = [(after, before)] + ([] if left_only else [(before, after)])
            for centre, context in oriented:
                centre_total += a[d - 1] * np.bincount(centre, minlength=vocab_size)
                context_total += a[d - 1] * np.bincount(context, minlength=vocab_size)
                frequent = (centre < top) & (context < top)
                keys.append(centre[frequent] * vocab_size + context[frequent])
                weights.append(np.full(keys[-1].shape[0], a[d - 1]))
        pending.append(_reduce(np.concatenate(keys), np.concatenate(weights)))
        pending_size += pending[-1][0].shape[0]
        if pending_size > max(acc[0].shape[0], 1 << 22):  # merge: amortised O(P log P)
            acc = _reduce(*(np.concatenate(x) for x in zip(acc, *pending, strict=True)))
            pending, pending_size = [], 0
    keys, count = _reduce(*(np.concatenate(x) for x in zip(acc, *pending, strict=True)))
    logging.info("count_pairs: %d distinct pairs from %d tokens", keys.shape[0], n)
    return PairCounts(
        centre=(keys // vocab_size).astype(np.int32),
        context=(keys % vocab_size).astype(np.int32),
        count=count,
        centre_total=centre_total,
        context_total=context_total,
        total=float(centre_total.sum()),
    )


class Fit(NamedTuple):
    """How the learned score follows a target over pairs: score ≈ slope · target + intercept."""

    pearson: float  # correlation of score and target
    slope: float  # least-squares slope
    intercept: float  # least-squares intercept
    offset: float  # the intercept with the slope fixed at 1: mean(score - target)
    residual_std: float  # std(score - target): the spread around that unit-slope line


def fit(score, target) -> Fit:
    """Least-squares `Fit` of score [P] on target [P] (float64, unweighted)."""
    score, target = np.asarray(score, np.float64), np.asarray(target, np.float64)
    if score.shape != target.shape or score.size < 2:
        raise ValueError(f"need >= 2 paired values, got {score.shape} and {target.shape}")
    slope, intercept = np.polyfit(target, score, 1)
    diff = score - target
    with np.errstate(invalid="ignore", divide="ignore"):
        pearson = float(np.corrcoef(score, target)[0, 1])
    return Fit(pearson, float(slope), float(intercept), float(diff.mean()), float(diff.std()))


class PMIShift(NamedTuple):
    """The learned scores of the frequent training pairs against the theory's targets."""

    pmi: Fit  # vs PMI(w, c); neg with q = unigram predicts slope 1, offset -log k
    log_cond: Fit  # vs log p̂(w | c) = log #(w, c) / #(c); NCE predicts slope 1, offset 0
    log_ratio: Fit | None  # vs log p̂(w | c) - log q(w) (given log_q): neg's optimum, -log k
    predicted_offset: float | None  # -log k for negative sampling (given k)
    num_pairs: int  # pairs with count >= min_count that were fitted


def pair_scores(params: dict, centre, context, *, loss_name: str = "neg", aux=None) -> np.ndarray:
    """s(w | c) = in_c · out_w + b_w of each pair [P] (hs: log p_tree(w | c)); float64.

    NumPy on the host in float64: no device matmul, so neither the backend's default
    precision nor ``config.matmul_precision`` reaches it.
    """
    centre, context = np.asarray(centre), np.asarray(context)
    in_embed = np.asarray(params["in_embed"], np.float64)
    layer = output_layers.get(loss_name)
    out = np.empty(centre.shape[0])
    step = 1 << 14
    for lo in range(0, centre.shape[0], step):
        w, c = centre[lo : lo + step], context[lo : lo + step]
        h = in_embed[c]  # [p, D]
        if layer.tree:
            points, codes = np.asarray(aux.points)[w], np.asarray(aux.codes)[w]  # [p, L]
            points = np.where(np.asarray(aux.path_mask)[w] > 0, points, 0)  # V - 1 pads
            x = np.einsum("pld,pd->pl", np.asarray(params[layer.table], np.float64)[points], h)
            sign = 1.0 - 2.0 * codes
            out[lo : lo + step] = -(np.asarray(aux.path_mask)[w] * np.logaddexp(0, -sign * x)).sum(
                1
            )
            continue
        s = np.einsum("pd,pd->p", h, np.asarray(params[layer.table], np.float64)[w])
        if "out_bias" in params:
            s = s + np.asarray(params["out_bias"], np.float64)[w]
        out[lo : lo + step] = s
    return out


def pmi_shift(
    pairs: PairCounts,
    params: dict,
    *,
    min_count: float = 10.0,
    k: int | None = None,
    log_q=None,
    loss_name: str = "neg",
    aux=None,
) -> PMIShift:
    r"""Fits the learned scores of the pairs seen >= ``min_count`` times to the theory.

    With :math:`\mathrm{PMI}(w, c) = \log\frac{\#(w, c)\,|D|}{\#(w)\,\#(c)}` and
    :math:`\log p̂(w \mid c) = \log\frac{\#(w, c)}{\#(c)}` (Levy & Goldberg, 2014), each
    `Fit` reports Pearson r, the least-squares line and the unit-slope offset
    mean(score - target). Negative sampling predicts offset :math:`-\log k` against PMI
    (exactly against :math:`\log p̂(w \mid c) - \log q(w)`); NCE predicts 0 against
    :math:`\log p̂(w \mid c)`. Finite-capacity models (D << V) fit only approximately:
    expect slope < 1 and a residual spread; the offset is the measured shift.

    Args:
      pairs: from `count_pairs` on the training corpus.
      params: trained parameters (``in_embed``, ``out_embed`` [, ``out_bias``]; hs:
        ``node_embed`` and ``aux``'s tree, giving the tree's log-probability).
      min_count: keep pairs with #(w, c) >= this (rare pairs' PMI is noise).
      k: negative samples, for ``predicted_offset = -log k``.
      log_q: [V] log noise probabilities (`sampling.noise_log_probs`), for ``log_ratio``.
      loss_name, aux: the trained layer; only the tree changes how scores are read.
    """
    keep = pairs.count >= min_count
    if np.count_nonzero(keep) < 2:
        raise ValueError(f"fewer than 2 pairs have count >= min_count={min_count}")
    w, c, n = pairs.centre[keep], pairs.context[keep], pairs.count[keep]
    log_cond = np.log(n) - np.log(pairs.context_total[c])
    pmi = log_cond + math.log(pairs.total) - np.log(pairs.centre_total[w])
    score = pair_scores(params, w, c, loss_name=loss_name, aux=aux)
    ratio = None
    if log_q is not None:
        ratio = fit(score, log_cond - np.asarray(log_q, np.float64)[w])
    return PMIShift(
        pmi=fit(score, pmi),
        log_cond=fit(score, log_cond),
        log_ratio=ratio,
        predicted_offset=None if k is None else -math.log(k),
        num_pairs=int(w.shape[0]),
    )
