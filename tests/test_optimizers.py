"""Sparse optimisers for embedding tables: exact dedup, AdaGrad equal to optax and to a
NumPy reference, untouched rows untouched, word2vec's SGD unchanged, cost O(rows · D),
the same through train_step for every model and output layer, and bit-exact resume."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import EXACTNESS, assert_same, cpu_bitwise, tiny_config

from w2v_jax import settings, trainer
from w2v_jax.checkpoint import store, writer
from w2v_jax.data import input_pipeline
from w2v_jax.evaluation import keyed_vectors
from w2v_jax.model import output_layers
from w2v_jax.step import optimizers, update

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
    # first occurrences keep their row; repeats get distinct out-of-range ids V + slot
    np.testing.assert_array_equal(u.ids, [3, 1, 5 + 2, 5 + 3, 0])
    assert len(set(np.asarray(u.ids).tolist())) == len(ids)  # no index repeats
    np.testing.assert_array_equal(u.ids[u.inverse], ids)
    np.testing.assert_array_equal(optimizers.sum_duplicates(u, g)[:, 0], [8, 2, 0, 0, 5])


@pytest.mark.parametrize("width", [D, None], ids=["table", "bias"])
def test_sparse_adagrad_equals_dense_optax_adagrad(width):
    """Several steps, duplicates everywhere: the sparse update equals optax's scale_by_rss
    on the scatter-added gradient, applied as the step applies it (p - lr · u)."""
    table = dense = _table(width=width)
    acc = jnp.full_like(table, INIT)
    tx = optax.scale_by_rss(initial_accumulator_value=INIT, eps=EPS)
    opt_state = tx.init(dense)
    sparse_step = jax.jit(
        lambda t, a, i, g, lr: optimizers.sparse_update("adagrad", t, a, i, g, lr, eps=EPS)
    )
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
    step = jax.jit(
        lambda t, a, i, g, lr: optimizers.sparse_update("rowwise_adagrad", t, a, i, g, lr, eps=EPS)
    )
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
        table, acc = optimizers.sparse_update("rowwise_adagrad", table, acc, ids, g, 0.1, eps=EPS)
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


@pytest.mark.parametrize("exact", EXACTNESS)
@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
def test_sgd_is_word2vecs_scatter_add_bit_for_bit(power, exact):
    """Two programs scatter-adding duplicate ids: bit for bit on XLA:CPU (`EXACTNESS`)."""
    table = _table()
    for ids, g in _batches():
        g[::7] = 0.0  # padding rows: exactly zero, not counted
        lr = jnp.float32(0.05)
        new, state = optimizers.sgd(table, (), ids, g, lr, duplicate_power=power)
        want = _word2vec_scatter(table, ids, -lr * g, power)
        assert_same(new, want, exact, rtol=1e-6, atol=1e-7)
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
    """Cost O(N · D): in the traced update, only the two write-backs produce float [V, ...]
    arrays; the one other V-sized array is the [V] int32 first-slot buffer of the dedup
    (`unique_rows`); everything else is sized by the step's rows."""
    big_v = 100_003
    table = jax.ShapeDtypeStruct((big_v, D), jnp.float32)
    acc_shape = (big_v, D) if name == "adagrad" else (big_v,)
    acc = jax.ShapeDtypeStruct(acc_shape, jnp.float32)
    ids = jax.ShapeDtypeStruct((N,), jnp.int32)
    g = jax.ShapeDtypeStruct((N, D), jnp.float32)
    jaxpr = jax.make_jaxpr(
        lambda t, a, i, x: optimizers.sparse_update(name, t, a, i, x, 0.1, eps=EPS)
    )(table, acc, ids, g)
    big, index_buffers = [], []
    for eqn in jaxpr.jaxpr.eqns:
        for var in eqn.outvars:
            if any(s >= big_v for s in getattr(var.aval, "shape", ())):
                if var.aval.dtype == jnp.int32:
                    index_buffers.append((eqn.primitive.name, var.aval.shape))
                else:
                    big.append(eqn.primitive.name)
    assert big == ["scatter", "scatter"], big
    assert [shape for _, shape in index_buffers] == [(big_v,)] * len(index_buffers)
    assert len(index_buffers) <= 2, index_buffers  # the buffer and its scatter-min


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


@pytest.mark.parametrize("exact", EXACTNESS)
@pytest.mark.parametrize("name", ["sgd", "adagrad", "rowwise_adagrad"])
def test_apply_rows_updates_a_table_and_its_bias_with_shared_ids(name, exact):
    """A table and its bias share their ids: each is updated as if alone, except that
    SGD's duplicate factor comes from the table's rows (as word2vec scatters them). Bit
    for bit on XLA:CPU (`EXACTNESS`)."""
    params = {"in_embed": _table(), "out_embed": _table(2), "out_bias": _table(3, None)}
    state = optimizers.init_sparse(name, params, INIT)
    ids, g = next(_batches())
    _, gb = next(_batches(seed=5, width=None))
    g[::5] = 0.0  # rows whose table gradient is zero do not count as duplicates
    new, new_state = optimizers.apply_rows(
        name, params, state, "out_embed", ids, g, 0.1, eps=EPS, power=0.5, bias_grads=gb
    )
    np.testing.assert_array_equal(new["in_embed"], params["in_embed"])
    for key, grads in (("out_embed", g), ("out_bias", gb)):
        if name == "sgd":
            factor = optimizers.duplicate_factor(V, ids, -0.1 * g, 0.5)
            want, _ = optimizers.sgd(params[key], (), ids, grads, 0.1, factor=factor)
        else:
            want, want_state = optimizers.sparse_update(
                name, params[key], state[key], ids, grads, 0.1, eps=EPS
            )
            assert_same(new_state[key], want_state, exact, rtol=1e-6, atol=1e-7)
        assert_same(new[key], want, exact, rtol=1e-6, atol=1e-7)


# --- through train_step -------------------------------------------------------------

SB, SC = 24, 4  # batch rows and context slots of the train_step checks


def _step_batches(steps, seed=0):
    """Batches over a vocabulary of V words with a Zipf-like skew: many duplicates."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, V + 1)
    p /= p.sum()
    for _ in range(steps):
        mask = (rng.random((SB, SC)) < 0.8).astype(np.float32)
        mask[0] = 0.0  # a padding row
        centres = rng.choice(V, SB, p=p).astype(np.int32)
        yield input_pipeline.Batch(centres, rng.choice(V, (SB, SC), p=p).astype(np.int32), mask)


def _constants(loss):
    counts = np.sort(np.random.default_rng(3).integers(1, 500, V))[::-1].astype(np.int64)
    return output_layers.constants_for(loss, counts)


def _run_steps(cfg, steps=3, use_bias=False):
    state = update.init_state(jax.random.PRNGKey(0), V, D, cfg, use_bias)
    key = jax.random.PRNGKey(1)  # non-zero output tables, so every gradient is non-zero
    params = {k: v + 0.1 * jax.random.normal(key, v.shape) for k, v in state.params.items()}
    state = state._replace(params=params)
    step = jax.jit(functools.partial(update.train_step, cfg=cfg))
    constants = _constants(cfg.loss)
    for i, batch in enumerate(_step_batches(steps)):
        state, metrics = step(state, batch, constants, np.float32(0.5 / (i + 1)))
        assert bool(metrics["finite"])
    return jax.device_get(state)


STEP_CASES = [
    (model, loss, share)
    for model in ("skipgram", "cbow")
    for loss in output_layers.NAMES
    for share in (("pair", "row") if loss in output_layers.SAMPLED else ("pair",))
]


@pytest.mark.parametrize("model,loss,share", STEP_CASES)
def test_sparse_adagrad_step_equals_dense_optax_adagrad(model, loss, share):
    """The sparse path (rows, dedup, once per unique row; softmax's output table dense)
    equals optax's scale_by_rss on the dense gradients, over several steps."""
    use_bias = loss in ("softmax", "nce")
    kw = dict(model=model, loss=loss, k=4, share=share, optimizer="adagrad")
    kw.update(initial_accumulator=0.5, eps=1e-6, skipgram_input="context")
    sparse = _run_steps(update.StepConfig(sparse=True, **kw), use_bias=use_bias)
    dense = _run_steps(update.StepConfig(sparse=False, **kw), use_bias=use_bias)
    assert set(sparse.opt_state) == set(sparse.params)
    for name in sparse.params:
        np.testing.assert_allclose(sparse.params[name], dense.params[name], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            sparse.opt_state[name], dense.opt_state.sum_of_squares[name], rtol=1e-5, atol=1e-6
        )
    start = _run_steps(update.StepConfig(sparse=True, **kw), steps=0, use_bias=use_bias)
    assert not np.array_equal(sparse.params["in_embed"], start.params["in_embed"])


@pytest.mark.parametrize(
    "model,loss", [("skipgram", "neg"), ("cbow", "hs"), ("skipgram", "softmax")]
)
def test_sparse_rowwise_adagrad_step_equals_its_dense_form(model, loss):
    """Row-wise AdaGrad: the sparse step equals the dense transform (each equals the NumPy
    reference above); softmax: dense output with sparse input."""
    kw = dict(model=model, loss=loss, k=4, share="row", optimizer="rowwise_adagrad")
    sparse = _run_steps(update.StepConfig(sparse=True, **kw), use_bias=loss == "softmax")
    dense = _run_steps(update.StepConfig(sparse=False, **kw), use_bias=loss == "softmax")
    for name in sparse.params:
        assert sparse.opt_state[name].shape == sparse.params[name].shape[:1]
        np.testing.assert_allclose(sparse.params[name], dense.params[name], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            sparse.opt_state[name], dense.opt_state.sum_of_squares[name], rtol=1e-5, atol=1e-6
        )


def test_untouched_rows_keep_weights_and_accumulators_through_train_step():
    cfg = update.StepConfig(loss="neg", k=2, share="row", optimizer="rowwise_adagrad")
    state = update.init_state(jax.random.PRNGKey(0), V, D, cfg)
    out = 0.1 * jax.random.normal(jax.random.PRNGKey(1), (V, D))  # non-zero input gradients
    state = state._replace(params={**state.params, "out_embed": out})
    constants = _constants("neg")
    batch = next(_step_batches(1))
    new, _ = jax.jit(functools.partial(update.train_step, cfg=cfg))(
        state, batch, constants, np.float32(0.3)
    )
    samples = update.batch_samples(cfg, batch, constants, jax.random.fold_in(state.key, 0))
    touched_in = np.union1d(batch.centres, batch.contexts)  # skip-gram centre input
    touched = np.union1d(touched_in, np.asarray(samples))
    free = np.setdiff1d(np.arange(V), touched)
    assert free.size
    for name in ("in_embed", "out_embed"):
        np.testing.assert_array_equal(new.opt_state[name][free], state.opt_state[name][free])
        np.testing.assert_array_equal(new.params[name][free], state.params[name][free])
    used = batch.centres[batch.mask.sum(axis=1) > 0]  # centres of rows with a context
    assert np.all(new.opt_state["in_embed"][used] > state.opt_state["in_embed"][used])


def test_train_state_with_accumulators_round_trips_through_a_checkpoint(tmp_path):
    cfg = update.StepConfig(loss="nce", k=3, optimizer="adagrad")
    state = _run_steps(cfg, steps=2, use_bias=True)
    path = store.folder_in(tmp_path)
    writer.save(path, state, 2, {"note": "x"})
    template = jax.device_get(update.init_state(jax.random.PRNGKey(5), V, D, cfg, True))
    loaded, meta = store.load(path, template)
    assert meta["step"] == 2 and meta["note"] == "x"
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(a, b)
    assert jax.tree.structure(loaded) == jax.tree.structure(state)


# Resume: bit for bit on XLA:CPU (`cpu_bitwise`); the twin, on any backend, to float32
# rounding of scatter-add order over the tiny run's steps (as test_trainer.RERUN_TOLERANCE).
RESUME_TOLERANCE = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module", params=["adagrad", "rowwise_adagrad"])
def adagrad_resume(request, tmp_path_factory):
    """One run whole, one stopped at step 37 and resumed; trained once per optimiser."""
    name = request.param
    root = tmp_path_factory.mktemp(name)
    opt = {"optimizer.name": name, "optimizer.alpha": 0.2}
    full = trainer.train_and_evaluate(tiny_config(**opt), str(root / "full"))
    first = trainer.train_and_evaluate(tiny_config(max_steps=37, **opt), str(root / "part"))
    resumed = trainer.train_and_evaluate(tiny_config(**opt), str(root / "part"))
    return root, full["step"], first["step"], resumed["step"]


@cpu_bitwise
@pytest.mark.slow
def test_a_stopped_sparse_adagrad_run_resumes_bit_exactly(adagrad_resume):
    """The accumulators travel in the checkpoint: stop, resume, same vectors as one run."""
    root, _, _, _ = adagrad_resume  # bit equality: XLA:CPU (see RESUME_TOLERANCE)
    full = (root / "full/vectors.bin").read_bytes()
    assert full == (root / "part/vectors.bin").read_bytes()


@pytest.mark.slow
def test_a_stopped_sparse_adagrad_run_resumes_within_tolerance(adagrad_resume):
    """The same, on any backend: the same steps, vectors within RESUME_TOLERANCE."""
    root, full_step, first_step, resumed_step = adagrad_resume
    assert first_step == 37 and resumed_step == full_step > 37
    part = keyed_vectors.load_word2vec(root / "part/vectors.bin")
    full = keyed_vectors.load_word2vec(root / "full/vectors.bin")
    assert part.words == full.words
    np.testing.assert_allclose(part.vectors, full.vectors, **RESUME_TOLERANCE)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"optimizer.initial_accumulator": 0.0}, r"config.optimizer.initial_accumulator=0.0 must"),
        ({"optimizer.eps": -1e-7}, r"config.optimizer.eps=-1e-07 must be > 0"),
        ({"optimizer.name": "adam"}, r"'adam' has no sparse form; set optimizer.sparse=False"),
        ({"optimizer.name": "adamw"}, r"config.optimizer.name='adamw' is not allowed"),
    ],
)
def test_bad_optimizer_settings_fail_in_one_line(overrides, message):
    with pytest.raises(ValueError, match=message):
        settings.validate(tiny_config(**overrides))


def test_the_new_optimizer_fields_reach_the_step_config():
    config = tiny_config(
        **{"optimizer.name": "rowwise_adagrad", "optimizer.eps": 1e-8,
           "optimizer.initial_accumulator": 0.5}
    )  # fmt: skip
    settings.validate(config)
    cfg = settings.step_config(config)
    assert (cfg.optimizer, cfg.sparse, cfg.eps, cfg.initial_accumulator) == (
        "rowwise_adagrad", True, 1e-8, 0.5,
    )  # fmt: skip
    settings.validate(tiny_config(**{"optimizer.name": "adam", "optimizer.sparse": False}))


def test_unique_rows_slots_are_distinct_even_for_padding_ids():
    """Padding ids (V, out of the table) and repeats get distinct out-of-range slots, so the
    write-back's ``unique_indices=True`` promise holds; in-range rows keep their first slot."""
    v = 5
    ids = jnp.asarray([3, v, 1, 3, v, v, 0], jnp.int32)
    unique = optimizers.unique_rows(ids, v)
    got = np.asarray(unique.ids)
    assert len(set(got.tolist())) == len(got)  # no index repeats, out of range included
    np.testing.assert_array_equal(got, [3, v + 1, 1, v + 3, v + 4, v + 5, 0])
    np.testing.assert_array_equal(np.asarray(unique.inverse), [0, 1, 2, 0, 4, 5, 6])
