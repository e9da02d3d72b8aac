"""The training state and one pure step; `step.runners` runs it with jit, pmap or a mesh.

Shape letters: B batch rows (per device under pmap), C context slots, D dim, V vocab,
K samples, n devices.

``train_step(state, batch, aux, lr, cfg=...) -> (state, metrics)`` is the whole update:
negatives are drawn inside from ``fold_in(state.key, state.step)``; ``aux`` (the layer's
`output_layers.Constants`: noise table and log q, or Huffman arrays) comes as an
argument; ``lr`` is the learning rate for this step, computed on the host from the words
processed (word2vec's linear decay).

Two update rules:
  * ``sparse=True`` (``sgd``, ``adagrad``, ``rowwise_adagrad``): the gradient w.r.t. the
    gathered rows only, applied to those rows of the (donated) tables by
    `optimizers.apply_rows`, so a step costs O(B·C·(K+2)·D), not O(V·D). ``sgd`` is
    word2vec's own (plain SGD on the summed loss, scatter-added); the AdaGrads sum each
    row's duplicates and update every unique row once. Each equals its dense form.
    Softmax's output table gets a dense gradient and the dense form of the same rule.
  * ``sparse=False``: any of ``sgd``, ``adagrad``, ``rowwise_adagrad``, ``adam`` through
    optax on dense full-table gradients.

A batch's rows are gathered, scored and scattered by `grouped` where a grouping applies
and by the generic per-example path `rows` otherwise (`row_functions`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from w2v_jax.model import output_layers, sampling, word2vec
from w2v_jax.step import grouped, optimizers, rows

OPTIMIZERS = optimizers.OPTIMIZERS


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Static settings of the step (hashable; never a ConfigDict inside jit)."""

    model: str = "skipgram"  # skipgram | cbow | lbl
    loss: str = "neg"  # an `output_layers` name: softmax | sampled_softmax | nce | neg | hs
    k: int = 5  # negative / noise samples per example (per group, see share)
    share: str = "pair"  # pair | row | block: who shares one set of K samples
    block_size: int = 64  # rows per shared set when share == "block"
    chunk_size: int | None = None  # softmax: vocabulary block of the streaming logsumexp
    remove_accidental_hits: bool = True  # sampled softmax
    penalty: float = 1.0  # softmax_penalty: the weight of Z − 1 − log Z
    cbow_mean: bool = True  # CBOW input = mean (True) or sum of context vectors
    cbow_exact_grad: bool = False  # CBOW: true gradient of the mean instead of word2vec's
    left_only: bool = False  # contexts are only previous words (asymmetric pairs)
    skipgram_input: str = "centre"  # sampled skip-gram: "centre" or "context" (word2vec C)
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
    if _is_sparse(cfg):
        opt_state = optimizers.init_sparse(cfg.optimizer, params, cfg.initial_accumulator)
    else:
        opt_state = make_transform(cfg).init(params)
    return TrainState(jnp.zeros((), jnp.int32), params, opt_state, step_key)


def _is_sparse(cfg: StepConfig) -> bool:
    return cfg.sparse


def _draw_samples(key, constants: output_layers.Constants, shape, axis_name):
    """Negatives for this step; under pmap each device takes its slice of the global draw."""
    if axis_name is None:
        return sampling.draw(key, constants.noise, shape)
    n = jax.lax.psum(1, axis_name)
    full = sampling.draw(key, constants.noise, (shape[0] * n, *shape[1:]))
    start = jax.lax.axis_index(axis_name) * shape[0]
    return jax.lax.dynamic_slice_in_dim(full, start, shape[0], axis=0)


def batch_samples(cfg: StepConfig, batch, aux: output_layers.Constants, key, axis_name=None):
    """This batch's negatives in the shape ``cfg.share`` asks for; None unless the layer
    samples."""
    if not output_layers.get(cfg.loss).sampled:
        return None
    b, c = batch.contexts.shape
    shape = rows.sample_shape(cfg.model, cfg.share, b, c, cfg.k, cfg.block_size)
    return _draw_samples(key, aux, shape, axis_name)


def batch_targets(
    cfg: StepConfig, batch, aux: output_layers.Constants, key, axis_name=None
) -> rows.Targets:
    """Draws this batch's negatives (sampled losses) and builds the output-side targets."""
    samples = batch_samples(cfg, batch, aux, key, axis_name)
    group = None
    if samples is not None:
        b, c = batch.contexts.shape
        group = rows.example_group(cfg.model, cfg.share, b, c, cfg.block_size)
    layer = output_layers.get(cfg.loss)
    return rows.make_targets(layer, batch.centers, samples, group, aux)


class RowFunctions(NamedTuple):
    """How one batch touches the tables: gather its rows, score them, scatter updates."""

    gather: Any  # params -> rows
    loss: Any  # rows -> (Σ weight · loss, Σ weight)
    scatter: Any  # (params, opt_state, row grads, lr) -> (params, opt_state); all-gathers
    # under pmap


def row_functions(
    cfg: StepConfig, batch, aux: output_layers.Constants, key, axis_name=None
) -> RowFunctions:
    """The fused grouped kernels where they apply (`grouped.supports`), else the generic,
    per-example loss-library path (softmax, per-pair negatives)."""
    layer = output_layers.get(cfg.loss)
    if grouped.supports(cfg):
        samples = batch_samples(cfg, batch, aux, key, axis_name)

        def scatter(params, opt_state, grads, lr):
            rows_batch, rows_samples = batch, samples
            if axis_name is not None:  # every replica applies every device's rows, in order
                gather = functools.partial(jax.lax.all_gather, axis_name=axis_name, tiled=True)
                rows_batch, rows_samples, grads = gather((batch, samples, grads))
            row_grads = grouped.row_grads(rows_batch, rows_samples, aux, layer, grads, centre_input)
            return _update_rows(cfg, params, opt_state, layer.table, row_grads, lr)

        centre_input = grouped.centre_predicts(cfg)
        return RowFunctions(
            lambda p: grouped.gather(p, batch, samples, aux, layer, centre_input),
            lambda gathered: grouped.summed_loss(gathered, batch, samples, aux, cfg),
            scatter,
        )
    targets = batch_targets(cfg, batch, aux, key, axis_name)

    def scatter(params, opt_state, grads, lr):
        contexts, rows_targets = batch.contexts, targets
        if axis_name is not None:
            contexts, rows_targets, grads = _all_gather_rows(contexts, targets, grads, axis_name)
        row_grads = rows.row_grads(contexts, rows_targets, grads)
        return _update_rows(cfg, params, opt_state, layer.table, row_grads, lr)

    return RowFunctions(
        lambda p: rows.gather(p, batch.contexts, targets, layer.table),
        lambda gathered: rows.summed_loss(gathered, batch.mask, targets, cfg),
        scatter,
    )


def _update_rows(cfg: StepConfig, params, opt_state, table, row_grads, lr):
    return rows.update_rows(
        params, opt_state, table, row_grads, lr, cfg.optimizer, cfg.eps, cfg.duplicate_power
    )


def eval_loss(params: dict, batch, aux: output_layers.Constants, key, *, cfg: StepConfig):
    """(Σ loss, Σ examples) of ``batch`` under the training objective, without an update."""
    fns = row_functions(cfg, batch, aux, key)
    return fns.loss(fns.gather(params))


def _norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree)))


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
    state: TrainState, batch, aux: output_layers.Constants, lr, *, cfg: StepConfig, axis_name=None
):
    """One update on ``batch`` (an `input_pipeline.Batch`: centers [B], contexts [B, C], mask).

    Returns the new state and metrics: ``loss`` (mean per example), ``lr``, ``examples``,
    ``grad_norm_in`` and ``grad_norm_out`` (of the summed loss), ``finite``.
    Under pmap (``axis_name`` set) the update is all-reduced so replicas stay identical.
    """
    key = jax.random.fold_in(state.key, state.step)
    fns = row_functions(cfg, batch, aux, key, axis_name)
    params = state.params
    if _is_sparse(cfg):
        gathered = fns.gather(params)
        (total, count), grads = jax.value_and_grad(fns.loss, has_aux=True)(gathered)
        grad_norm_in = _norm(grads["in"])
        grad_norm_out = _norm({k: v for k, v in grads.items() if k != "in"})
        params, opt_state = fns.scatter(params, state.opt_state, grads, lr)
    else:
        loss_of_params = lambda p: fns.loss(fns.gather(p))  # noqa: E731
        (total, count), grads = jax.value_and_grad(loss_of_params, has_aux=True)(params)
        if axis_name is not None:
            grads = jax.lax.psum(grads, axis_name)
        grad_norm_in = _norm(grads["in_embed"])
        grad_norm_out = _norm({k: v for k, v in grads.items() if k != "in_embed"})
        updates, opt_state = make_transform(cfg).update(grads, state.opt_state, params)
        params = jax.tree_util.tree_map(lambda p, u: p - lr * u, params, updates)
    if axis_name is not None:
        total, count = jax.lax.psum((total, count), axis_name)
    loss = total / jnp.maximum(count, 1.0)
    metrics = {
        "loss": loss,
        "lr": jnp.asarray(lr, jnp.float32),
        "examples": count,
        "grad_norm_in": grad_norm_in,
        "grad_norm_out": grad_norm_out,
        "finite": jnp.isfinite(loss),
    }
    return TrainState(state.step + 1, params, opt_state, state.key), metrics


def _all_gather_rows(contexts, targets: rows.Targets, grads: dict, axis_name):
    """Row ids and row gradients of every device, concatenated in device order.

    Each replica then applies the same scatter-add, so replicas stay bit-identical. A
    dense output gradient (softmax) is summed with ``psum`` instead.
    """
    gather = functools.partial(jax.lax.all_gather, axis_name=axis_name, tiled=True)
    out = {"in": gather(grads["in"])}
    reduce = functools.partial(jax.lax.psum, axis_name=axis_name)
    if targets.out_ids is not None:
        targets = targets._replace(out_ids=gather(targets.out_ids))
        reduce = gather
    out["out"] = reduce(grads["out"])
    if "bias" in grads:
        out["bias"] = reduce(grads["bias"])
    return gather(contexts), targets, out


def learning_rate(alpha: float, min_alpha: float, progress: float) -> np.float32:
    """word2vec's linear decay from ``alpha`` to ``min_alpha`` as ``progress`` goes 0 → 1."""
    p = min(max(progress, 0.0), 1.0)
    return np.float32(alpha - (alpha - min_alpha) * p)
