"""Optimisers for embedding tables: word2vec's sparse SGD, exact sparse AdaGrad
(per-element and row-wise) and the dense optax transforms.

Shape letters: V rows of a table, D row width (absent for a bias table [V]), N row
updates of one step (ids with duplicates), U = N unique-row slots (padded).

A sparse step gives each table ``ids`` [N] and row gradients ``grads`` [N, D] in which a
word may occur many times (docs/training.md, "Large batches"). **SGD** (word2vec's)
scatter-adds ``-lr · grads``: exactly SGD on the summed loss (`duplicate_factor` scales a
row's n updates by n^-p). **AdaGrad, exact** (TF's ``_deduplicate_indexed_slices``,
FBGEMM's ``EXACT_*``) sums each unique row's gradients (`unique_rows`, `sum_duplicates`),
runs once per unique row and writes back with ``unique_indices=True``: O(N·D) per step
and a [V] int32 buffer, never O(V·D).

Per-element AdaGrad is optax's ``scale_by_rss`` (optax 0.2.8), element by element:

.. math::
    a \\leftarrow a + G^2, \\qquad w \\leftarrow w - \\eta \\, G \\cdot
    [a > 0] \\, (a + \\epsilon)^{-1/2}

A row whose gradient is zero keeps both its weights and its accumulator, so the sparse
form equals dense optax AdaGrad on the scatter-added gradient (up to the order in which
float32 duplicates are summed). Row-wise AdaGrad (FBGEMM ``rowwise_adagrad``,
PyTorch-BigGraph ``RowAdagrad``) keeps one accumulator per row:

.. math::
    a_r \\leftarrow a_r + \\tfrac{1}{D} \\textstyle\\sum_d G_{rd}^2, \\qquad
    w_r \\leftarrow w_r - \\eta \\, G_r / (\\sqrt{a_r} + \\epsilon)

State: ``()`` for SGD; otherwise a dict with one accumulator per parameter table, keyed
like the params: [V, D] (bias [V]) per element, [V] row-wise. The dense path keeps
optax's own state (`make_transform`). Tables whose whole gradient is dense (softmax's
output layer) use `dense_update`, the same maths on every row.

References:
  Duchi, Hazan & Singer, "Adaptive subgradient methods", JMLR 2011.
  Lerer et al., "PyTorch-BigGraph", SysML 2019 (row-wise AdaGrad, coalesced gradients).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("sgd", "adagrad", "rowwise_adagrad", "adam")
SPARSE = ("sgd", "adagrad", "rowwise_adagrad")  # names with a row-sparse form


class UniqueRows(NamedTuple):
    """The unique rows of one step's ids, in N slots: slot i holds row ``ids[i]`` when i is
    the first occurrence of that row, else (a repeat, or an out-of-range id such as the
    padding id V) the distinct out-of-range id V + i.

    Out-of-range slots gather zeros (``mode="fill"``) and are dropped on write-back
    (``mode="drop"``), and no index repeats, so ``unique_indices=True`` holds. The slots
    are not sorted: finding first occurrences needs no sort (see `unique_rows`).
    """

    ids: jax.Array  # [N] int32 row id, or V + slot for a repeat
    inverse: jax.Array  # [N] int32 slot (first occurrence) of each input id


def unique_rows(ids: jax.Array, num_rows: int) -> UniqueRows:
    """`UniqueRows` of ``ids`` (any shape, flattened) into a table of ``num_rows`` rows.

    Each row's first slot is found with one scatter-min of slot numbers into a [V] int32
    buffer: O(V) integers and O(N) work, no O(N log N) sort (XLA:CPU's sort made the
    dedup cost more than the rest of a step) and never O(V·D).
    """
    flat = ids.reshape(-1).astype(jnp.int32)
    n = flat.shape[0]
    slot = jnp.arange(n, dtype=jnp.int32)
    owner = jnp.full((num_rows,), n, jnp.int32).at[flat].min(slot, mode="drop")  # [V]
    first = owner.at[flat].get(mode="fill", fill_value=n)  # [N] first slot of each id
    first = jnp.where(first < n, first, slot)  # out-of-range input ids stay on their own
    # Out-of-range ids (padding: V) become distinct out-of-range ids too, so the promise
    # ``unique_indices=True`` of the write-back holds (XLA:GPU may then skip atomics).
    keep = (first == slot) & (flat < num_rows)
    unique = jnp.where(keep, flat, num_rows + slot)
    return UniqueRows(unique, first)


def sum_duplicates(unique: UniqueRows, grads: jax.Array) -> jax.Array:
    """[U, ...] the sum of each unique row's gradients ``grads`` [N, ...]; zeros on padding."""
    return jax.ops.segment_sum(grads, unique.inverse, num_segments=unique.ids.shape[0])


def _no_sparse_form(name: str) -> ValueError:
    return ValueError(
        f"optimizer.name={name!r} has no sparse form; use one of {list(SPARSE)} "
        "or optimizer.sparse=False"
    )


def _gather(table: jax.Array, unique: UniqueRows) -> jax.Array:
    return table.at[unique.ids].get(mode="fill", fill_value=0, unique_indices=True)


def _write(table: jax.Array, unique: UniqueRows, rows: jax.Array) -> jax.Array:
    return table.at[unique.ids].set(rows, mode="drop", unique_indices=True)


# --- the per-row maths, shared by the sparse and the dense forms ----------------------


def adagrad_direction(acc: jax.Array, g: jax.Array, eps) -> tuple[jax.Array, jax.Array]:
    """(update, new acc) of per-element AdaGrad, exactly optax 0.2.8's ``scale_by_rss``.

    acc and g have the same shape; the caller applies ``w - lr * update``.
    """
    acc = g * g + acc
    return jnp.where(acc > 0, jax.lax.rsqrt(acc + eps), 0.0) * g, acc


def rowwise_direction(acc: jax.Array, g: jax.Array, eps) -> tuple[jax.Array, jax.Array]:
    """(update, new acc) of row-wise AdaGrad: acc [R], g [R, D] (or [R] for a bias)."""
    acc = acc + jnp.mean(g * g, axis=tuple(range(1, g.ndim)))
    scale = 1.0 / (jnp.sqrt(acc) + eps)
    return g * scale.reshape(scale.shape + (1,) * (g.ndim - 1)), acc


_DIRECTIONS = {"adagrad": adagrad_direction, "rowwise_adagrad": rowwise_direction}


# --- sparse updates: (table, state, ids [N], grads [N, D], lr) -> (table, state) --------


def duplicate_factor(
    num_rows: int, ids: jax.Array, rows: jax.Array, power: float, counts=None
) -> jax.Array:
    """[N] factor n_r^-power of each row update: n_r = the non-zero updates to its row.

    A sparse SGD step sums the updates of a word that occurs n times in the batch (exact
    SGD on the summed loss; word2vec applies them one after another instead). ``power``
    1 averages them, 0.5 divides by √n; rows whose update is exactly zero (padding) do
    not count. ids [N], rows [N, D]. ``counts`` [N]: how many updates each slot already
    sums (slots shared between devices), default one per non-zero row. The counts are
    integers, so any summation order gives the same factor. ``num_rows``: the table's V.
    """
    unique = unique_rows(ids, num_rows)
    touched = jnp.any(rows != 0, axis=tuple(range(1, rows.ndim))).astype(rows.dtype)
    if counts is not None:
        touched = touched * counts
    counts = sum_duplicates(unique, touched)  # [U]
    return jnp.maximum(counts[unique.inverse], 1.0) ** -power


def sgd(table, state, ids, grads, lr, *, duplicate_power: float = 0.0, factor=None):
    """word2vec's sparse SGD: ``table`` [V, D] + (-lr · grads) [N, D] scatter-added at ids [N].

    With ``duplicate_power`` > 0 each update is scaled by `duplicate_factor` first
    (``factor`` [N] overrides it, so a bias can reuse its table's factor). State is ().
    Returns (table, state).
    """
    rows = -lr * grads
    if factor is None and duplicate_power:
        factor = duplicate_factor(table.shape[0], ids, rows, duplicate_power)
    if factor is not None:
        rows = rows * factor.reshape(factor.shape + (1,) * (rows.ndim - 1))
    return table.at[ids].add(rows, mode="drop"), state


def _sparse_adaptive(name, table, acc, ids, grads, lr, eps, unique, rows=None):
    """``rows`` [N, ...]: ``table`` at ``ids`` if the caller has them (the step gathered
    them for its loss): slot i of `unique_rows` is ids[i]'s first occurrence, or dropped on
    write-back, so rows[i] is that unique row's weights and no second gather is needed."""
    if unique is None:
        unique = unique_rows(ids, table.shape[0])
    g = sum_duplicates(unique, grads)  # [U, D]
    update, new_acc = _DIRECTIONS[name](_gather(acc, unique), g, eps)
    rows = _gather(table, unique) if rows is None else rows.reshape(update.shape)
    rows = rows - lr * update
    return _write(table, unique, rows), _write(acc, unique, new_acc)


def sparse_update(name: str, table, state, ids, grads, lr, *, eps=1e-7, power=0.0, unique=None):
    """The sparse form of ``name`` on the rows ids [N] of ``table`` [V, D] (or [V]): `sgd`,
    or exact AdaGrad with ``state`` [V, D] per element or [V] row-wise, grads [N, D] summed
    per row first (``unique``: a precomputed `unique_rows(ids, V)`). Returns (table, state)."""
    if name == "sgd":
        return sgd(table, state, ids, grads, lr, duplicate_power=power)
    if name in _DIRECTIONS:
        return _sparse_adaptive(name, table, state, ids, grads, lr, eps, unique)
    raise _no_sparse_form(name)


def dense_update(name: str, table, state, grads, lr, *, eps=1e-7):
    """The same optimiser applied to a whole table whose gradient ``grads`` is dense
    (softmax's output layer under a sparse optimiser). Returns (table, state)."""
    if name == "sgd":
        return table + -lr * grads, state
    if name in _DIRECTIONS:
        update, state = _DIRECTIONS[name](state, grads, eps)
        return table - lr * update, state
    raise _no_sparse_form(name)


def apply_rows(
    name: str,
    params: dict,
    state,
    table: str,
    ids,
    grads,
    lr,
    *,
    eps: float = 1e-7,
    power: float = 0.0,
    bias_grads=None,
    counts=None,
    rows=None,
):
    """(params, state) with ``grads`` [N, D] applied to ``params[table]`` at ``ids`` [N]
    by the sparse form of ``name``, and ``bias_grads`` [N] to ``params["out_bias"]`` at
    the same ids (one dedup; SGD's `duplicate_factor` from the table's rows, as word2vec
    scatters it, and ``counts`` [N], the updates each slot sums). ``ids`` None: ``grads``
    is the whole table's dense gradient (`dense_update`). ``state``: `init_sparse`'s (),
    or its dict of accumulators. ``rows`` [N, D]: ``params[table]`` at ``ids`` when the
    caller gathered them already (`_sparse_adaptive`); None: gathered here.
    """
    names = [table] if bias_grads is None else [table, "out_bias"]
    all_grads = [grads] if bias_grads is None else [grads, bias_grads]
    params = dict(params)
    state = dict(state) if isinstance(state, dict) else state
    if name == "sgd":
        factor = None
        if power and ids is not None:
            factor = duplicate_factor(params[table].shape[0], ids, -lr * grads, power, counts)
        for key, g in zip(names, all_grads, strict=True):
            if ids is None:
                params[key], _ = dense_update(name, params[key], (), g, lr)
            else:
                params[key], _ = sgd(params[key], (), ids, g, lr, factor=factor)
        return params, state
    if name not in _DIRECTIONS:
        raise _no_sparse_form(name)
    unique = None if ids is None else unique_rows(ids, params[table].shape[0])
    for key, g in zip(names, all_grads, strict=True):
        if ids is None:
            params[key], state[key] = dense_update(name, params[key], state[key], g, lr, eps=eps)
        else:
            known = rows if key == table else None
            params[key], state[key] = _sparse_adaptive(
                name, params[key], state[key], ids, g, lr, eps, unique, known
            )
    return params, state


def init_sparse(name: str, params: dict, initial_accumulator: float):
    """State of the sparse path: () for SGD, else one accumulator per table of ``params``
    ([V, D] per element, [V] row-wise), filled with ``initial_accumulator``."""
    if name == "sgd":
        return ()
    if name == "adagrad":
        return {k: jnp.full_like(v, initial_accumulator) for k, v in params.items()}
    if name == "rowwise_adagrad":
        return {k: jnp.full(v.shape[:1], initial_accumulator, v.dtype) for k, v in params.items()}
    raise _no_sparse_form(name)


# --- the dense path: optax transforms without their learning rate ---------------------


class RowwiseRssState(NamedTuple):
    sum_of_squares: dict  # one [V] accumulator per table


def scale_by_rowwise_rss(initial_accumulator: float, eps: float):
    """Row-wise AdaGrad as an optax transform (each leaf's first axis is its rows)."""

    def init_fn(params):
        return RowwiseRssState(
            jax.tree.map(lambda p: jnp.full(p.shape[:1], initial_accumulator, p.dtype), params)
        )

    def update_fn(updates, state, params=None):
        del params
        pairs = jax.tree.map(
            lambda g, a: rowwise_direction(a, g, eps), updates, state.sum_of_squares
        )
        is_pair = lambda x: isinstance(x, tuple)  # noqa: E731
        new_updates = jax.tree.map(lambda p: p[0], pairs, is_leaf=is_pair)
        acc = jax.tree.map(lambda p: p[1], pairs, is_leaf=is_pair)
        return new_updates, RowwiseRssState(acc)

    return optax.GradientTransformation(init_fn, update_fn)


def make_transform(
    name: str, *, initial_accumulator: float = 0.1, eps: float = 1e-7
) -> optax.GradientTransformation:
    """The dense optimiser without its learning rate (the step applies ``p - lr · u``)."""
    if name == "sgd":
        return optax.identity()
    if name == "adagrad":
        return optax.scale_by_rss(initial_accumulator_value=initial_accumulator, eps=eps)
    if name == "rowwise_adagrad":
        return scale_by_rowwise_rss(initial_accumulator, eps)
    if name == "adam":
        return optax.scale_by_adam()
    raise ValueError(f"optimizer.name must be one of {OPTIMIZERS}; got {name!r}")
