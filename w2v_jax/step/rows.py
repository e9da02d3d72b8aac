"""The generic row path: gather the rows a batch touches, score them with the loss
library per example, apply the row gradients back (`update_rows`).

Shape letters: B batch rows, C context slots per row, D dim, V vocab, K samples,
G sample groups, L Huffman path length, E examples (B*C for skip-gram, B for CBOW),
M gathered output rows, N scattered rows.

Padding ids (`input_pipeline.Batch`) lie outside every table: gathers read zeros there
(``mode="fill"``) and scatters drop them (``mode="drop"``).

Everything works on *gathered rows* (`gather`), so the same loss code serves the sparse
update (gradient w.r.t. the rows, scatter-add into the tables) and the dense one (autodiff
through the gather gives the full-table gradient). Its sibling `fused` scores whole
rows with batched matmuls where a grouping applies; both hand their row gradients
(`RowGrads`) to `update_rows`, which applies the optimiser (`step.optimizers`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from w2v_jax.model import losses, output_layers, word2vec
from w2v_jax.step import optimizers


class Targets(NamedTuple):
    """What the output side needs, in *local* row ids (indices into the gathered rows).

    ``out_ids`` holds the global ids of the gathered output rows (unique, padded with the
    out-of-range id of the table's padding, which gathers zeros and whose scatter drops);
    None means the whole table (softmax).
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


def _compact(ids: jax.Array, pad: int) -> tuple[jax.Array, jax.Array]:
    """Unique ids (fixed size, padded with ``pad``, the table's out-of-range padding id)
    and each input's local position."""
    flat = ids.reshape(-1)
    uniq, inverse = jnp.unique(flat, size=flat.shape[0], fill_value=pad, return_inverse=True)
    return uniq, inverse.reshape(ids.shape).astype(jnp.int32)


def make_targets(
    layer: output_layers.OutputLayer,
    centres: jax.Array,
    samples: jax.Array | None,
    group,
    constants: output_layers.Constants,
) -> Targets:
    """Builds the output-side targets for a batch of centre words ``centres`` [B] (V: a
    padding row, which gets the empty path or a zero output row)."""
    centres = jnp.asarray(centres)
    if layer.tree:
        codes, points, path_mask = constants.paths(centres)  # [B, L] each
        out_ids, local_points = _compact(points, constants.points.shape[0] - 1)
        return Targets(out_ids, centres, None, None, None, codes, local_points, path_mask)
    if not layer.sampled:  # the whole table
        return Targets(None, centres, None, None, None, None, None, None)
    flat = jnp.concatenate([centres, samples.reshape(-1)])
    known = constants.noise.prob if constants.log_q is None else constants.log_q  # [V]
    out_ids, local = _compact(flat, known.shape[0])  # padded with V
    b = centres.shape[0]
    log_q = None if constants.log_q is None else constants.log_q_at(out_ids)
    local_samples = local[b:].reshape(-1, samples.shape[-1])  # [G, K]
    return Targets(out_ids, local[:b], local_samples, group, log_q, None, None, None)


def output_rows(params: dict, table: str, ids) -> tuple[jax.Array, jax.Array | None]:
    """``table``'s rows at ``ids`` and their biases (None without ``out_bias``), zeros at an
    id outside the table (padding); ``ids`` None: the whole table and bias."""
    bias = params.get("out_bias")
    if ids is None:
        return params[table], bias
    rows = losses.take(params[table], ids)
    return rows, (None if bias is None else losses.take(bias, ids))


def gather(params: dict, contexts: jax.Array, targets: Targets, table: str) -> dict:
    """The rows a batch touches: ``in`` [B, C, D], ``out`` [M, D] (or the full table), ``bias``."""
    rows = {"in": losses.take(params["in_embed"], contexts)}  # V: zeros
    if "ctx_matrices" in params:  # the log-bilinear model's C_i, whole (dense)
        rows["ctx"] = params["ctx_matrices"]
    rows["out"], bias = output_rows(params, table, targets.out_ids)
    if bias is not None:
        rows["bias"] = bias
    return rows


class RowGrads(NamedTuple):
    """One step's row gradients and where they go (`update_rows`)."""

    in_ids: jax.Array  # [N] rows of ``in_embed``
    in_grads: jax.Array  # [N, D]
    out_ids: jax.Array | None  # [M] rows of the output table; None: a dense gradient
    out_grads: jax.Array  # [M, D], or the whole table's [V, D] gradient
    bias_grads: jax.Array | None  # [M] (or [V]) when the model has ``out_bias``
    dense: dict | None = None  # whole-parameter gradients by params key (lbl's C_i)
    # Slots that each sum several updates (rows shared between devices, `exchange.share`):
    # how many non-zero updates each holds, [N] and [M]; None: one each.
    in_counts: jax.Array | None = None
    out_counts: jax.Array | None = None
    # The tables' rows at in_ids / out_ids as the step gathered them (before its update),
    # [N, D] and [M, D]: the AdaGrads read a unique row's weights from here instead of
    # gathering them again. None (sharing or sharding changed the ids): gathered again.
    in_rows: jax.Array | None = None
    out_rows: jax.Array | None = None


def dense_grads(grads: dict) -> dict | None:
    """{params key: gradient} of the dense parameters among ``grads`` (lbl's C_i), or None."""
    return {"ctx_matrices": grads["ctx"]} if "ctx" in grads else None


def update_rows(
    params: dict, opt_state, table: str, grads: RowGrads, lr, optimizer: str, eps, power
):
    """(params, opt_state) after the sparse form of ``optimizer`` (`optimizers.apply_rows`)
    applies ``grads``: ``in_embed`` by rows, ``table`` and ``out_bias`` by rows or, with
    ``out_ids`` None (softmax), densely; dense parameters (lbl's C_i) densely.
    ``power``: sparse SGD's `duplicate_power` (counting ``in_counts`` / ``out_counts``)."""
    for key, g in (grads.dense or {}).items():
        params, opt_state = optimizers.apply_rows(
            optimizer, params, opt_state, key, None, g, lr, eps=eps
        )
    params, opt_state = optimizers.apply_rows(
        optimizer, params, opt_state, "in_embed", grads.in_ids, grads.in_grads, lr,
        eps=eps, power=power, counts=grads.in_counts, rows=grads.in_rows,
    )  # fmt: skip
    return optimizers.apply_rows(
        optimizer, params, opt_state, table, grads.out_ids, grads.out_grads, lr,
        eps=eps, power=power, bias_grads=grads.bias_grads, counts=grads.out_counts,
        rows=grads.out_rows,
    )  # fmt: skip


def row_grads(contexts, targets: Targets, grads: dict) -> RowGrads:
    """`gather`'s row gradients ``grads`` as a `RowGrads`."""
    d = grads["in"].shape[-1]
    return RowGrads(
        contexts.reshape(-1), grads["in"].reshape(-1, d), targets.out_ids, grads["out"],
        grads.get("bias"), dense_grads(grads),
    )  # fmt: skip


def summed_loss(rows: dict, mask: jax.Array, targets: Targets, cfg) -> tuple[jax.Array, jax.Array]:
    """Σ over examples of weight · loss, and Σ weights. ``cfg`` is an `update.StepConfig`."""
    layer = output_layers.get(cfg.loss)
    inputs, weights, row = word2vec.example_inputs(
        rows["in"], mask, cfg.model, cfg.cbow_mean, cfg.cbow_exact_grad, rows.get("ctx")
    )
    samples = path = None
    if layer.sampled:
        samples = targets.samples[targets.group]  # [E, K]
    if layer.tree:
        path = (targets.codes[row], targets.points[row], targets.path_mask[row])  # [E, L] each
    per = layer.per_example(
        inputs, rows["out"], targets.labels[row], bias=rows.get("bias"), samples=samples,
        log_q=targets.log_q, path=path, chunk_size=cfg.chunk_size,
        remove_accidental_hits=cfg.remove_accidental_hits, penalty=cfg.penalty,
    )  # fmt: skip
    return jnp.sum(weights * per), jnp.sum(weights)
