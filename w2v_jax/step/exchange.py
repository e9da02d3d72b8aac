"""What the devices of a data-parallel step send each other: summed row gradients, never
whole tables (docs/training.md, "What the devices send each other").

Shape letters: V rows of a table (its shard's rows when vocabulary-sharded), D row width,
N row updates of one device's step (ids with duplicates), n devices on the data axis.

`share` makes each device's `rows.RowGrads` every device's: each sums its duplicate rows
(`optimizers.unique_rows`), then ``all_gather``s (ids [N], summed rows [N, D]) over
``data``, O(rows · D) per step whatever V; every device applies the same gathered arrays
in the same order (its optimiser sums a row sent by several devices again), so replicas
stay bit-identical. Dense gradients are ``psum``-ed. With the tables sharded along V over
``model``, `ShardedRows` looks rows up across the shards and `local_ids` / `own_slice`
keep the updates a shard owns.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from w2v_jax.step import optimizers, rows


class Counted(NamedTuple):
    """A table's gathered updates: ids [n·N], summed rows [n·N, D] (bias [n·N]), and how
    many non-zero updates each slot sums ([n·N]; sparse SGD's ``duplicate_power`` counts
    them)."""

    ids: jax.Array
    grads: jax.Array
    bias: jax.Array | None
    counts: jax.Array


def _share_table(ids, grads, bias, num_rows: int, axis_name) -> Counted:
    """One table's (ids [N], grads [N, D], bias [N] or None) summed per row on this device,
    then gathered from every device of ``axis_name``."""
    unique = optimizers.unique_rows(ids, num_rows)
    touched = jnp.any(grads != 0, axis=tuple(range(1, grads.ndim))).astype(grads.dtype)
    summed = optimizers.sum_duplicates(unique, grads)
    counts = optimizers.sum_duplicates(unique, touched)
    bias = None if bias is None else optimizers.sum_duplicates(unique, bias)
    return Counted(*jax.lax.all_gather((unique.ids, summed, bias, counts), axis_name, tiled=True))


def share(grads: rows.RowGrads, num_rows: dict, axis_name) -> rows.RowGrads:
    """``grads`` of this device made every device's over ``axis_name`` (module doc), with
    ``in_counts`` / ``out_counts`` set.

    ``num_rows``: {"in_embed": V, "out": rows of the output table} before any sharding;
    a dense output gradient (``grads.out_ids`` None) and ``grads.dense`` are psum-ed.
    """
    psum = lambda x: None if x is None else jax.lax.psum(x, axis_name)  # noqa: E731
    inp = _share_table(grads.in_ids, grads.in_grads, None, num_rows["in_embed"], axis_name)
    dense = None if grads.dense is None else {k: psum(g) for k, g in grads.dense.items()}
    if grads.out_ids is None:
        out = (None, psum(grads.out_grads), psum(grads.bias_grads), None)
    else:
        out = _share_table(
            grads.out_ids, grads.out_grads, grads.bias_grads, num_rows["out"], axis_name
        )
    return rows.RowGrads(
        inp.ids, inp.grads, out[0], out[1], out[2], dense, in_counts=inp.counts,
        out_counts=out[3],
    )  # fmt: skip


# --- vocabulary-sharded tables ---------------------------------------------------------


def shard_start(shard_rows: int, axis_name) -> jax.Array:
    """[] int32 the first global row of this device's shard along ``axis_name``."""
    return jax.lax.axis_index(axis_name).astype(jnp.int32) * shard_rows


class ShardedRows:
    """A table sharded along V over ``axis_name``, indexed as if whole: ``view[ids]`` is
    ``table[ids]`` (ids of any shape; out-of-range ids give zeros), for the step's
    gathers (`losses.take`) inside `jax.shard_map`. Each shard fills the rows it owns and
    one ``psum`` over the shards assembles them: O(ids · D) traffic."""

    def __init__(self, shard: jax.Array, axis_name):
        self.shard, self.axis_name = shard, axis_name

    def __getitem__(self, ids) -> jax.Array:
        n = self.shard.shape[0]
        local = jnp.asarray(ids, jnp.int32) - shard_start(n, self.axis_name)
        local = jnp.where((local >= 0) & (local < n), local, n)
        mine = self.shard.at[local].get(mode="fill", fill_value=0)
        return jax.lax.psum(mine, self.axis_name)


def local_ids(ids: jax.Array, shard_rows: int, axis_name) -> jax.Array:
    """Global ``ids`` [N] as this shard's rows; ids another shard owns (or out of range)
    become distinct out-of-range ids ``shard_rows + i`` (dropped by every write)."""
    local = ids - shard_start(shard_rows, axis_name)
    slot = jnp.arange(ids.shape[0], dtype=ids.dtype)
    return jnp.where((local >= 0) & (local < shard_rows), local, shard_rows + slot)


def own_slice(dense: jax.Array, shard_rows: int, axis_name) -> jax.Array:
    """This shard's rows of a whole-table gradient [V, ...]."""
    start = shard_start(shard_rows, axis_name)
    return jax.lax.dynamic_slice_in_dim(dense, start, shard_rows, axis=0)
