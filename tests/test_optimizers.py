"""Sparse optimisers for embedding tables: exact dedup, AdaGrad equal to optax and to a
NumPy reference, untouched rows untouched, word2vec's SGD unchanged, cost O(rows · D)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from w2v_jax.step import optimizers

V, D, N = 30, 4, 64
INIT, EPS = 0.1, 1e-7


def _batches(steps=4, seed=0, width=D):
    """Row updates with many duplicates: ids drawn from the first third of the table."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        ids = rng.integers(0, V // 3, N).astype(np.int32)
        shape = (N, width) if width else (N,)
        yield ids, rng.normal(size=shape).astype(np.float32)


def _table(seed=1, width=D):
    shape = (V, width) if width else (V,)
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def test_unique_rows_sums_duplicates_and_pads_out_of_range():
    ids = jnp.array([3, 1, 3, 3, 0], jnp.int32)
    g = jnp.array([[1.0], [2.0], [3.0], [4.0], [5.0]])
    u = optimizers.unique_rows(ids, num_rows=5)
    np.testing.assert_array_equal(u.ids, [0, 1, 3, 5 + 3, 5 + 4])  # sorted, distinct padding
    np.testing.assert_array_equal(u.ids[u.inverse], ids)
    np.testing.assert_array_equal(optimizers.sum_duplicates(u, g)[:, 0], [5, 2, 8, 0, 0])


@pytest.mark.parametrize("width", [D, None], ids=["table", "bias"])
def test_sparse_adagrad_equals_dense_optax_adagrad(width):
    """Several steps, duplicates everywhere: the sparse update equals optax's scale_by_rss
    on the scatter-added gradient, applied as the step applies it (p - lr · u)."""
    table = dense = _table(width=width)
    acc = jnp.full_like(table, INIT)
    tx = optax.scale_by_rss(initial_accumulator_value=INIT, eps=EPS)
    opt_state = tx.init(dense)
    sparse_step = jax.jit(lambda t, a, i, g, lr: optimizers.adagrad(t, a, i, g, lr, eps=EPS))
    for step, (ids, g) in enumerate(_batches(width=width)):
        lr = np.float32(0.3 / (step + 1))
        table, acc = sparse_step(table, acc, ids, g, lr)
        u, opt_state = tx.update(jnp.zeros_like(dense).at[ids].add(g), opt_state)
        dense = dense - lr * u
        np.testing.assert_allclose(table, dense, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(acc, opt_state.sum_of_squares, rtol=1e-6)
    untouched = np.setdiff1d(np.arange(V), np.arange(V // 3))
    np.testing.assert_array_equal(table[untouched], _table(width=width)[untouched])
    np.testing.assert_array_equal(acc[untouched], np.float32(INIT))


def _rowwise_reference(table, acc, batches, lrs, eps):
    """NumPy float64: sum each row's duplicates, then FBGEMM's rowwise_adagrad per row."""
    w, a = np.array(table, np.float64), np.array(acc, np.float64)
    for (ids, g), lr in zip(batches, lrs, strict=True):
        summed = {}
        for i, gi in zip(ids, g, strict=True):
            summed[int(i)] = summed.get(int(i), 0.0) + gi.astype(np.float64)
        for r, gr in summed.items():
            a[r] += np.mean(np.square(gr))
            w[r] -= lr * gr / (np.sqrt(a[r]) + eps)
    return w, a


@pytest.mark.parametrize("width", [D, None], ids=["table", "bias"])
def test_rowwise_adagrad_equals_numpy_reference(width):
    table0 = _table(width=width)
    acc0 = jnp.full((V,), INIT, jnp.float32)
    batches = list(_batches(width=width))
    lrs = [np.float32(0.2), np.float32(0.1), np.float32(0.05), np.float32(0.3)]
    table, acc = table0, acc0
    step = jax.jit(lambda t, a, i, g, lr: optimizers.rowwise_adagrad(t, a, i, g, lr, eps=EPS))
    for (ids, g), lr in zip(batches, lrs, strict=True):
        table, acc = step(table, acc, ids, g, lr)
    w, a = _rowwise_reference(table0, acc0, batches, lrs, EPS)
    np.testing.assert_allclose(table, w, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(acc, a, rtol=2e-6)
    untouched = np.arange(V // 3, V)
    np.testing.assert_array_equal(acc[untouched], np.float32(INIT))
    np.testing.assert_array_equal(table[untouched], table0[untouched])


def test_dense_rowwise_transform_equals_the_sparse_form():
    table = dense = _table()
    acc = jnp.full((V,), INIT)
    tx = optimizers.make_transform("rowwise_adagrad", initial_accumulator=INIT, eps=EPS)
    opt_state = tx.init({"t": dense})
    for ids, g in _batches():
        table, acc = optimizers.rowwise_adagrad(table, acc, ids, g, 0.1, eps=EPS)
        u, opt_state = tx.update({"t": jnp.zeros_like(dense).at[ids].add(g)}, opt_state)
        dense = dense - 0.1 * u["t"]
    np.testing.assert_allclose(table, dense, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(acc, opt_state.sum_of_squares["t"], rtol=1e-6)


@pytest.mark.parametrize("name", ["adagrad", "rowwise_adagrad"])
def test_dense_update_equals_sparse_update_over_every_row(name):
    """`dense_update` (softmax's output table) is the sparse maths on all rows at once."""
    table = _table()
    state = optimizers.init_sparse(name, {"t": table}, INIT)["t"]
    ids, g = next(_batches())
    sparse_t, sparse_s = optimizers.sparse_update(name, table, state, ids, g, 0.2, eps=EPS)
    dense_g = jnp.zeros_like(table).at[ids].add(g)
    dense_t, dense_s = optimizers.dense_update(name, table, state, dense_g, 0.2, eps=EPS)
    np.testing.assert_allclose(sparse_t, dense_t, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(sparse_s, dense_s, rtol=1e-6)


@pytest.mark.parametrize("name", ["adagrad", "rowwise_adagrad"])
def test_duplicates_are_summed_before_the_update(name):
    """A row that occurs twice gets one update from its summed gradient, which differs
    from applying the two gradients one after the other."""
    table = jnp.zeros((3, 2))
    acc = optimizers.init_sparse(name, {"t": table}, 1.0)["t"]
    ids = jnp.array([1, 1], jnp.int32)
    g = jnp.array([[1.0, 2.0], [3.0, -1.0]])
    t, a = optimizers.sparse_update(name, table, acc, ids, g, 1.0, eps=0.0)
    once, _ = optimizers.sparse_update(name, table, acc, ids[:1], g.sum(0)[None], 1.0, eps=0.0)
    np.testing.assert_array_equal(t, once)
    t1, a1 = optimizers.sparse_update(name, table, acc, ids[:1], g[:1], 1.0, eps=0.0)
    t2, _ = optimizers.sparse_update(name, t1, a1, ids[1:], g[1:], 1.0, eps=0.0)
    assert not np.allclose(t, t2)
    if name == "adagrad":
        np.testing.assert_allclose(a[1], 1.0 + np.array([4.0, 1.0]) ** 2)
        np.testing.assert_allclose(t[1], -np.array([4.0, 1.0]) / np.sqrt([17.0, 2.0]), 1e-6)
    else:
        np.testing.assert_allclose(a[1], 1.0 + (16.0 + 1.0) / 2)
        np.testing.assert_allclose(t[1], -np.array([4.0, 1.0]) / np.sqrt(9.5), 1e-6)
    np.testing.assert_array_equal(a[np.array([0, 2])], acc[np.array([0, 2])])


def _word2vec_scatter(table, ids, rows, power):
    """The sparse SGD update as word2vec.scatter_rows wrote it before this module."""
    if power:
        touched = jnp.any(rows != 0, axis=-1).astype(rows.dtype)
        counts = jnp.zeros((table.shape[0],), rows.dtype).at[ids].add(touched)
        rows = rows * (jnp.maximum(counts[ids], 1.0) ** -power)[:, None]
    return table.at[ids].add(rows)


@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
def test_sgd_is_word2vecs_scatter_add_bit_for_bit(power):
    table = _table()
    for ids, g in _batches():
        g[::7] = 0.0  # padding rows: exactly zero, not counted
        lr = jnp.float32(0.05)
        new, state = optimizers.sgd(table, (), ids, g, lr, duplicate_power=power)
        np.testing.assert_array_equal(new, _word2vec_scatter(table, ids, -lr * g, power))
        assert state == ()
        table = new


def test_duplicate_factor_counts_non_zero_updates():
    ids = jnp.array([1, 1, 1, 2])
    rows = jnp.array([[1.0, 0.0], [3.0, 1.0], [0.0, 0.0], [5.0, 5.0]])  # the third is padding
    np.testing.assert_allclose(optimizers.duplicate_factor(4, ids, rows, 1.0), [0.5, 0.5, 0.5, 1])
    table, _ = optimizers.sgd(jnp.zeros((4, 2)), (), ids, -rows, 1.0, duplicate_power=1.0)
    np.testing.assert_allclose(table, [[0, 0], [2.0, 0.5], [5, 5], [0, 0]])


@pytest.mark.parametrize("name", ["adagrad", "rowwise_adagrad"])
def test_sparse_update_never_builds_a_table_sized_temporary(name):
    """Cost O(N · D): in the traced update, only the two write-backs produce [V, ...]
    arrays; everything else is sized by the step's rows."""
    big_v = 100_003
    table = jax.ShapeDtypeStruct((big_v, D), jnp.float32)
    acc_shape = (big_v, D) if name == "adagrad" else (big_v,)
    acc = jax.ShapeDtypeStruct(acc_shape, jnp.float32)
    ids = jax.ShapeDtypeStruct((N,), jnp.int32)
    g = jax.ShapeDtypeStruct((N, D), jnp.float32)
    jaxpr = jax.make_jaxpr(
        lambda t, a, i, x: optimizers.sparse_update(name, t, a, i, x, 0.1, eps=EPS)
    )(table, acc, ids, g)
    big = []
    for eqn in jaxpr.jaxpr.eqns:
        for var in eqn.outvars:
            if any(s >= big_v for s in getattr(var.aval, "shape", ())):
                big.append(eqn.primitive.name)
    assert big == ["scatter", "scatter"], big


def test_init_sparse_shapes_and_unknown_names():
    params = {"in_embed": jnp.zeros((V, D)), "out_bias": jnp.zeros((V,))}
    assert optimizers.init_sparse("sgd", params, INIT) == ()
    per = optimizers.init_sparse("adagrad", params, INIT)
    assert per["in_embed"].shape == (V, D) and per["out_bias"].shape == (V,)
    row = optimizers.init_sparse("rowwise_adagrad", params, 0.5)
    assert row["in_embed"].shape == (V,) and float(row["out_bias"][0]) == 0.5
    with pytest.raises(ValueError, match="no sparse form"):
        optimizers.init_sparse("adam", params, INIT)
    with pytest.raises(ValueError, match="optimizer.name must be one of"):
        optimizers.make_transform("lbfgs")
