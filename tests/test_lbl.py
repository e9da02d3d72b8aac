"""The log-bilinear model (model='lbl'): its inputs against a naive reference, its exact
reduction to summed CBOW, sparse = dense under every output layer, gradients, a tiny run."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from w2v_jax import run_folder, settings, trainer
from w2v_jax.configs import tiny
from w2v_jax.data import input_pipeline
from w2v_jax.evaluation import likelihood
from w2v_jax.model import output_layers, word2vec
from w2v_jax.step import update

V, D, B, C = 30, 6, 12, 3
LOSSES = list(output_layers.NAMES)


@functools.cache
def _fixture(loss):
    rng = np.random.default_rng(0)
    counts = np.sort(rng.integers(1, 500, V))[::-1].astype(np.int64)
    mask = (rng.random((B, C)) < 0.8).astype(np.float32)
    mask[0] = 0.0  # a padding row
    batch = input_pipeline.Batch(
        rng.integers(0, V, B).astype(np.int32), rng.integers(0, V, (B, C)).astype(np.int32), mask
    )
    return batch, output_layers.constants_for(loss, counts), counts


def _state(cfg, kind="full", use_bias=True, scale=0.1):
    ctx = word2vec.context_matrices(C, D, kind)
    st = update.init_state(jax.random.PRNGKey(0), V, D, cfg, use_bias, ctx_matrices=ctx)
    key = jax.random.PRNGKey(1)
    params = {
        k: v + scale * jax.random.normal(jax.random.fold_in(key, i), v.shape)
        for i, (k, v) in enumerate(sorted(st.params.items()))
    }
    return jax.device_get(st._replace(params=params))


@pytest.mark.parametrize("kind", ["full", "diagonal"])
def test_inputs_are_the_sum_of_position_matrices_times_context_vectors(kind):
    rng = np.random.default_rng(1)
    rows_in = rng.normal(size=(B, C, D)).astype(np.float32)
    mask = (rng.random((B, C)) < 0.7).astype(np.float32)
    ctx = rng.normal(size=(C, D, D) if kind == "full" else (C, D)).astype(np.float32)
    h, weights, row = word2vec.example_inputs(rows_in, mask, "lbl", True, False, ctx)
    expected = np.zeros((B, D))
    for b in range(B):
        for c in range(C):
            matrix = ctx[c] if kind == "full" else np.diag(ctx[c])
            expected[b] += mask[b, c] * (matrix.astype(np.float64) @ rows_in[b, c])
    np.testing.assert_allclose(h, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(weights, mask.sum(1) > 0)
    np.testing.assert_array_equal(row, np.arange(B))


def test_identity_matrices_reduce_to_summed_cbow_exactly():
    rng = np.random.default_rng(2)
    rows_in = rng.normal(size=(B, C, D)).astype(np.float32)
    mask = (rng.random((B, C)) < 0.7).astype(np.float32)
    for kind in word2vec.CONTEXT_MATRICES:
        ctx = word2vec.context_matrices(C, D, kind)
        h, w, _ = word2vec.example_inputs(rows_in, mask, "lbl", True, False, ctx)
        h_cbow, w_cbow, _ = word2vec.example_inputs(rows_in, mask, "cbow", False, False)
        np.testing.assert_allclose(h, h_cbow, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(w, w_cbow)


def test_softmax_loss_matches_a_naive_numpy_reference():
    batch, aux, _ = _fixture("softmax")
    cfg = update.StepConfig(model="lbl", loss="softmax")
    params = _state(cfg).params
    total, count = update.eval_loss(params, batch, aux, jax.random.PRNGKey(0), cfg=cfg)
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    expected, n = 0.0, 0
    for b in range(B):
        if not batch.mask[b].any():
            continue
        h = sum(
            batch.mask[b, c] * p["ctx_matrices"][c] @ p["in_embed"][batch.contexts[b, c]]
            for c in range(C)
        )
        scores = p["out_embed"] @ h + p["out_bias"]
        expected += np.logaddexp.reduce(scores) - scores[batch.centres[b]]
        n += 1
    assert float(count) == n
    assert float(total) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("kind", ["full", "diagonal"])
def test_every_layer_trains_and_sparse_equals_dense(loss, kind):
    batch, aux, _ = _fixture(loss)
    use_bias = output_layers.get(loss).biases
    sparse = update.StepConfig(model="lbl", loss=loss, k=4, optimizer="adagrad", sparse=True)
    dense = update.StepConfig(model="lbl", loss=loss, k=4, optimizer="adagrad", sparse=False)
    s0 = _state(sparse, kind, use_bias)
    d0 = _state(dense, kind, use_bias)
    step_sparse = jax.jit(functools.partial(update.train_step, cfg=sparse))
    step_dense = jax.jit(functools.partial(update.train_step, cfg=dense))
    s1, m1 = step_sparse(s0, batch, aux, np.float32(0.1))
    d1, _ = step_dense(d0, batch, aux, np.float32(0.1))
    for name in s1.params:  # same draws: sparse AdaGrad equals optax's on every parameter
        np.testing.assert_allclose(s1.params[name], d1.params[name], rtol=0, atol=2e-6)
    assert not np.array_equal(s1.params["ctx_matrices"], s0.params["ctx_matrices"])
    _, m2 = step_sparse(s1._replace(step=jnp.zeros((), jnp.int32)), batch, aux, np.float32(0.0))
    assert float(m2["loss"]) < float(m1["loss"])


def test_gradients_of_the_context_matrices_check_numerically():
    batch, aux, _ = _fixture("softmax")
    cfg = update.StepConfig(model="lbl", loss="softmax")
    batch64 = batch._replace(mask=batch.mask.astype(np.float64))
    with jax.enable_x64(True):
        params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), _state(cfg).params)

        def loss(ctx, in_embed, bias):
            p = {**params, "ctx_matrices": ctx, "in_embed": in_embed, "out_bias": bias}
            return update.eval_loss(p, batch64, aux, jax.random.PRNGKey(0), cfg=cfg)[0]

        check_grads(
            loss, (params["ctx_matrices"], params["in_embed"], params["out_bias"]),
            order=1, modes=["rev"], atol=1e-5, rtol=1e-5,
        )  # fmt: skip


def test_heldout_likelihood_uses_the_context_matrices():
    batch, _, _ = _fixture("softmax")
    cfg = update.StepConfig(model="lbl", loss="softmax")
    params = _state(cfg).params
    result = likelihood.heldout_nll(params, [batch], model="lbl", loss_name="softmax")
    total, count = update.eval_loss(params, batch, None, jax.random.PRNGKey(0), cfg=cfg)
    assert result.nll == pytest.approx(float(total) / float(count), rel=1e-5)
    assert result.log_z_std > 0


def _tiny_lbl(tmp_path, **overrides):
    config = tiny.get_config()
    config.model = "lbl"
    config.left_only = True
    config.window = 2
    config.dynamic_window = False
    config.sample = 0.0
    config.loss.name = "nce"
    config.loss.k = 5
    for key, value in overrides.items():
        node, *path = key.split(".")
        target = config[node] if path else config
        target[path[0] if path else node] = value
    return config


def test_tiny_lbl_run_trains_scores_exactly_and_starts_biases_at_log_unigram(tmp_path):
    config = _tiny_lbl(tmp_path, **{"lbl.bias_init": "unigram"})
    run = settings.resolve(config)
    assert run.loop.use_bias  # lbl has biases without loss.use_bias
    final = trainer.train_and_evaluate(config, str(tmp_path / "run"))
    assert np.isfinite(final["train/loss"])
    assert np.isfinite(final["eval/heldout_ppl"]) and final["eval/heldout_ppl"] > 1
    assert "eval/log_z_std" in final
    # Read back whole, its context matrices included (load_run refused lbl runs before).
    state = run_folder.load_run(tmp_path / "run").state
    assert state.params["ctx_matrices"].shape[0] == config.window  # left_only: W slots


def test_lbl_init_gives_identity_matrices_and_log_unigram_biases():
    loop = settings.resolve(_tiny_lbl(None, **{"lbl.bias_init": "unigram"})).loop
    pipeline = settings.resolve(_tiny_lbl(None)).pipeline
    counts = np.array([5, 3, 2], np.int64)
    init = trainer._lbl_init(loop, pipeline, counts)
    np.testing.assert_array_equal(init["ctx_matrices"], np.tile(np.eye(loop.dim), (2, 1, 1)))
    np.testing.assert_allclose(init["bias_init"], np.log(counts / 10), rtol=1e-6)
    cbow = settings.resolve(tiny.get_config()).loop
    assert trainer._lbl_init(cbow, pipeline, counts) == {}


@pytest.mark.parametrize(
    "overrides,needle",
    [
        ({"model": "skipgram", "lbl.context_matrices": "diagonal"}, "lbl.context_matrices"),
        ({"model": "cbow", "lbl.bias_init": "unigram"}, "lbl.bias_init"),
        ({"lbl.context_matrices": "lowrank"}, "lbl.context_matrices"),
        ({"parallel.mode": "pmap", "input.mode": "host"}, "model='lbl'"),
        ({"loss.name": "hs", "lbl.bias_init": "unigram"}, "lbl.bias_init"),
    ],
)
def test_bad_lbl_options_fail_in_one_line(overrides, needle):
    config = _tiny_lbl(None, **overrides)
    with pytest.raises(ValueError, match=needle) as error:
        settings.resolve(config)
    assert "\n" not in str(error.value)
