"""The training state and one pure step; `step.runners` runs it with jit, pmap or a mesh.

Shape letters: B batch rows (per device under pmap), C context slots, D dim, V vocab,
K samples, n devices.

``train_step(state, batch, aux, lr, cfg=...) -> (state, metrics)`` is the whole update:
negatives are drawn inside from ``fold_in(state.key, state.step)``; ``aux`` (the layer's
`output_layers.Constants`: noise table and log q, or Huffman arrays) comes as an
argument; ``lr`` is the learning rate for this step, computed on the host from the words
processed (word2vec's linear decay).

Two update rules: ``sparse=True`` (``sgd``, ``adagrad``, ``rowwise_adagrad``) takes the
gradient w.r.t. the gathered rows only and applies it to those rows of the (donated) tables
(`optimizers.apply_rows`), O(B·C·(K+2)·D) per step and equal to the dense form (softmax's
output table gets a dense gradient); ``sparse=False`` runs any of them or ``adam`` through
optax on dense full-table gradients.

A batch's rows are gathered, scored and scattered by `fused` where a grouping applies
and by the generic per-example path `rows` otherwise (`row_functions`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from w2v_jax.model import output_layers, sampling, word2vec
from w2v_jax.step import exchange, fused, optimizers, rows


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Static settings of the step (hashable; never a ConfigDict inside jit)."""

    model: str = "skipgram"  # skipgram | cbow | lbl
    loss: str = "neg"  # an `output_layers` name: softmax | sampled_softmax | nce | neg | hs
    k: int = 5  # negative / noise samples per example (per group, see share)
    share: str = "pair"  # pair | row | block: who shares one set of K samples
    block_size: int = 64  # rows per shared set when share == "block"
    chunk_size: int | None = None  # softmax: vocabulary block of the streaming logsumexp
    remove_accidental_hits: bool = True  # neg, sampled softmax: drop samples equal to the label
    penalty: float = 1.0  # softmax_penalty: the weight of Z − 1 − log Z
    cbow_mean: bool = True  # CBOW input = mean (True) or sum of context vectors
    cbow_exact_grad: bool = False  # CBOW: true gradient of the mean instead of word2vec's
    left_only: bool = False  # contexts are only previous words (asymmetric pairs)
    skipgram_input: str = "centre"  # sampled skip-gram: who predicts (docs/training.md)
    optimizer: str = "sgd"  # sgd | adagrad | rowwise_adagrad | adam
    sparse: bool = True  # update only the rows a batch touches (not adam)
    duplicate_power: float = 0.0  # sparse sgd: a row's n summed updates scaled by n^-power
    initial_accumulator: float = 0.1  # adagrads: initial sum of squared gradients
    eps: float = 1e-7  # adagrads: added under the root (per element) or to it (row-wise)
    # every matmul of the step (jax.default_matmul_precision; evaluation is always float32)
    matmul_precision: str = "float32"


class TrainState(NamedTuple):
    step: jax.Array  # [] int32, number of updates applied
    params: dict  # see word2vec.init_params
    opt_state: Any  # dense: optax state; sparse: () for SGD, else a dict of accumulators
    key: jax.Array  # [2] uint32 base RNG key; step keys are fold_in(key, step)


def make_transform(cfg: StepConfig) -> optax.GradientTransformation:
    """The dense optimiser without its learning rate (the step scales by -lr itself)."""
    return optimizers.make_transform(
        cfg.optimizer, initial_accumulator=cfg.initial_accumulator, eps=cfg.eps
    )


def init_state(
    key: jax.Array,
    vocab_size: int,
    dim: int,
    cfg: StepConfig,
    use_bias=False,
    *,
    ctx_matrices=None,
    bias_init=None,
):
    """The state at step 0; ``ctx_matrices`` and ``bias_init`` as `word2vec.init_params`."""
    init_key, step_key = jax.random.split(key)
    params = word2vec.init_params(
        init_key, vocab_size, dim, cfg.loss, use_bias,
        ctx_matrices=ctx_matrices, bias_init=bias_init,
    )  # fmt: skip
    if cfg.sparse:
        opt_state = optimizers.init_sparse(cfg.optimizer, params, cfg.initial_accumulator)
    else:
        opt_state = make_transform(cfg).init(params)
    return TrainState(jnp.zeros((), jnp.int32), params, opt_state, step_key)


def batch_samples(cfg: StepConfig, batch, aux: output_layers.Constants, key, axis_name=None):
    """This batch's negatives in the shape ``cfg.share`` asks for; None unless the layer
    samples. Under pmap (``axis_name``) each device takes its slice of the global draw."""
    if not output_layers.get(cfg.loss).sampled:
        return None
    b, c = batch.contexts.shape
    shape = rows.sample_shape(cfg.model, cfg.share, b, c, cfg.k, cfg.block_size)
    if axis_name is None:
        return sampling.draw(key, aux.noise, shape)
    n = jax.lax.psum(1, axis_name)
    full = sampling.draw(key, aux.noise, (shape[0] * n, *shape[1:]))
    start = jax.lax.axis_index(axis_name) * shape[0]
    return jax.lax.dynamic_slice_in_dim(full, start, shape[0], axis=0)


class RowFunctions(NamedTuple):
    """How one batch touches the tables: gather its rows, score them, name their gradients."""

    gather: Any  # params -> rows
    loss: Any  # rows -> (Σ weight · loss, Σ weight)
    row_grads: Any  # (gradients of the rows, the rows) -> `rows.RowGrads` (where they go)


def row_functions(
    cfg: StepConfig, batch, aux: output_layers.Constants, key, axis_name=None
) -> RowFunctions:
    """The fused kernels where they apply (`fused.supports`), else the generic,
    per-example loss-library path (softmax; per-pair negatives with context input; the
    table in docs/training.md, "Negatives"). ``axis_name``: the data axis when this device
    holds one slice of the batch (negatives are its slice of the global draw)."""
    layer = output_layers.get(cfg.loss)
    samples = batch_samples(cfg, batch, aux, key, axis_name)
    if fused.supports(cfg):
        centre_input = fused.centre_predicts(cfg)
        return RowFunctions(
            lambda p: fused.gather(p, batch, samples, aux, layer, centre_input),
            lambda gathered: fused.summed_loss(gathered, batch, samples, aux, cfg),
            lambda g, gathered=None: fused.row_grads(
                batch, samples, aux, layer, g, centre_input, gathered
            ),
        )
    group = None
    if samples is not None:
        group = rows.example_group(cfg.model, cfg.share, *batch.contexts.shape, cfg.block_size)
    targets = rows.make_targets(layer, batch.centres, samples, group, aux)
    return RowFunctions(
        lambda p: rows.gather(p, batch.contexts, targets, layer.table),
        lambda gathered: rows.summed_loss(gathered, batch.mask, targets, cfg),
        lambda g, gathered=None: rows.row_grads(batch.contexts, targets, g),
    )


def eval_loss(params: dict, batch, aux: output_layers.Constants, key, *, cfg: StepConfig):
    """(Σ loss, Σ examples) of ``batch`` under the training objective, without an update."""
    fns = row_functions(cfg, batch, aux, key)
    return fns.loss(fns.gather(params))


class Axes(NamedTuple):
    """Where a step runs when it runs on one slice of a mesh (`jax.shard_map` or pmap).

    ``data``: the axis the batch is split along (the step's row gradients are shared over
    it, `exchange.share`). ``vocab``: the axis the tables in ``sharded`` (params keys; their
    optimiser state follows) are split along by rows, V/m rows per device.
    """

    data: str | None = None
    vocab: str | None = None
    sharded: frozenset = frozenset()


def _sum_sq(tree) -> jax.Array:
    return sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree))


def _dense_keys(cfg: StepConfig) -> frozenset:
    """Params keys whose gradient covers the whole table (softmax's output layer)."""
    layer = output_layers.get(cfg.loss)
    return frozenset() if layer.sampled or layer.tree else frozenset({layer.table, "out_bias"})


def _views(params: dict, axes: Axes, whole: frozenset) -> dict:
    """``params`` as the gathers see them: a V-sharded table is looked up across its shards
    (`exchange.ShardedRows`), or gathered whole when it is in ``whole``."""
    out = dict(params)
    for k in axes.sharded & out.keys():
        if k in whole:
            out[k] = jax.lax.all_gather(params[k], axes.vocab, tiled=True)
        else:
            out[k] = exchange.ShardedRows(params[k], axes.vocab)
    return out


def _to_shards(grads: rows.RowGrads, params: dict, table: str, axes: Axes) -> rows.RowGrads:
    """Global row gradients as this device's shards: ids it does not own are dropped,
    whole-table gradients sliced to its rows."""

    def ids(key, x):
        if x is None or key not in axes.sharded:
            return x
        return exchange.local_ids(x, params[key].shape[0], axes.vocab)

    def own(key, g):
        if g is None or key not in axes.sharded:
            return g
        return exchange.own_slice(g, params[key].shape[0], axes.vocab)

    out_ids = ids(table, grads.out_ids)
    out_grads, bias = grads.out_grads, grads.bias_grads
    if grads.out_ids is None:
        out_grads, bias = own(table, out_grads), own("out_bias", bias)
    dense = None if grads.dense is None else {k: own(k, g) for k, g in grads.dense.items()}
    return grads._replace(
        in_ids=ids("in_embed", grads.in_ids), out_ids=out_ids, out_grads=out_grads,
        bias_grads=bias, dense=dense, in_rows=None, out_rows=None,  # gathered again
    )  # fmt: skip


def _global_rows(params: dict, axes: Axes) -> dict:
    """{params key: rows of that table before any sharding}."""
    m = 1 if axes.vocab is None else jax.lax.axis_size(axes.vocab)
    return {k: v.shape[0] * (m if k in axes.sharded else 1) for k, v in params.items()}


def _at_matmul_precision(step):
    """``step`` with every matmul it traces at ``cfg.matmul_precision`` (not the backend's
    default: bf16 passes on TPU, TF32 on Ampere+ GPUs); jit caches each setting apart."""

    def wrapped(*args, cfg: StepConfig, **kwargs):
        with jax.default_matmul_precision(cfg.matmul_precision):
            return step(*args, cfg=cfg, **kwargs)

    wrapped.__name__, wrapped.__doc__, wrapped.__wrapped__ = step.__name__, step.__doc__, step
    return wrapped


@_at_matmul_precision
def train_step(
    state: TrainState,
    batch,
    aux: output_layers.Constants,
    lr,
    *,
    cfg: StepConfig,
    axis_name=None,
    axes: Axes | None = None,
):
    """One update on ``batch`` (an `input_pipeline.Batch`: centres [B], contexts [B, C], mask).

    Returns the new state and metrics: ``loss`` (mean per example), ``lr``, ``examples``,
    ``grad_norm_in`` and ``grad_norm_out`` (of the summed loss), ``finite``.

    On one slice of a mesh (``axes``, or ``axis_name`` for pmap's data axis) the batch is
    this device's rows: the sparse path shares summed row gradients (`exchange.share`),
    the dense path psums its gradients, and the metrics are the global batch's, so every
    device ends with the same state (with ``axes.sharded``: its shard of it).
    """
    axes = axes or Axes(data=axis_name)
    key = jax.random.fold_in(state.key, state.step)
    fns = row_functions(cfg, batch, aux, key, axes.data)
    layer = output_layers.get(cfg.loss)
    params = state.params
    psum = (lambda x: x) if axes.data is None else (lambda x: jax.lax.psum(x, axes.data))
    if cfg.sparse:
        gathered = fns.gather(_views(params, axes, _dense_keys(cfg)))
        (total, count), grads = jax.value_and_grad(fns.loss, has_aux=True)(gathered)
        sq_in = psum(_sum_sq(grads["in"]))
        sq_out = psum(_sum_sq({k: v for k, v in grads.items() if k != "in"}))
        row_grads = fns.row_grads(grads, gathered)  # the rows' weights too: no second gather
        if axes.data is not None and jax.lax.axis_size(axes.data) > 1:  # else: nothing to send
            num = _global_rows(params, axes)
            row_grads = exchange.share(row_grads, {**num, "out": num[layer.table]}, axes.data)
        if axes.sharded:
            row_grads = _to_shards(row_grads, params, layer.table, axes)
        params, opt_state = rows.update_rows(
            params, state.opt_state, layer.table, row_grads, lr, cfg.optimizer, cfg.eps,
            cfg.duplicate_power,
        )  # fmt: skip
    else:
        whole = _views(params, axes, frozenset(axes.sharded))
        loss_of_params = lambda p: fns.loss(fns.gather(p))  # noqa: E731
        (total, count), grads = jax.value_and_grad(loss_of_params, has_aux=True)(whole)
        grads = psum(grads)
        sq_in = _sum_sq(grads["in_embed"])
        sq_out = _sum_sq({k: v for k, v in grads.items() if k != "in_embed"})
        grads = {
            k: exchange.own_slice(g, params[k].shape[0], axes.vocab) if k in axes.sharded else g
            for k, g in grads.items()
        }
        updates, opt_state = make_transform(cfg).update(grads, state.opt_state, params)
        params = jax.tree_util.tree_map(lambda p, u: p - lr * u, params, updates)
    total, count = psum((total, count))
    loss = total / jnp.maximum(count, 1.0)
    metrics = {
        "loss": loss,
        "lr": jnp.asarray(lr, jnp.float32),
        "examples": count,
        "grad_norm_in": jnp.sqrt(sq_in),
        "grad_norm_out": jnp.sqrt(sq_out),
        "finite": jnp.isfinite(loss),
    }
    return TrainState(state.step + 1, params, opt_state, state.key), metrics


def learning_rate(alpha: float, min_alpha: float, progress):
    """word2vec's linear decay from ``alpha`` to ``min_alpha`` as ``progress`` goes 0 → 1:
    float32, of the shape of ``progress`` (a number, or float64 [n] for a call's steps),
    computed in float64 and rounded once."""
    p = np.clip(progress, 0.0, 1.0)
    return np.float32(alpha - (alpha - min_alpha) * p)  # an array stays an array
