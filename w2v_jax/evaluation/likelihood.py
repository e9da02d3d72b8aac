r"""Exact held-out likelihood of a trained model, whatever loss trained it.

Every loss trains the same scores :math:`s(w \mid h) = h \cdot u_w + b_w`, but only the
softmax normalises them. This module reads any trained model as the full softmax over the
vocabulary (hierarchical softmax as its own tree, already normalised),

.. math::
    p(w \mid h) = \frac{e^{s(w \mid h)}}{Z(h)},
    \qquad \log Z(h) = \operatorname{logsumexp}_v s(v \mid h),

and measures held-out text under it: the negative log-likelihood of the centre word given
its context, per example, exactly as the model was trained (skip-gram: one example per
valid context slot, input the context word's vector; CBOW: one example per row, input the
mean or sum of the context vectors). Softmax, sampled softmax, NCE and negative sampling
thus become directly comparable, in nats and in perplexity. The penalised softmax
(``softmax_penalty``) is scored the same way: its NLL is the plain softmax NLL, not the
objective it trained (which adds the penalty on Z).

Self-normalisation is measured alongside: the distribution of :math:`\log Z(h)` over the
held-out examples and the NLL the raw scores would give if :math:`Z` were 1,
:math:`-s(w \mid h)`. NCE's optimum is the normalised distribution, so it predicts
:math:`\log Z \approx 0` (and the two NLLs close); negative sampling's optimum is
:math:`s = \log p(w \mid h) - \log(k\,q(w))`, so
:math:`Z(h) = \frac1k \sum_w p(w \mid h) / q(w)`, typically well above 1 and varying with
the context (about :math:`e^{4.2}` on the synthetic corpus). Softmax and sampled softmax
are invariant to a per-context shift of the scores: nothing pins their :math:`\log Z`.
For hierarchical softmax :math:`\log Z = 0` exactly.

`heldout_nll` streams over vocabulary blocks (`losses.softmax_loss` with ``chunk_size``),
so the device holds an ``[E, chunk_size]`` block of logits, never ``[E, V]``; one jitted
function per batch shape, every matmul at float32 whatever the backend's default
(`precision.full_float32`). For skip-gram an example's input is one word's vector, so log Z
is computed once per vocabulary word (`word_log_z`) when that is cheaper. `log_probs` and
`scores` give the full ``[E, V]`` matrices in float64 on the host, for the
small-vocabulary analyses (`truth_fit`).

Shape letters: B batch rows, C context slots, D dim, V vocab, E examples, L Huffman depth,
N inner nodes (V - 1).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
import scipy.special

from w2v_jax.evaluation import precision
from w2v_jax.model import losses, output_layers
from w2v_jax.model import word2vec as model_lib

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
DEFAULT_CHUNK = 2048  # vocabulary rows per logsumexp block: [E, 2048] logits at a time


class HeldoutNLL(NamedTuple):
    """Held-out likelihood under the model's full softmax (nats, per example)."""

    nll: float  # mean -log p(centre | context) over held-out examples
    ppl: float  # exp(nll), the perplexity
    total: float  # sum of -log p over the examples
    count: float  # number of examples (valid skip-gram slots, or CBOW rows)
    nll_unnormalised: float  # mean -s(centre | context): the NLL if Z were 1
    log_z_mean: float  # mean over examples of log Z(context)
    log_z_std: float  # its standard deviation
    log_z_quantiles: tuple[float, ...]  # its quantiles at QUANTILES (5, 25, 50, 75, 95 %)

    def metrics(self, prefix: str = "eval/") -> dict[str, float]:
        """The ``eval/*`` keys: heldout_nll, heldout_ppl, ..., log_z_q05 ... log_z_q95."""
        out = {
            "heldout_nll": self.nll,
            "heldout_ppl": self.ppl,
            "heldout_nll_unnormalised": self.nll_unnormalised,
            "log_z_mean": self.log_z_mean,
            "log_z_std": self.log_z_std,
        }
        for q, value in zip(QUANTILES, self.log_z_quantiles, strict=True):
            out[f"log_z_q{round(100 * q):02d}"] = value
        return {prefix + k: float(v) for k, v in out.items()}


def _check_names(model: str, loss_name: str, aux) -> None:
    if model not in model_lib.MODELS:
        raise ValueError(f"model must be one of {model_lib.MODELS}, got {model!r}")
    if loss_name not in output_layers.NAMES:
        raise ValueError(
            f"loss_name must be one of {sorted(output_layers.NAMES)}, got {loss_name!r}"
        )
    if output_layers.get(loss_name).tree and (aux is None or aux.points is None):
        raise ValueError(
            f"loss_name={loss_name!r} needs aux with the Huffman codes, points and path_mask"
        )


def _tree(aux):
    """The Huffman arrays (codes, points, path_mask), each [V, L]."""
    return aux.codes, aux.points, aux.path_mask


@precision.full_float32
def batch_examples(params: dict, batch, *, model: str, cbow_mean: bool = True):
    """The examples of a batch, as training makes them (`model.example_inputs`).

    Args:
      params: needs ``in_embed`` [V, D] (and ``ctx_matrices`` for lbl).
      batch: an `input_pipeline.Batch` (centres [B], contexts [B, C], mask [B, C]).

    Returns:
      inputs [E, D], labels [E] (the centre words; V on a padding row), weights [E] (0 for
      padding). A padding slot's id V reads a zero vector.
    """
    rows_in = losses.take(params["in_embed"], batch.contexts)
    mask = jnp.asarray(batch.mask, rows_in.dtype)
    inputs, weights, row = model_lib.example_inputs(
        rows_in, mask, model, cbow_mean, True, params.get("ctx_matrices")
    )
    return inputs, jnp.asarray(batch.centres)[row], weights


def _score(inputs, out, bias, labels):
    """s(label | input) [E] for inputs [E, D]; 0 for a padding label (V)."""
    score = jnp.einsum("ed,ed->e", inputs, losses.take(out, labels))
    return score if bias is None else score + losses.take(bias, labels)


@functools.partial(jax.jit, static_argnames=("chunk_size", "rows"))
@precision.full_float32
def word_log_z(params, *, chunk_size, rows=1024):
    """log Z(in_c) of every word c as a single context (skip-gram's inputs); [V].

    A scan over blocks of ``rows`` input words, each a streaming logsumexp over
    vocabulary blocks: an ``[rows, chunk_size]`` block of logits at a time.
    """
    in_embed, out, bias = params["in_embed"], params["out_embed"], params.get("out_bias")
    num_words = in_embed.shape[0]
    num_blocks = -(-num_words // rows)
    padded = jnp.pad(in_embed, ((0, num_blocks * rows - num_words), (0, 0)))
    zeros = jnp.zeros(rows, jnp.int32)

    def block(_, h):  # [rows, D]
        nll = losses.softmax_loss(h, out, zeros, bias, chunk_size=chunk_size)
        return None, nll + _score(h, out, bias, zeros)

    _, log_z = jax.lax.scan(block, None, padded.reshape(num_blocks, rows, -1))
    return log_z.reshape(-1)[:num_words]


@functools.partial(jax.jit, static_argnames=("model", "loss_name", "cbow_mean", "chunk_size"))
@precision.full_float32
def example_terms(params, batch, tree, log_z_words, *, model, loss_name, cbow_mean, chunk_size):
    """Per-example NLL [E], log Z [E] and weights [E] of one batch (jitted, fixed shapes).

    ``tree`` is ``(codes, points, path_mask)`` for hs and None otherwise. The NLL is the
    streaming softmax cross-entropy over all V rows and log Z = NLL + s(label); or, given
    skip-gram's per-word ``log_z_words`` [V] (`word_log_z`), log Z is looked up and
    NLL = log Z - s(label).
    """
    inputs, labels, weights = batch_examples(params, batch, model=model, cbow_mean=cbow_mean)
    layer = output_layers.get(loss_name)
    if layer.tree:  # normalised by construction: log Z = 0
        codes, points, path_mask = tree  # a padding label (V) gets the empty path
        path = (
            losses.take(codes, labels),
            points.at[labels].get(mode="fill", fill_value=points.shape[0] - 1),
            losses.take(path_mask, labels),
        )
        nll = layer.per_example(inputs, params[layer.table], labels, path=path)
        return nll, jnp.zeros_like(nll), weights
    out, bias = params["out_embed"], params.get("out_bias")
    score = _score(inputs, out, bias, labels)  # [E]
    if log_z_words is not None:  # skip-gram: example (b, c) has input in_embed[contexts[b, c]]
        log_z = log_z_words.at[jnp.asarray(batch.contexts).reshape(-1)].get(
            mode="fill", fill_value=0
        )
        return log_z - score, log_z, weights
    nll = losses.softmax_loss(inputs, out, labels, bias, chunk_size=chunk_size)  # [E]
    return nll, nll + score, weights


def summarise(nll, log_z, weights) -> HeldoutNLL:
    """`HeldoutNLL` from per-example NLL [E], log Z [E] and 0/1 weights [E] (host, float64)."""
    keep = np.asarray(weights) > 0
    nll = np.asarray(nll, np.float64)[keep]
    log_z = np.asarray(log_z, np.float64)[keep]
    if not nll.size:
        raise ValueError("no held-out examples: every batch is padding")
    mean = float(nll.mean())
    return HeldoutNLL(
        nll=mean,
        ppl=math.exp(mean) if mean < 700 else math.inf,
        total=float(nll.sum()),
        count=float(nll.size),
        nll_unnormalised=float((nll - log_z).mean()),
        log_z_mean=float(log_z.mean()),
        log_z_std=float(log_z.std()),
        log_z_quantiles=tuple(float(x) for x in np.quantile(log_z, QUANTILES)),
    )


def heldout_nll(
    params: dict,
    batches: Iterable,
    *,
    model: str,
    loss_name: str,
    cbow_mean: bool = True,
    aux: output_layers.Constants | None = None,
    chunk_size: int | None = DEFAULT_CHUNK,
    per_word: bool | None = None,
) -> HeldoutNLL:
    r"""Exact NLL, perplexity and log Z of held-out text under the model's full softmax.

    .. math::
        \mathrm{NLL} = \frac1E \sum_{e} \Big(\log Z(h_e) - s(w_e \mid h_e)\Big),
        \qquad \mathrm{PPL} = e^{\mathrm{NLL}}

    over the held-out examples e (input h_e, centre word w_e), whatever loss trained the
    parameters; hs uses its tree (log Z = 0).

    Args:
      params: the model's parameters (`model.init_params` layout), host or device arrays.
      batches: `input_pipeline.Batch`es of one shape, e.g. `data.heldout_batches`.
      model: "skipgram" or "cbow", as trained.
      loss_name: the trained layer (`output_layers`); only the tree changes the computation.
      cbow_mean: CBOW input is the mean (True) or the sum of the context vectors.
      aux: `output_layers.Constants` with ``codes``, ``points``, ``path_mask`` (hs only).
      chunk_size: vocabulary rows per logsumexp block (None: all at once, [E, V] logits).
      per_word: skip-gram only: compute log Z once per vocabulary word (`word_log_z`,
        O(V² D)) and look it up, instead of once per example (O(E V D)). None: when the
        batches hold more examples than V words (the usual held-out set: 50 text8
        batches are ~20x cheaper).

    Returns:
      A `HeldoutNLL`; ``.metrics()`` gives the ``eval/*`` keys.
    """
    _check_names(model, loss_name, aux)
    batches = list(batches)
    if not batches:
        raise ValueError("heldout_nll needs at least one batch")
    layer = output_layers.get(loss_name)
    keys = ("in_embed", layer.table, "out_bias", "ctx_matrices")
    device_params = jax.device_put({k: params[k] for k in keys if k in params})
    tree = jax.device_put(_tree(aux)) if layer.tree else None
    if per_word is None:
        examples = sum(float(np.sum(b.mask)) for b in batches)
        per_word = examples > device_params["in_embed"].shape[0]
    log_z_words = None
    if per_word and model == "skipgram" and not layer.tree:
        log_z_words = word_log_z(device_params, chunk_size=chunk_size)
    parts = []
    for batch in batches:
        terms = example_terms(
            device_params, batch, tree, log_z_words, model=model, loss_name=loss_name,
            cbow_mean=bool(cbow_mean), chunk_size=chunk_size,
        )  # fmt: skip
        parts.append(jax.device_get(terms))
    return summarise(*(np.concatenate(p) for p in zip(*parts, strict=True)))


# ------------------------------------------------------------------ full [E, V] matrices


def hs_log_probs(inputs, node_embed, codes, points, path_mask) -> np.ndarray:
    r"""log p(w | h) of every leaf w of the Huffman tree, for every input; float64 [E, V].

    :math:`\log p(w \mid h) = \sum_l m_{wl} \log\sigma((1 - 2c_{wl})\, h \cdot u_{p_{wl}})`.
    Built as two sparse products, ``log σ(x) @ S0 + log σ(-x) @ S1`` with
    :math:`x = h U^T` [E, N] and S0/S1 [N, V] the 0/1 incidence of code-0/code-1 branches,
    so it costs O(E N D + E V L), not O(E V L D).

    Args:
      inputs: [E, D]; node_embed: [N, D]; codes, points, path_mask: [V, L].
    """
    x = np.asarray(inputs, np.float64) @ np.asarray(node_embed, np.float64).T  # [E, N]
    codes, points = np.asarray(codes), np.asarray(points)
    num_words, depth = codes.shape
    on = np.asarray(path_mask).ravel() != 0
    word = np.repeat(np.arange(num_words), depth)[on]
    node, code = points.ravel()[on], codes.ravel()[on] != 0
    shape = (x.shape[1], num_words)
    s0 = scipy.sparse.csr_matrix(((~code).astype(np.float64), (node, word)), shape=shape)
    s1 = scipy.sparse.csr_matrix((code.astype(np.float64), (node, word)), shape=shape)
    log_sig, log_sig_neg = -np.logaddexp(0.0, -x), -np.logaddexp(0.0, x)
    return np.asarray((s0.T @ log_sig.T).T + (s1.T @ log_sig_neg.T).T)


def scores(params: dict, inputs, *, loss_name: str, aux=None) -> np.ndarray:
    """The learned scores s(w | h) = h · u_w + b_w for every w; float64 [E, V] (host).

    For hs, which has no per-word score, the tree's log-probabilities (`hs_log_probs`).
    """
    layer = output_layers.get(loss_name)
    if layer.tree:
        return hs_log_probs(inputs, params[layer.table], *_tree(aux))
    s = np.asarray(inputs, np.float64) @ np.asarray(params["out_embed"], np.float64).T
    if "out_bias" in params:
        s = s + np.asarray(params["out_bias"], np.float64)[None, :]
    return s


def log_probs(params: dict, inputs, *, loss_name: str, aux=None) -> np.ndarray:
    """log p(w | h) under the model's full softmax (hs: its tree); float64 [E, V] (host)."""
    s = scores(params, inputs, loss_name=loss_name, aux=aux)
    if output_layers.get(loss_name).tree:
        return s
    return s - scipy.special.logsumexp(s, axis=1, keepdims=True)
