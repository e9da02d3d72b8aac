r"""Skip-gram, CBOW and the log-bilinear model over plain parameter pytrees: the
parameters and the examples.

Shape letters: B batch rows, C context slots per row, D dim, V vocab,
E examples (B*C for skip-gram, B for CBOW).

Parameters are a flat dict of arrays:
  ``in_embed``   [V, D]   input vectors (word2vec's ``syn0``), uniform(-0.5/D, 0.5/D);
  ``out_embed``  [V, D]   output vectors (``syn1neg``), zeros — every layer but ``hs``;
  ``node_embed`` [V-1, D] inner-node vectors of the Huffman tree (``syn1``), zeros — ``hs``;
  ``out_bias``   [V]      optional output biases, zeros (or log unigram probabilities);
  ``ctx_matrices`` [C, D, D] (or [C, D] diagonal) the log-bilinear model's per-position
                 context matrices, identity at the start — ``lbl`` only.
Which output table a run trains is its layer's (`output_layers`).

A training row is one centre word and its context slots (`input_pipeline.Batch`). Both
models predict the centre word, as word2vec C does: skip-gram turns every valid slot into
one example whose input is the context word's vector; CBOW turns the row into one example
whose input is the mean (``cbow_mean``) or sum of the context vectors. The log-bilinear
model (``lbl``, Mnih & Hinton 2007; Mnih & Teh 2012) is CBOW with a matrix per context
position: its one example per row has input

.. math::
    \hat q = \sum_{i} C_i\, r_{w_i}, \qquad s(w \mid h) = \hat q \cdot q_w + b_w,

with ``in_embed`` the context table r, the layer's output table q, ``out_bias`` b and
``ctx_matrices`` C_i, one per context slot (slot i is a fixed position relative to the
centre, `data.windows.make_rows`). Diagonal C_i are an option. With every C_i the identity
it is summed CBOW. How a step gathers and scatters the rows is `step.rows`.

References:
  Mnih & Hinton, "Three new graphical models for statistical language modelling", ICML 2007.
  Mnih & Teh, "A fast and simple algorithm for training neural probabilistic language
  models", ICML 2012.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from w2v_jax.model import output_layers

MODELS = ("skipgram", "cbow", "lbl")
CONTEXT_MATRICES = ("full", "diagonal")  # lbl: C_i of shape [D, D] or diag(c_i), [D]


def context_matrices(slots: int, dim: int, kind: str) -> jax.Array:
    """The log-bilinear model's C_i at the start: identity, [C, D, D] ("full") or [C, D]."""
    if kind not in CONTEXT_MATRICES:
        raise ValueError(f"context matrices must be one of {CONTEXT_MATRICES}, got {kind!r}")
    if kind == "full":
        return jnp.tile(jnp.eye(dim, dtype=jnp.float32)[None], (slots, 1, 1))
    return jnp.ones((slots, dim), jnp.float32)


def init_params(
    key: jax.Array,
    vocab_size: int,
    dim: int,
    layer: str | output_layers.OutputLayer,
    use_bias: bool = False,
    *,
    ctx_matrices: jax.Array | None = None,
    bias_init: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """word2vec's initialisation: inputs uniform(-0.5/D, 0.5/D), outputs and biases zero.

    ``layer`` (an `output_layers.OutputLayer` or its name) chooses the output table.
    ``ctx_matrices`` (`context_matrices`) makes the log-bilinear model's parameters;
    ``bias_init`` [V] starts ``out_bias`` there instead of at zero (e.g. log unigram).
    """
    layer = output_layers.get(layer)
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2, got {vocab_size}; lower corpus.min_count")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    params = {
        "in_embed": jax.random.uniform(
            key, (vocab_size, dim), jnp.float32, minval=-0.5 / dim, maxval=0.5 / dim
        )
    }
    params[layer.table] = jnp.zeros((layer.table_rows(vocab_size), dim), jnp.float32)
    if use_bias:
        if not layer.biases:
            raise ValueError(
                f"loss.use_bias is not defined for {layer.name}; set loss.use_bias=False"
            )
        params["out_bias"] = jnp.zeros((vocab_size,), jnp.float32)
        if bias_init is not None:
            params["out_bias"] = jnp.asarray(bias_init, jnp.float32).reshape(vocab_size)
    if ctx_matrices is not None:
        params["ctx_matrices"] = jnp.asarray(ctx_matrices, jnp.float32)
    return params


def example_inputs(
    rows_in: jax.Array,
    mask: jax.Array,
    model: str,
    cbow_mean: bool,
    cbow_exact_grad: bool,
    ctx_matrices: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Input vectors of the examples.

    Args:
      rows_in: [B, C, D] gathered context vectors.
      mask: [B, C] 1.0 on real context slots.
      ctx_matrices: ``lbl`` only: [C, D, D] or diagonal [C, D] (``params["ctx_matrices"]``).

    Returns:
      inputs [E, D], weights [E] (0 for padding), row [E] (the batch row of each example).
      For CBOW with ``cbow_mean`` and ``cbow_exact_grad=False`` the value is the mean but
      every context vector receives the full gradient of the mean, as word2vec C and
      gensim do; with ``cbow_exact_grad=True`` it receives the true gradient (÷ count).
    """
    b, c, d = rows_in.shape
    if model == "skipgram":
        row = jnp.repeat(jnp.arange(b, dtype=jnp.int32), c)
        return rows_in.reshape(b * c, d), mask.reshape(b * c), row
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; use one of {MODELS}")
    count = jnp.sum(mask, axis=1, keepdims=True)  # [B, 1]
    weights = (count[:, 0] > 0).astype(rows_in.dtype)
    if model == "lbl":
        if ctx_matrices is None:
            raise ValueError("model 'lbl' needs its context matrices (params['ctx_matrices'])")
        if ctx_matrices.ndim == 3:  # (C_i r)_d = sum_e C_i[d, e] r_e
            transformed = jnp.einsum("bce,cde->bcd", rows_in, ctx_matrices)  # [B, C, D]
        else:
            transformed = rows_in * ctx_matrices[None]  # [B, C, D]
        h = jnp.einsum("bc,bcd->bd", mask, transformed)  # [B, D]
        return h, weights, jnp.arange(b, dtype=jnp.int32)
    # A masked sum, not einsum("bc,bcd->bd"): XLA:CPU runs that as B tiny batched dots
    # (forward and backward), 2.6x slower for the whole CBOW loss and gradient
    # (docs/performance.md, "Time to quality").
    summed = jnp.sum(mask[..., None] * rows_in, axis=1)  # [B, D]
    h = summed
    if cbow_mean:
        mean = summed / jnp.maximum(count, 1.0)
        h = mean if cbow_exact_grad else summed + jax.lax.stop_gradient(mean - summed)
    return h, weights, jnp.arange(b, dtype=jnp.int32)
