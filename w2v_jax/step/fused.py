"""Fused kernels: the sampled losses and HS on whole rows, as batched matmuls.

Shape letters: B batch rows, C context slots (1 for CBOW), D dim, K samples,
G sample groups (B for ``share="row"``, B / block for ``share="block"``), R rows per
group, L Huffman path length.

Who predicts whom, and per what the negatives are drawn, is the table in docs/training.md
("Negatives"): the contexts predict the centre (their vectors, CBOW's mean, one Huffman
path per row), except skip-gram's sampled losses with ``skipgram_input="centre"`` and a
two-sided window, where the centre predicts its contexts (`centre_predicts`: one input
vector per row, so a shared set of K negatives is scored once).

The generic path (`rows.summed_loss`) calls the loss library per example, which
gathers the label's output vector once per (centre, context) pair and the negatives
once per pair. Here a row's centre vector is gathered once and its negatives once per
sample group, so the scores are batched matmuls and the update scatters B + G·K output
rows instead of B·C·(K+1). The maths is the loss library's: both compose the same logits-level core
(`losses.terms`), so this module keeps only its gathering, scoring and scattering; tests
check that both paths give the same loss and the same gradients on the same samples.
Padding ids read zeros and their updates are dropped, as in `rows`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from w2v_jax.model import losses, output_layers, word2vec
from w2v_jax.model.losses import terms
from w2v_jax.step import rows as rows_lib


def supports(cfg) -> bool:
    """Whether ``cfg`` (an `update.StepConfig`) runs on the fused path: the tree always,
    a sampled layer when its samples are shared or its input is one vector per row."""
    layer = output_layers.get(cfg.loss)
    if layer.tree:
        return True
    if not layer.sampled:
        return False
    one_example_per_row = cfg.model in ("cbow", "lbl")
    return cfg.share in ("row", "block") or one_example_per_row or centre_predicts(cfg)


def centre_predicts(cfg) -> bool:
    """Whether the centre's vector predicts its contexts: skip-gram, a sampled loss,
    ``skipgram_input="centre"``, a two-sided window. Otherwise the contexts predict the
    centre (docs/training.md, "Negatives")."""
    return (
        cfg.model == "skipgram"
        and not output_layers.get(cfg.loss).tree
        and not cfg.left_only
        and cfg.skipgram_input == "centre"
    )


def gather(
    params: dict,
    batch,
    samples,
    constants: output_layers.Constants,
    layer: output_layers.OutputLayer,
    centre_input=False,
) -> dict:
    """Rows of this batch. Contexts predict the centre: ``in`` [B, C, D], ``pos`` [B, D]
    or ``path`` [B, L, D], ``neg`` [G, K, D]. The centre predicts its contexts
    (``centre_input``): ``in`` [B, D], ``pos`` [B, C, D], ``neg`` [G, K, D].
    Biases ``pos_bias`` / ``neg_bias`` come along when the model has them, and the
    log-bilinear model's context matrices as ``ctx`` (whole: a dense parameter)."""
    in_ids, pos_ids = (batch.centres, batch.contexts) if centre_input else (batch.contexts, None)
    rows = {"in": losses.take(params["in_embed"], in_ids)}  # V: zeros
    if "ctx_matrices" in params:
        rows["ctx"] = params["ctx_matrices"]
    if layer.tree:
        points = constants.paths(batch.centres)[1]  # [B, L]; V - 1 on padding
        rows["path"] = losses.take(params[layer.table], points)
        return rows
    pos_ids = batch.centres if pos_ids is None else pos_ids
    rows["pos"], pos_bias = rows_lib.output_rows(params, layer.table, pos_ids)
    rows["neg"], neg_bias = rows_lib.output_rows(params, layer.table, samples)
    if pos_bias is not None:
        rows["pos_bias"], rows["neg_bias"] = pos_bias, neg_bias
    return rows


def row_grads(
    batch,
    samples,
    constants: output_layers.Constants,
    layer: output_layers.OutputLayer,
    grads: dict,
    centre_input=False,
    gathered: dict | None = None,
) -> rows_lib.RowGrads:
    """`gather`'s row gradients ``grads`` with the table rows they belong to, and (given
    ``gathered``, `gather`'s rows) those rows' weights in the same order."""
    d = grads["in"].shape[-1]
    in_ids, pos_ids = batch.contexts, batch.centres
    if centre_input:
        in_ids, pos_ids = batch.centres, batch.contexts
    in_ids, in_grads = in_ids.reshape(-1), grads["in"].reshape(-1, d)
    dense = rows_lib.dense_grads(grads)
    if layer.tree:
        points = constants.paths(batch.centres)[1].reshape(-1)  # V - 1: dropped
        path_grads = grads["path"].reshape(-1, d)
        out = rows_lib.RowGrads(in_ids, in_grads, points, path_grads, None, dense)
        if gathered is not None:
            out = out._replace(
                in_rows=gathered["in"].reshape(-1, d), out_rows=gathered["path"].reshape(-1, d)
            )
        return out
    ids = jnp.concatenate([pos_ids.reshape(-1), samples.reshape(-1)])
    out_grads = jnp.concatenate([grads["pos"].reshape(-1, d), grads["neg"].reshape(-1, d)])
    bias_grads = None
    if "pos_bias" in grads:
        bias_grads = jnp.concatenate([grads["pos_bias"].reshape(-1), grads["neg_bias"].reshape(-1)])
    out = rows_lib.RowGrads(in_ids, in_grads, ids, out_grads, bias_grads, dense)
    if gathered is not None:
        out_rows = jnp.concatenate([gathered["pos"].reshape(-1, d), gathered["neg"].reshape(-1, d)])
        out = out._replace(in_rows=gathered["in"].reshape(-1, d), out_rows=out_rows)
    return out


def _inputs(rows: dict, mask, cfg):
    """Per-row example inputs [B, C', D] and weights [B, C'] (CBOW and lbl: C' = 1)."""
    if cfg.model == "skipgram":
        return rows["in"], mask
    h, weights, _ = word2vec.example_inputs(
        rows["in"], mask, cfg.model, cfg.cbow_mean, cfg.cbow_exact_grad, rows.get("ctx")
    )
    return h[:, None, :], weights[:, None]


def _centre_input_loss(rows: dict, batch, samples, constants: output_layers.Constants, cfg):
    """Skip-gram, the centre predicting each valid context slot.

    Every pair of a row shares the input vector. With per-pair samples ([B, C, K],
    word2vec's estimator) the negative logits are [B, C, K]; with row or block sharing
    ([G, K]) they are computed once per row, [B, K], and count for each of its pairs.
    """
    layer = output_layers.get(cfg.loss)
    x, mask = rows["in"], batch.mask  # [B, D], [B, C]
    b = x.shape[0]
    k = samples.shape[-1]
    pos = jnp.einsum("bd,bcd->bc", x, rows["pos"])  # [B, C]
    if samples.ndim == 3:  # per pair
        # [B, C·K] logits, then [B, C, K]: XLA:CPU runs a dot with two free dims on one
        # side much slower than the same dot with them merged (docs/performance.md).
        neg = jnp.einsum("bd,bxd->bx", x, rows["neg"].reshape(b, -1, x.shape[-1]))
        neg = neg.reshape(samples.shape)  # [B, C, K]
        sample_ids = samples
    else:
        g = samples.shape[0]
        neg = jnp.einsum("grd,gkd->grk", x.reshape(g, b // g, -1), rows["neg"]).reshape(b, k)
        sample_ids = jnp.repeat(samples, b // g, axis=0)  # [B, K]
    if "pos_bias" in rows:
        pos = pos + rows["pos_bias"]
        neg_bias = rows["neg_bias"]
        neg = neg + (neg_bias if samples.ndim == 3 else jnp.repeat(neg_bias, b // g, axis=0))
    if layer.correction is not None:
        pos = layer.correction(pos, constants.log_q_at(batch.contexts), k)
        neg = layer.correction(neg, constants.log_q_at(sample_ids), k)
    count = jnp.sum(mask)
    ids = sample_ids if sample_ids.ndim == 3 else sample_ids[:, None, :]  # [B, C or 1, K]
    hits = None
    if cfg.remove_accidental_hits and layer.drops_hits:
        hits = ids == batch.contexts[..., None]  # [B, C, K]: the sample is the pair's label
    if not layer.binary:  # sampled softmax: each pair's softmax over its label and samples
        logits = neg if neg.ndim == 3 else jnp.broadcast_to(neg[:, None, :], (*mask.shape, k))
        per = terms.sampled_softmax_terms(pos, logits, hits)  # [B, C]
        return jnp.sum(mask * per), count
    if neg.ndim == 3:  # per pair
        true_term, noise_term = terms.sigmoid_terms(pos, neg, None if hits is None else ~hits)
        return jnp.sum(mask * (true_term + noise_term)), count
    # A row's noise terms [B, K] count once for each of its valid pairs, less the pairs
    # whose label the sample equals.
    if hits is None:
        true_term, noise_term = terms.sigmoid_terms(pos, neg)  # [B, C], [B]
        return jnp.sum(mask * true_term) + jnp.sum(jnp.sum(mask, axis=1) * noise_term), count
    pairs = jnp.sum(mask[..., None] * ~hits, axis=1)  # [B, K]
    true_term, noise_term = terms.sigmoid_terms(pos, neg, pairs)  # [B, C], [B]
    return jnp.sum(mask * true_term) + jnp.sum(noise_term), count


def summed_loss(
    rows: dict, batch, samples, constants: output_layers.Constants, cfg
) -> tuple[jax.Array, jax.Array]:
    """Σ weight · loss over the batch's examples, and Σ weight (as `rows.summed_loss`)."""
    if centre_predicts(cfg):
        return _centre_input_loss(rows, batch, samples, constants, cfg)
    layer = output_layers.get(cfg.loss)
    x, weights = _inputs(rows, batch.mask, cfg)  # [B, C, D], [B, C]
    b, c, d = x.shape
    if layer.tree:
        logits = jnp.einsum("bcd,bld->bcl", x, rows["path"])  # [B, C, L]
        codes, _, path_mask = constants.paths(batch.centres)  # [B, L] each
        per = terms.tree_terms(logits, codes[:, None, :], path_mask[:, None, :])  # [B, C]
        return jnp.sum(weights * per), jnp.sum(weights)
    g, k = samples.shape
    pos = jnp.einsum("bcd,bd->bc", x, rows["pos"])  # [B, C]
    neg = jnp.einsum("gxd,gkd->gxk", x.reshape(g, (b // g) * c, d), rows["neg"])
    neg = neg.reshape(b, c, k)  # [B, C, K]
    if "pos_bias" in rows:
        pos = pos + rows["pos_bias"][:, None]
        neg = neg + jnp.repeat(rows["neg_bias"], b // g, axis=0)[:, None, :]
    sample_ids = jnp.repeat(samples, b // g, axis=0)[:, None, :]  # [B, 1, K]
    if layer.correction is not None:
        pos = layer.correction(pos, constants.log_q_at(batch.centres)[:, None], k)
        neg = layer.correction(neg, constants.log_q_at(sample_ids), k)
    hits = None
    if cfg.remove_accidental_hits and layer.drops_hits:
        hits = sample_ids == batch.centres[:, None, None]  # [B, 1, K]
    if layer.binary:
        true_term, noise_term = terms.sigmoid_terms(pos, neg, None if hits is None else ~hits)
        per = true_term + noise_term
    else:  # sampled softmax over {label} ∪ samples
        per = terms.sampled_softmax_terms(pos, neg, hits)
    return jnp.sum(weights * per), jnp.sum(weights)
