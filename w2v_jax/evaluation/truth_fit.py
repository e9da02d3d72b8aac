r"""How far a trained model is from the synthetic corpus's TRUE distribution.

The synthetic corpus (`synthetic`) comes from a known Markov chain, so the conditional
the model was trained for is known exactly. For skip-gram (and for CBOW with one
left-only context, ``window=1``: the next-word model) an example is a single context
word c predicting the centre w, and

.. math::
    \mathrm{KL} = \sum_c \pi_c\, \mathrm{KL}\big(p(\cdot \mid c) \,\|\, p_\theta(\cdot \mid c)\big),
    \qquad p_\theta(w \mid c) = \operatorname{softmax}_w(\mathrm{in}_c \cdot \mathrm{out}_w + b_w)

(hs: the tree's probabilities of all V leaves), with :math:`p(w \mid c)` and the context
distribution :math:`\pi_c` read off the exact pair joint ``truth.pair_joint(window,
dynamic, left_only)`` (its context marginal is the stationary distribution π). The mean
held-out NLL of a skip-gram model estimates :math:`H(W \mid C) + \mathrm{KL}`; ``entropy``
is the first term, the floor no model can beat.

The scores :math:`s(w \mid c)` are also correlated with the true :math:`\log p(w \mid c)`
and the true PMI over all V × V pairs: Pearson weighted by the pair joint p(c, w) (where
the training data is), and Spearman unweighted over pairs with p(c, w) >= 1 / V² (more
than a uniform share; the rest are pairs the corpus barely holds). A constant score (e.g.
output vectors still at zero) has no defined correlation and is reported as 0. NCE predicts
s = log p(w | c), negative sampling s = log p(w | c) - log(k q(w)).

CBOW with a bag of several contexts has no closed-form truth for the bag (the chain's
truth conditions on ordered neighbours). `cbow_kl_heldout` estimates instead, on held-out
rows, :math:`E[\mathrm{KL}(p(\cdot \mid x_{t-1}, x_{t+1}) \| p_\theta(\cdot \mid \text{bag}))]`:
for a first-order chain the centre given all its window depends only on its two
neighbours, :math:`p(w \mid \cdot) \propto P_{x_{t-1} w} P_{w x_{t+1}}` (π_w without a left
neighbour). A bag model cannot see order, so this KL has a floor above 0.

Everything here is float64 NumPy on the host: V <= a few thousand, [V, V] matrices.
Shape letters: V vocab, D dim, B batch rows, C context slots.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from w2v_jax.data import synthetic
from w2v_jax.evaluation import likelihood, similarity


class TrueConditional(NamedTuple):
    """The exact conditional of a training example, rows = context (the model input)."""

    log_cond: np.ndarray  # float64 [V, V], log p(w | c) at [c, w]
    context_probs: np.ndarray  # float64 [V], π_c: how often c is the context
    joint: np.ndarray  # float64 [V, V], p(c, w) = π_c p(w | c) of an example
    pmi: np.ndarray  # float64 [V, V], log p(c, w) - log p(c) - log p(w) at [c, w]


class TruthFit(NamedTuple):
    """A model's distance to the truth (nats) and its scores' agreement with it."""

    kl: float  # Σ_c π_c KL(p(· | c) ‖ p_θ(· | c))
    entropy: float  # H(W | C), so kl + entropy is the model's expected NLL
    corr_logp: float  # Pearson(s, log p(w | c)), weighted by p(c, w)
    corr_pmi: float  # Pearson(s, PMI(w, c)), weighted by p(c, w)
    spearman_logp: float  # Spearman over pairs with p(c, w) >= 1 / V²
    spearman_pmi: float


def true_conditional(
    truth: synthetic.GroundTruth,
    *,
    model: str,
    window: int,
    dynamic: bool = True,
    left_only: bool = False,
) -> TrueConditional | None:
    """The exact p(centre | context) of one example, or None where no closed form exists.

    Skip-gram: from the pair joint (two-sided windows: symmetric, so p(w | c) is
    ``truth.skipgram_conditional`` read the other way). CBOW: only ``left_only`` with
    ``window=1`` (the context is the previous word; the truth is
    ``truth.next_word_conditional()``); None otherwise (see `cbow_kl_heldout`).
    """
    if model == "lbl" or (model == "cbow" and not (left_only and window == 1)):
        return None  # lbl: its input is not one word's vector
    joint = truth.pair_joint(window, dynamic=dynamic, left_only=left_only).T  # [c, w]
    context_probs = joint.sum(axis=1)
    with np.errstate(divide="ignore"):
        log_cond = np.log(joint) - np.log(context_probs)[:, None]
        pmi = synthetic.pmi_from_joint(joint)
    return TrueConditional(log_cond, context_probs, joint, pmi)


def _weighted_pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> float:
    """Pearson r under the weights; 0 when either side is constant (no agreement to show)."""
    weights = weights / weights.sum()
    x, y = x - weights @ x, y - weights @ y
    var_x, var_y = weights @ (x * x), weights @ (y * y)
    if not (var_x > 0 and var_y > 0):
        return 0.0
    return float((weights @ (x * y)) / np.sqrt(var_x * var_y))


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (`similarity.spearman`); 0 when either side is constant."""
    rho = similarity.spearman(x, y)
    return 0.0 if math.isnan(rho) else rho


def fit_to_truth(params: dict, target: TrueConditional, *, loss_name: str, aux=None) -> TruthFit:
    """`TruthFit` of a model whose inputs are single context words (``in_embed`` rows)."""
    inputs = np.asarray(params["in_embed"], np.float64)  # every word as the context
    score = likelihood.scores(params, inputs, loss_name=loss_name, aux=aux)  # [V, V]
    log_model = likelihood.log_probs(params, inputs, loss_name=loss_name, aux=aux)
    joint = target.joint
    seen = joint > 0
    p_log = np.where(seen, target.log_cond, 0.0)
    kl = float(np.sum(np.where(seen, joint * (p_log - log_model), 0.0)))
    entropy = float(-np.sum(joint * p_log))
    x, w = score[seen], joint[seen]
    logp, pmi = target.log_cond[seen], target.pmi[seen]
    big = w >= 1.0 / joint.size
    return TruthFit(
        kl=kl,
        entropy=entropy,
        corr_logp=_weighted_pearson(x, logp, w),
        corr_pmi=_weighted_pearson(x, pmi, w),
        spearman_logp=_spearman(x[big], logp[big]),
        spearman_pmi=_spearman(x[big], pmi[big]),
    )


def kl_to_truth(
    params: dict,
    truth: synthetic.GroundTruth,
    *,
    model: str,
    window: int,
    dynamic: bool = True,
    left_only: bool = False,
    loss_name: str,
    aux=None,
) -> TruthFit | None:
    """`fit_to_truth` against `true_conditional`; None for CBOW beyond one left context.

    Evaluating often, build the `TrueConditional` once (it takes W matrix products of
    [V, V]) and call `fit_to_truth`, as `evaluator.Evaluator` does.
    """
    target = true_conditional(
        truth, model=model, window=window, dynamic=dynamic, left_only=left_only
    )
    if target is None:
        return None
    return fit_to_truth(params, target, loss_name=loss_name, aux=aux)


def cbow_kl_heldout(
    params: dict,
    batches: Iterable,
    truth: synthetic.GroundTruth,
    *,
    loss_name: str,
    cbow_mean: bool = True,
    left_only: bool = False,
    aux=None,
    model: str = "cbow",
) -> float:
    """Mean over held-out CBOW (or lbl) rows of KL(p(· | neighbours) ‖ p_θ(· | h)), in nats.

    Slot 0 of a row is the left neighbour and, two-sided, slot C/2 the right one
    (`windows.make_rows`); a missing neighbour (sentence edge) drops its factor. Has a
    floor above 0 (a bag loses the order); compare runs with each other, not with 0.
    """
    log_p = np.log(truth.next_word_conditional())  # [V, V]
    log_pi = np.log(truth.unigram())  # [V]
    total = count = 0.0
    for batch in batches:
        inputs, _, weights = likelihood.batch_examples(
            params, batch, model=model, cbow_mean=cbow_mean
        )
        keep = np.asarray(weights) > 0
        mask, contexts = np.asarray(batch.mask)[keep], np.asarray(batch.contexts)[keep]
        contexts = np.where(mask > 0, contexts, 0)  # padding (V) indexes nothing below
        log_true = np.where(mask[:, :1] > 0, log_p[contexts[:, 0]], log_pi[None, :])  # [B, V]
        if not left_only:
            right = contexts.shape[1] // 2
            log_true = log_true + np.where(
                mask[:, right : right + 1] > 0, log_p[:, contexts[:, right]].T, 0.0
            )
        log_true -= np.logaddexp.reduce(log_true, axis=1, keepdims=True)
        log_model = likelihood.log_probs(
            params, np.asarray(inputs)[keep], loss_name=loss_name, aux=aux
        )
        total += float(np.sum(np.exp(log_true) * (log_true - log_model)))
        count += float(keep.sum())
    if not count:
        raise ValueError("cbow_kl_heldout needs at least one non-empty held-out row")
    return total / count
