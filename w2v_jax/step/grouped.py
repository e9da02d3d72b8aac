"""Fused grouped kernels: the sampled losses and HS on whole rows, as batched matmuls.

Shape letters: B batch rows, C context slots (1 for CBOW), D dim, K samples,
G sample groups (B for ``share="row"``, B / block for ``share="block"``), R rows per
group, L Huffman path length.

Which word of a skip-gram pair is the input? A two-sided window yields a symmetric
multiset of ordered (x, y) pairs — (w, c) occurs as often as (c, w) — so training
q(y | x) = softmax_y(in[x]·out[y]) on "context predicts centre" (word2vec C) or on
"centre predicts context" (the paper) is the same objective; only the grouping of a row
differs. Each kernel takes the cheaper grouping: the sampled losses let the centre
predict its contexts (one input vector per row, so its K negatives are scored once),
hierarchical softmax lets the contexts predict the centre (one Huffman path per row).
Left-only windows are not symmetric: skip-gram with ``left_only`` keeps the generic,
context-predicts-centre path.

The generic path (`word2vec.summed_loss`) calls the loss library per example, which
gathers the label's output vector once per (centre, context) pair and the negatives
once per pair. Here a row's centre vector is gathered once and its negatives once per
sample group, so the scores are batched matmuls and the update scatters B + G·K output
rows instead of B·C·(K+1). The maths is the loss library's, term by term; tests check
that both paths give the same loss and the same gradients on the same samples.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from w2v_jax.model import word2vec

LOSSES = ("neg", "nce", "sampled_softmax", "hs")


def supports(cfg) -> bool:
    """Whether ``cfg`` (a `train.StepConfig`) runs on the fused path."""
    if cfg.loss == "hs":
        return True
    if cfg.loss not in LOSSES:
        return False
    return cfg.share in ("row", "block") or cfg.model == "cbow" or centre_predicts(cfg)


def centre_predicts(cfg) -> bool:
    """Skip-gram sampled losses: the centre's vector predicts its contexts (see above),
    unless ``cfg.skipgram_input == "context"`` asks for word2vec C's grouping."""
    return (
        cfg.model == "skipgram"
        and cfg.loss != "hs"
        and not cfg.left_only
        and cfg.skipgram_input == "centre"
    )


def gather(params: dict, batch, samples, aux: word2vec.Aux, loss: str, centre_input=False) -> dict:
    """Rows of this batch. Contexts predict the centre: ``in`` [B, C, D], ``pos`` [B, D]
    or ``path`` [B, L, D], ``neg`` [G, K, D]. The centre predicts its contexts
    (``centre_input``): ``in`` [B, D], ``pos`` [B, C, D], ``neg`` [G, K, D].
    Biases ``pos_bias`` / ``neg_bias`` come along when the model has them."""
    table = params[word2vec.output_table(loss)]
    if centre_input:
        rows = {
            "in": params["in_embed"][batch.centers],
            "pos": table[batch.contexts],
            "neg": table[samples],
        }
        if "out_bias" in params:
            rows["pos_bias"] = params["out_bias"][batch.contexts]
            rows["neg_bias"] = params["out_bias"][samples]
        return rows
    rows = {"in": params["in_embed"][batch.contexts]}
    if loss == "hs":
        rows["path"] = table[aux.points[batch.centers]]
        return rows
    rows["pos"] = table[batch.centers]
    rows["neg"] = table[samples]
    if "out_bias" in params:
        rows["pos_bias"] = params["out_bias"][batch.centers]
        rows["neg_bias"] = params["out_bias"][samples]
    return rows


def scatter_add(
    params: dict,
    batch,
    samples,
    aux: word2vec.Aux,
    loss: str,
    grads: dict,
    scale,
    centre_input=False,
    power=0.0,
):
    """params + scale · grads with every row gradient scatter-added into its table
    (``power`` > 0: duplicate rows scaled by `word2vec.duplicate_factor`)."""
    name = word2vec.output_table(loss)
    new = dict(params)
    d = params["in_embed"].shape[1]
    in_ids, pos_ids = batch.contexts, batch.centers
    if centre_input:
        in_ids, pos_ids = batch.centers, batch.contexts
    in_rows = scale * grads["in"].reshape(-1, d)
    new["in_embed"], _ = word2vec.scatter_rows(
        params["in_embed"], in_ids.reshape(-1), in_rows, power
    )
    if loss == "hs":
        points = aux.points[batch.centers].reshape(-1)
        path_rows = scale * grads["path"].reshape(-1, d)
        new[name], _ = word2vec.scatter_rows(params[name], points, path_rows, power)
        return new
    ids = jnp.concatenate([pos_ids.reshape(-1), samples.reshape(-1)])
    out_rows = jnp.concatenate([grads["pos"].reshape(-1, d), grads["neg"].reshape(-1, d)])
    bias, bias_rows = params.get("out_bias"), None
    if bias is not None:
        bias_rows = scale * jnp.concatenate(
            [grads["pos_bias"].reshape(-1), grads["neg_bias"].reshape(-1)]
        )
    new[name], new_bias = word2vec.scatter_rows(
        params[name], ids, scale * out_rows, power, bias, bias_rows
    )
    if bias is not None:
        new["out_bias"] = new_bias
    return new


def _inputs(rows_in, mask, cfg):
    """Per-row example inputs [B, C', D] and weights [B, C'] (CBOW: C' = 1)."""
    if cfg.model == "skipgram":
        return rows_in, mask
    h, weights, _ = word2vec.example_inputs(
        rows_in, mask, "cbow", cfg.cbow_mean, cfg.cbow_exact_grad
    )
    return h[:, None, :], weights[:, None]


def _centre_input_loss(rows: dict, batch, samples, aux: word2vec.Aux, cfg):
    """Skip-gram, the centre predicting each valid context slot.

    Every pair of a row shares the input vector. With per-pair samples ([B, C, K],
    word2vec's estimator) the negative logits are [B, C, K]; with row or block sharing
    ([G, K]) they are computed once per row, [B, K], and count for each of its pairs.
    """
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
    count = jnp.sum(mask)
    if cfg.loss == "sampled_softmax":
        pos = pos - aux.log_q[batch.contexts]
        neg = neg - aux.log_q[sample_ids]
        logits = neg if neg.ndim == 3 else jnp.broadcast_to(neg[:, None, :], (*mask.shape, k))
        ids = sample_ids if sample_ids.ndim == 3 else sample_ids[:, None, :]
        if cfg.remove_accidental_hits:
            logits = jnp.where(ids == batch.contexts[..., None], -jnp.inf, logits)
        per = jnp.logaddexp(pos, jax.nn.logsumexp(logits, axis=-1)) - pos  # [B, C]
        return jnp.sum(mask * per), count
    if cfg.loss == "nce":
        log_k = math.log(k)
        pos = pos - log_k - aux.log_q[batch.contexts]
        neg = neg - log_k - aux.log_q[sample_ids]
    pos_part = -jnp.sum(mask * jax.nn.log_sigmoid(pos))
    neg_terms = jnp.sum(jax.nn.log_sigmoid(-neg), axis=-1)  # [B, C] or [B]
    weights = mask if neg_terms.ndim == 2 else jnp.sum(mask, axis=1)
    return pos_part - jnp.sum(weights * neg_terms), count


def summed_loss(rows: dict, batch, samples, aux: word2vec.Aux, cfg) -> tuple[jax.Array, jax.Array]:
    """Σ weight · loss over the batch's examples, and Σ weight (as `word2vec.summed_loss`)."""
    if centre_predicts(cfg):
        return _centre_input_loss(rows, batch, samples, aux, cfg)
    x, weights = _inputs(rows["in"], batch.mask, cfg)  # [B, C, D], [B, C]
    b, c, d = x.shape
    if cfg.loss == "hs":
        logits = jnp.einsum("bcd,bld->bcl", x, rows["path"])  # [B, C, L]
        codes = aux.codes[batch.centers][:, None, :]  # [B, 1, L]
        path_mask = aux.path_mask[batch.centers][:, None, :]
        per = -jnp.sum(path_mask * jax.nn.log_sigmoid((1 - 2 * codes) * logits), axis=-1)
        return jnp.sum(weights * per), jnp.sum(weights)
    g, k = samples.shape
    pos = jnp.einsum("bcd,bd->bc", x, rows["pos"])  # [B, C]
    neg = jnp.einsum("gxd,gkd->gxk", x.reshape(g, (b // g) * c, d), rows["neg"])
    neg = neg.reshape(b, c, k)  # [B, C, K]
    if "pos_bias" in rows:
        pos = pos + rows["pos_bias"][:, None]
        neg = neg + jnp.repeat(rows["neg_bias"], b // g, axis=0)[:, None, :]
    sample_ids = jnp.repeat(samples, b // g, axis=0)[:, None, :]  # [B, 1, K]
    if cfg.loss == "neg":
        per = -jax.nn.log_sigmoid(pos) - jnp.sum(jax.nn.log_sigmoid(-neg), axis=-1)
    else:
        pos = pos - aux.log_q[batch.centers][:, None]
        neg = neg - aux.log_q[sample_ids]
        if cfg.loss == "nce":
            log_k = math.log(k)
            per = -jax.nn.log_sigmoid(pos - log_k) - jnp.sum(
                jax.nn.log_sigmoid(-(neg - log_k)), axis=-1
            )
        else:  # sampled softmax over {label} ∪ samples
            if cfg.remove_accidental_hits:
                hit = sample_ids == batch.centers[:, None, None]  # [B, 1, K]
                neg = jnp.where(hit, -jnp.inf, neg)
            logits = jnp.concatenate([pos[..., None], neg], axis=-1)  # [B, C, 1 + K]
            per = jax.nn.logsumexp(logits, axis=-1) - pos
    return jnp.sum(weights * per), jnp.sum(weights)
