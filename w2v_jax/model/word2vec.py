"""Skip-gram and CBOW over plain parameter pytrees, written on gathered rows.

Shape letters: B batch rows, C context slots per row, D dim, V vocab, K samples,
L Huffman path length, E examples (B*C for skip-gram, B for CBOW), M gathered output rows.

Parameters are a flat dict of arrays:
  ``in_embed``   [V, D]   input vectors (word2vec's ``syn0``), uniform(-0.5/D, 0.5/D);
  ``out_embed``  [V, D]   output vectors (``syn1neg``), zeros — every loss but ``hs``;
  ``node_embed`` [V-1, D] inner-node vectors of the Huffman tree (``syn1``), zeros — ``hs``;
  ``out_bias``   [V]      optional output biases, zeros.

A training row is one centre word and its context slots (`input_pipeline.Batch`). Both
models predict the centre word, as word2vec C does: skip-gram turns every valid slot into
one example whose input is the context word's vector; CBOW turns the row into one example
whose input is the mean (``cbow_mean``) or sum of the context vectors.

Everything here works on *gathered rows* (`gather`), so the same loss code serves the
sparse update (gradient w.r.t. the rows, scatter-add into the tables) and the dense one
(autodiff through the gather gives the full-table gradient).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from w2v_jax.model import losses

MODELS = ("skipgram", "cbow")
SAMPLED_LOSSES = ("neg", "nce", "sampled_softmax")


def output_table(loss_name: str) -> str:
    """Name of the output table a loss trains: ``node_embed`` for ``hs``, else ``out_embed``."""
    return "node_embed" if loss_name == "hs" else "out_embed"


def init_params(
    key: jax.Array, vocab_size: int, dim: int, loss_name: str, use_bias: bool = False
) -> dict[str, jax.Array]:
    """word2vec's initialisation: inputs uniform(-0.5/D, 0.5/D), outputs and biases zero."""
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2, got {vocab_size}; lower corpus.min_count")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    params = {
        "in_embed": jax.random.uniform(
            key, (vocab_size, dim), jnp.float32, minval=-0.5 / dim, maxval=0.5 / dim
        )
    }
    rows = vocab_size - 1 if loss_name == "hs" else vocab_size
    params[output_table(loss_name)] = jnp.zeros((rows, dim), jnp.float32)
    if use_bias:
        if loss_name == "hs":
            raise ValueError("loss.use_bias is not defined for hs; set loss.use_bias=False")
        params["out_bias"] = jnp.zeros((vocab_size,), jnp.float32)
    return params


class Aux(NamedTuple):
    """Per-run constant arrays the step needs, passed as arguments (never closed over).

    Fields a loss does not use are None.
    """

    noise: object = None  # sampling.AliasTable over the noise distribution q
    log_q: jax.Array | None = None  # [V] float32 log noise probabilities
    codes: jax.Array | None = None  # [V, L] Huffman codes per word
    points: jax.Array | None = None  # [V, L] int32 inner-node ids per word
    path_mask: jax.Array | None = None  # [V, L] float32, 1 on valid path positions


class Targets(NamedTuple):
    """What the output side needs, in *local* row ids (indices into the gathered rows).

    ``out_ids`` holds the global ids of the gathered output rows (unique, padded with
    repeats of a valid id whose gradients are zero); None means the whole table (softmax).
    """

    out_ids: jax.Array | None  # [M] global row ids of the gathered output rows
    labels: jax.Array  # [B] label per row (local for sampled losses, global for softmax)
    samples: jax.Array | None  # [G, K] local sample ids per sample group
    group: jax.Array | None  # [E] sample group of every example
    log_q: jax.Array | None  # [M] log q of the gathered rows
    codes: jax.Array | None  # [B, L]
    points: jax.Array | None  # [B, L] local node ids
    path_mask: jax.Array | None  # [B, L]


def sample_shape(model: str, share: str, rows: int, slots: int, k: int, block: int):
    """Shape of the negative draws for a batch, by sharing mode.

    ``pair``: independent samples per example (word2vec C's estimator); ``row``: one set
    per centre word shared by its context slots; ``block``: one set per ``block`` rows.
    """
    if share == "pair":
        return (rows, slots, k) if model == "skipgram" else (rows, k)
    if share == "row":
        return (rows, k)
    if share == "block":
        if rows % block:
            raise ValueError(f"batch_size {rows} must be a multiple of loss.block_size {block}")
        return (rows // block, k)
    raise ValueError(f"loss.share must be one of pair, row, block; got {share!r}")


def example_group(model: str, share: str, rows: int, slots: int, block: int) -> jax.Array:
    """[E] index of the sample group (first axis of the flattened draws) of each example."""
    row = jnp.arange(rows, dtype=jnp.int32)
    if model == "skipgram":
        if share == "pair":
            return jnp.arange(rows * slots, dtype=jnp.int32)
        row = jnp.repeat(row, slots)
    return row // block if share == "block" else row


def _compact(ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Unique ids (fixed size, padded with the first id) and each input's local position."""
    flat = ids.reshape(-1)
    uniq, inverse = jnp.unique(flat, size=flat.shape[0], fill_value=flat[0], return_inverse=True)
    return uniq, inverse.reshape(ids.shape).astype(jnp.int32)


def make_targets(
    loss_name: str, centers: jax.Array, samples: jax.Array | None, group, aux: Aux
) -> Targets:
    """Builds the output-side targets for a batch of centre words ``centers`` [B]."""
    centers = jnp.asarray(centers)
    if loss_name == "softmax":
        return Targets(None, centers, None, None, None, None, None, None)
    if loss_name == "hs":
        out_ids, local_points = _compact(aux.points[centers])  # [B, L]
        return Targets(
            out_ids, centers, None, None, None,
            aux.codes[centers], local_points, aux.path_mask[centers],
        )  # fmt: skip
    if loss_name not in SAMPLED_LOSSES:
        raise ValueError(f"unknown loss {loss_name!r}; use one of {sorted(losses.LOSSES)}")
    flat = jnp.concatenate([centers, samples.reshape(-1)])
    out_ids, local = _compact(flat)
    b = centers.shape[0]
    log_q = None if aux.log_q is None else aux.log_q[out_ids]
    local_samples = local[b:].reshape(-1, samples.shape[-1])  # [G, K]
    return Targets(out_ids, local[:b], local_samples, group, log_q, None, None, None)


def gather(params: dict, contexts: jax.Array, targets: Targets, loss_name: str) -> dict:
    """The rows a batch touches: ``in`` [B, C, D], ``out`` [M, D] (or the full table), ``bias``."""
    table = params[output_table(loss_name)]
    out_ids = targets.out_ids
    rows = {
        "in": params["in_embed"][contexts],
        "out": table if out_ids is None else table[out_ids],
    }
    if "out_bias" in params:
        bias = params["out_bias"]
        rows["bias"] = bias if out_ids is None else bias[out_ids]
    return rows


def duplicate_factor(vocab_size: int, ids: jax.Array, rows: jax.Array, power: float):
    """[N] factor n_r^-power of each row update: n_r = the non-zero updates to its row.

    A sparse step sums the updates of a word that occurs n times in the batch (exact SGD
    on the summed loss; word2vec applies them one after another instead). ``power`` 1
    averages them, 0.5 divides by √n; rows whose update is exactly zero (padding) do not
    count. ids [N], rows [N, D].
    """
    touched = jnp.any(rows != 0, axis=-1).astype(rows.dtype)
    counts = jnp.zeros((vocab_size,), rows.dtype).at[ids].add(touched)
    return jnp.maximum(counts[ids], 1.0) ** -power


def scatter_rows(table, ids, rows, power: float = 0.0, bias=None, bias_rows=None):
    """(table, bias) with rows [N, D] (and bias_rows [N]) scatter-added at ids [N];
    with ``power`` > 0 each update is scaled by `duplicate_factor` first."""
    if power:
        factor = duplicate_factor(table.shape[0], ids, rows, power)
        rows = rows * factor[:, None]
        bias_rows = None if bias_rows is None else bias_rows * factor
    table = table.at[ids].add(rows)
    return table, (None if bias is None else bias.at[ids].add(bias_rows))


def scatter_add(
    params: dict, contexts, targets: Targets, loss_name: str, grads: dict, scale, power=0.0
):
    """params + scale * grads, with row gradients scatter-added into their tables
    (``power``: `duplicate_factor`)."""
    name = output_table(loss_name)
    new = dict(params)
    d = params["in_embed"].shape[1]
    new["in_embed"], _ = scatter_rows(
        params["in_embed"], contexts.reshape(-1), scale * grads["in"].reshape(-1, d), power
    )
    bias = params.get("out_bias")
    if targets.out_ids is None:
        new[name] = params[name] + scale * grads["out"]
        if bias is not None:
            new["out_bias"] = bias + scale * grads["bias"]
        return new
    bias_rows = None if bias is None else scale * grads["bias"]
    new[name], new_bias = scatter_rows(
        params[name], targets.out_ids, scale * grads["out"], power, bias, bias_rows
    )
    if bias is not None:
        new["out_bias"] = new_bias
    return new


def example_inputs(
    rows_in: jax.Array, mask: jax.Array, model: str, cbow_mean: bool, cbow_exact_grad: bool
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Input vectors of the examples.

    Args:
      rows_in: [B, C, D] gathered context vectors.
      mask: [B, C] 1.0 on real context slots.

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
    if model != "cbow":
        raise ValueError(f"unknown model {model!r}; use one of {MODELS}")
    count = jnp.sum(mask, axis=1, keepdims=True)  # [B, 1]
    summed = jnp.einsum("bc,bcd->bd", mask, rows_in)  # [B, D]
    h = summed
    if cbow_mean:
        mean = summed / jnp.maximum(count, 1.0)
        h = mean if cbow_exact_grad else summed + jax.lax.stop_gradient(mean - summed)
    weights = (count[:, 0] > 0).astype(rows_in.dtype)
    return h, weights, jnp.arange(b, dtype=jnp.int32)


def summed_loss(rows: dict, mask: jax.Array, targets: Targets, cfg) -> tuple[jax.Array, jax.Array]:
    """Σ over examples of weight · loss, and Σ weights. ``cfg`` is a `train.StepConfig`."""
    inputs, weights, row = example_inputs(
        rows["in"], mask, cfg.model, cfg.cbow_mean, cfg.cbow_exact_grad
    )
    labels = targets.labels[row]  # [E]
    bias = rows.get("bias")
    name = cfg.loss
    if name == "softmax":
        per = losses.softmax_loss(inputs, rows["out"], labels, bias, chunk_size=cfg.chunk_size)
    elif name == "hs":
        per = losses.hierarchical_softmax_loss(
            inputs, rows["out"], targets.codes[row], targets.points[row], targets.path_mask[row]
        )
    else:
        samples = targets.samples[targets.group]  # [E, K]
        if name == "neg":
            per = losses.negative_sampling_loss(inputs, rows["out"], labels, samples, bias)
        elif name == "nce":
            per = losses.nce_loss(inputs, rows["out"], labels, samples, targets.log_q, bias)
        else:
            per = losses.sampled_softmax_loss(
                inputs, rows["out"], labels, samples, targets.log_q, bias,
                remove_accidental_hits=cfg.remove_accidental_hits,
            )  # fmt: skip
    return jnp.sum(weights * per), jnp.sum(weights)
