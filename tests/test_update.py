"""The train step: every loss × model descends, sparse SGD equals dense SGD, estimators."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import cpu_bitwise

from w2v_jax.data import input_pipeline
from w2v_jax.model import output_layers, sampling, word2vec
from w2v_jax.step import fused, optimizers, rows, runners, update

V, D, B, C = 40, 8, 16, 4
LOSSES = list(output_layers.NAMES)


@functools.cache
def _fixture(loss):
    rng = np.random.default_rng(0)
    counts = np.sort(rng.integers(1, 500, V))[::-1].astype(np.int64)
    mask = (rng.random((B, C)) < 0.75).astype(np.float32)
    mask[0] = 0.0  # a padding row
    batch = input_pipeline.Batch(
        rng.integers(0, V, B).astype(np.int32), rng.integers(0, V, (B, C)).astype(np.int32), mask
    )
    return batch, output_layers.constants_for(loss, counts)


def _state(cfg, use_bias=False):
    st = update.init_state(jax.random.PRNGKey(0), V, D, cfg, use_bias)
    key = jax.random.PRNGKey(1)
    params = {k: v + 0.1 * jax.random.normal(key, v.shape) for k, v in st.params.items()}
    return jax.device_get(st._replace(params=params))


@pytest.mark.parametrize("model_name", ["skipgram", "cbow"])
@pytest.mark.parametrize("loss", LOSSES)
def test_steps_lower_the_loss_and_sparse_equals_dense(model_name, loss):
    batch, aux = _fixture(loss)
    use_bias = loss in ("softmax", "nce")
    sparse_cfg = update.StepConfig(model=model_name, loss=loss, k=4, sparse=True)
    dense_cfg = update.StepConfig(model=model_name, loss=loss, k=4, sparse=False)
    step_sparse = jax.jit(functools.partial(update.train_step, cfg=sparse_cfg))
    step_dense = jax.jit(functools.partial(update.train_step, cfg=dense_cfg))
    s0 = _state(sparse_cfg, use_bias)
    s1, m1 = step_sparse(s0, batch, aux, np.float32(0.05))
    d1, _ = step_dense(s0, batch, aux, np.float32(0.05))
    for name in s1.params:  # the same negatives (same key and step): the same update
        np.testing.assert_allclose(s1.params[name], d1.params[name], rtol=0, atol=2e-6)
    changed = [n for n in s1.params if not np.array_equal(s1.params[n], s0.params[n])]
    assert "in_embed" in changed and output_layers.get(loss).table in changed
    # Re-evaluate the same batch with the same draws (step reset): the loss went down.
    _, m2 = step_sparse(s1._replace(step=jnp.zeros((), jnp.int32)), batch, aux, np.float32(0.0))
    assert float(m2["loss"]) < float(m1["loss"])
    assert bool(m1["finite"]) and float(m1["examples"]) > 0


@pytest.mark.parametrize("share", ["pair", "row", "block"])
def test_sharing_modes_train_and_differ(share):
    batch, aux = _fixture("neg")
    cfg = update.StepConfig(loss="neg", k=4, share=share, block_size=8)
    st = _state(cfg)
    step = jax.jit(functools.partial(update.train_step, cfg=cfg))
    first = None
    for _ in range(20):
        st, m = step(st, batch, aux, np.float32(0.1))
        first = first if first is not None else float(m["loss"])
    assert float(m["loss"]) < first


def test_sample_shapes_follow_the_sharing_mode():
    assert rows.sample_shape("skipgram", "pair", 8, 4, 5, 2) == (8, 4, 5)
    assert rows.sample_shape("cbow", "pair", 8, 4, 5, 2) == (8, 5)
    assert rows.sample_shape("skipgram", "row", 8, 4, 5, 2) == (8, 5)
    assert rows.sample_shape("skipgram", "block", 8, 4, 5, 2) == (4, 5)
    group = rows.example_group("skipgram", "block", 4, 3, 2)
    np.testing.assert_array_equal(group, [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="block_size"):
        rows.sample_shape("skipgram", "block", 7, 4, 5, 2)


def test_cbow_gradient_conventions():
    """word2vec gives each context the full gradient of the mean; exact mode divides by n."""
    rows_in = jnp.arange(12.0).reshape(1, 3, 4)
    mask = jnp.array([[1.0, 1.0, 0.0]])

    def f(r, exact):
        h, _, _ = word2vec.example_inputs(r, mask, "cbow", True, exact)
        return jnp.sum(h * jnp.arange(4.0)[None, :])

    h, w, _ = word2vec.example_inputs(rows_in, mask, "cbow", True, False)
    np.testing.assert_allclose(h[0], (rows_in[0, 0] + rows_in[0, 1]) / 2)
    assert float(w[0]) == 1.0
    g_w2v = jax.grad(f)(rows_in, False)
    g_exact = jax.grad(f)(rows_in, True)
    np.testing.assert_allclose(g_w2v[0, 0], jnp.arange(4.0))
    np.testing.assert_allclose(g_exact[0, 0], jnp.arange(4.0) / 2)
    np.testing.assert_allclose(g_w2v[0, 2], 0.0)  # padded slot untouched


def test_skipgram_examples_are_the_valid_slots():
    rows_in = jnp.ones((2, 3, 4))
    mask = jnp.array([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    inputs, weights, row = word2vec.example_inputs(rows_in, mask, "skipgram", True, False)
    assert inputs.shape == (6, 4)
    np.testing.assert_array_equal(weights, [1, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(row, [0, 0, 0, 1, 1, 1])


def test_learning_rate_decays_linearly_and_clamps():
    assert update.learning_rate(0.025, 1e-4, 0.0) == np.float32(0.025)
    assert update.learning_rate(0.025, 1e-4, 1.0) == np.float32(1e-4)
    assert update.learning_rate(0.025, 1e-4, 2.0) == np.float32(1e-4)
    mid = update.learning_rate(0.025, 1e-4, 0.5)
    assert mid == pytest.approx((0.025 + 1e-4) / 2)


def test_init_matches_word2vec():
    cfg = update.StepConfig(loss="hs")
    st = update.init_state(jax.random.PRNGKey(0), 100, 50, cfg)
    emb = np.asarray(st.params["in_embed"])
    assert emb.min() >= -0.5 / 50 and emb.max() <= 0.5 / 50 and emb.std() > 0
    assert st.params["node_embed"].shape == (99, 50)
    assert not np.any(st.params["node_embed"])
    with pytest.raises(ValueError, match="vocab_size"):
        word2vec.init_params(jax.random.PRNGKey(0), 1, 4, "neg")


FUSED_CASES = (
    [
        (m, loss, share, "centre")
        for m in ("skipgram", "cbow")
        for loss in ("neg", "nce", "sampled_softmax")
        for share in ("row", "block")
    ]
    + [
        ("skipgram", loss, share, "context")  # word2vec C's grouping
        for loss in ("neg", "nce", "sampled_softmax")
        for share in ("row", "block")
    ]
    + [
        ("skipgram", "hs", "pair", "centre"),
        ("cbow", "hs", "pair", "centre"),
        ("cbow", "neg", "pair", "centre"),
        ("skipgram", "neg", "pair", "centre"),
        ("skipgram", "nce", "pair", "centre"),
        ("skipgram", "sampled_softmax", "pair", "centre"),
    ]
)


@pytest.mark.parametrize("model_name,loss,share,skipgram_input", FUSED_CASES)
def test_fused_kernels_equal_the_loss_library_path(model_name, loss, share, skipgram_input):
    """Same samples, same maths: the fused matmul kernels equal the per-example path."""

    batch, aux = _fixture(loss)
    aux = jax.tree_util.tree_map(jnp.asarray, aux)  # as the step receives it under jit
    cfg = update.StepConfig(
        model=model_name, loss=loss, k=4, share=share, block_size=4, skipgram_input=skipgram_input
    )
    assert fused.supports(cfg)
    use_bias = loss != "hs"
    params = _state(cfg, use_bias).params
    if use_bias:
        params["out_bias"] = 0.3 * jax.random.normal(jax.random.PRNGKey(2), (V,))
    samples = None
    if loss != "hs":
        shape = rows.sample_shape(model_name, share, B, C, 4, 4)
        samples = sampling.draw(jax.random.PRNGKey(3), aux.noise, shape)
        # Force accidental hits: some samples equal their row's centre (or context) word.
        first = samples.reshape(-1, 4)[:, 0]
        rows_per_group = B // samples.shape[0]
        first = first.at[:2].set(batch.centres[: 2 * rows_per_group : rows_per_group])
        first = first.at[2].set(batch.contexts[2 * rows_per_group, 0])
        samples = samples.reshape(-1, 4).at[:, 0].set(first).reshape(shape)

    centre = fused.centre_predicts(cfg)
    assert centre == (model_name == "skipgram" and loss != "hs" and skipgram_input == "centre")

    def fused_update(p):
        gathered = fused.gather(p, batch, samples, aux, output_layers.get(loss), centre)
        (total, n), g = jax.value_and_grad(
            lambda r: fused.summed_loss(r, batch, samples, aux, cfg), has_aux=True
        )(gathered)
        layer = output_layers.get(loss)
        row_grads = fused.row_grads(batch, samples, aux, layer, g, centre)
        return total, n, rows.update_rows(p, (), layer.table, row_grads, 0.1, "sgd", 0.0, 0.0)[0]

    def centre_reference(p):
        """The loss library on (centre -> context) pairs, dense gradients, plain SGD."""
        from w2v_jax.model import losses

        def f(p):
            inputs = jnp.repeat(p["in_embed"][batch.centres], C, axis=0)  # [B*C, D]
            labels = batch.contexts.reshape(-1)
            if samples.ndim == 3:  # per pair
                ids = samples.reshape(B * C, -1)
            else:
                per_row = jnp.repeat(samples, B // samples.shape[0], axis=0)  # [B, K]
                ids = jnp.repeat(per_row, C, axis=0)  # [B*C, K]
            bias = p.get("out_bias")
            w = p["out_embed"]
            if loss == "neg":
                per = losses.negative_sampling_loss(inputs, w, labels, ids, bias)
            elif loss == "nce":
                per = losses.nce_loss(inputs, w, labels, ids, aux.log_q, bias)
            else:
                per = losses.sampled_softmax_loss(inputs, w, labels, ids, aux.log_q, bias)
            weights = batch.mask.reshape(-1)
            return jnp.sum(weights * per), jnp.sum(weights)

        (total, n), g = jax.value_and_grad(f, has_aux=True)(p)
        return total, n, jax.tree_util.tree_map(lambda a, b: a - 0.1 * b, p, g)

    def generic_update(p):
        if fused.centre_predicts(cfg):
            return centre_reference(p)
        group = None
        if samples is not None:
            group = rows.example_group(model_name, share, B, C, 4)
        layer = output_layers.get(loss)
        targets = rows.make_targets(layer, batch.centres, samples, group, aux)
        gathered = rows.gather(p, batch.contexts, targets, layer.table)
        (total, n), g = jax.value_and_grad(
            lambda r: rows.summed_loss(r, batch.mask, targets, cfg), has_aux=True
        )(gathered)
        row_grads = rows.row_grads(batch.contexts, targets, g)
        return total, n, rows.update_rows(p, (), layer.table, row_grads, 0.1, "sgd", 0.0, 0.0)[0]

    t1, n1, p1 = jax.jit(fused_update)(params)
    t2, n2, p2 = jax.jit(generic_update)(params)
    assert np.isfinite(float(t1))
    np.testing.assert_allclose(float(t1), float(t2), rtol=1e-5)
    assert float(n1) == float(n2)
    for name in p1:
        np.testing.assert_allclose(p1[name], p2[name], rtol=0, atol=2e-6, err_msg=name)


@pytest.mark.parametrize("loss", ["neg", "hs", "softmax"])
def test_scan_of_sub_steps_equals_sequential_steps(loss):
    """runners.scan_steps on [S, B] slices is S plain steps, each on the updated state."""
    batch, aux = _fixture(loss)
    cfg = update.StepConfig(loss=loss, k=4)
    s0 = _state(cfg)
    split = jax.tree_util.tree_map(lambda x: x.reshape(4, B // 4, *x.shape[1:]), batch)
    lrs = np.asarray([0.1, 0.08, 0.06, 0.04], np.float32)
    scanned, metrics = runners.scan_steps(cfg)(
        jax.tree_util.tree_map(jnp.copy, s0), split, aux, lrs
    )
    step = jax.jit(functools.partial(update.train_step, cfg=cfg))
    state, losses = s0, []
    for i in range(4):
        sub = jax.tree_util.tree_map(lambda x, i=i: x[i], split)
        state, m = step(state, sub, aux, lrs[i])
        losses.append(float(m["loss"]))
    assert int(scanned.step) == 4
    np.testing.assert_allclose(metrics["loss"], losses, rtol=1e-6)
    for name in state.params:
        np.testing.assert_allclose(scanned.params[name], state.params[name], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "model_name,loss,share",
    [
        ("skipgram", "neg", "pair"),
        ("skipgram", "nce", "row"),
        ("cbow", "neg", "pair"),
        ("skipgram", "hs", "pair"),
        ("skipgram", "softmax", "pair"),
    ],
)
@pytest.mark.slow
def test_duplicate_power_scales_each_rows_summed_update(model_name, loss, share):
    """optimizer.duplicate_power p: a row updated by n non-zero contributions in one step
    moves by n^-p times the summed (exact SGD) update."""
    batch, _ = _fixture(loss)
    cfgs, delta = _power_deltas(model_name, loss, share)
    mask = np.asarray(batch.mask) > 0
    if fused.supports(cfgs[0.0]) and fused.centre_predicts(cfgs[0.0]):  # centre is input
        ids = np.asarray(batch.centres)[mask.any(1)]
    else:
        ids = np.asarray(batch.contexts)[mask]
    n = np.bincount(ids, minlength=V).astype(np.float32)[:, None]
    assert n.max() >= 2  # the batch repeats some input words
    summed = delta[0.0]["in_embed"]
    np.testing.assert_allclose(delta[1.0]["in_embed"], summed / np.maximum(n, 1), atol=1e-6)
    np.testing.assert_allclose(
        delta[0.5]["in_embed"], summed / np.sqrt(np.maximum(n, 1)), atol=1e-6
    )
    out = output_layers.get(loss).table
    d0, d1, d5 = delta[0.0][out], delta[1.0][out], delta[0.5][out]
    if loss == "softmax":  # a dense update of the whole table: nothing to scale (the
        return  # two tests below)
    big = np.linalg.norm(d0, axis=1) > 1e-4
    inverse = np.linalg.norm(d0[big], axis=1) / np.linalg.norm(d1[big], axis=1)  # n per row
    np.testing.assert_allclose(inverse, np.round(inverse), atol=1e-3)
    assert inverse.max() >= 2
    np.testing.assert_allclose(d1[big] * inverse[:, None], d0[big], atol=1e-5)
    np.testing.assert_allclose(d5[big] * np.sqrt(inverse)[:, None], d0[big], atol=1e-5)


@functools.cache
def _power_deltas(model_name, loss, share):
    """The StepConfigs and each one's parameter change, for duplicate_power 0, 0.5, 1."""
    batch, aux = _fixture(loss)
    cfgs = {
        p: update.StepConfig(model=model_name, loss=loss, k=4, share=share, duplicate_power=p)
        for p in (0.0, 0.5, 1.0)
    }
    s0 = _state(cfgs[0.0])
    delta = {}
    for p, cfg in cfgs.items():
        new, _ = jax.jit(functools.partial(update.train_step, cfg=cfg))(s0, batch, aux, 0.05)
        delta[p] = {n: np.asarray(new.params[n] - s0.params[n]) for n in s0.params}
    return cfgs, delta


@cpu_bitwise
def test_duplicate_power_leaves_the_dense_softmax_update_bit_for_bit():
    """Bit equality of two compiled programs: an XLA:CPU property (twin below)."""
    _, delta = _power_deltas("skipgram", "softmax", "pair")
    np.testing.assert_array_equal(delta[1.0]["out_embed"], delta[0.0]["out_embed"])


def test_duplicate_power_leaves_the_dense_softmax_update_within_tolerance():
    _, delta = _power_deltas("skipgram", "softmax", "pair")
    np.testing.assert_allclose(
        delta[1.0]["out_embed"], delta[0.0]["out_embed"], rtol=1e-6, atol=1e-8
    )


def test_duplicate_factor_counts_non_zero_updates():
    ids = jnp.array([1, 1, 1, 2])
    updates = jnp.array([[1.0, 0.0], [3.0, 1.0], [0.0, 0.0], [5.0, 5.0]])  # the third: padding
    table, _ = optimizers.sgd(jnp.zeros((4, 2)), (), ids, updates, -1.0, duplicate_power=1.0)
    np.testing.assert_allclose(table, [[0, 0], [2.0, 0.5], [5, 5], [0, 0]])
    table, _ = optimizers.sgd(jnp.zeros((4, 2)), (), ids, updates, -1.0, duplicate_power=0.0)
    np.testing.assert_allclose(table, [[0, 0], [4, 1], [5, 5], [0, 0]])


def test_skipgram_context_input_with_per_pair_negatives_takes_the_generic_path():
    """word2vec C's grouping with per-pair negatives has no fused kernel: the generic path
    (the loss library per example) trains it."""
    batch, aux = _fixture("neg")
    cfg = update.StepConfig(loss="neg", k=4, share="pair", skipgram_input="context")
    assert not fused.supports(cfg)
    st = _state(cfg)
    step = jax.jit(functools.partial(update.train_step, cfg=cfg))
    s1, m1 = step(st, batch, aux, np.float32(0.1))
    _, m2 = step(s1._replace(step=st.step), batch, aux, np.float32(0.0))  # same draws
    assert float(m2["loss"]) < float(m1["loss"])
