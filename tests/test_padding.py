"""Padding ids lie outside the tables: id V in a batch, V - 1 in a Huffman path.

Padding used to be id 0, the most frequent word, so every padded slot added a zero gradient
into row 0. Now the pipelines pad with V (Huffman paths with V - 1, one past the inner
nodes), the step's gathers read zeros there and its scatters drop them. A zero added to a
row never changed it, so a step on a batch padded either way gives the same parameters,
optimiser state and loss: `test_a_step_is_the_same_under_both_paddings` checks that bit for
bit, for every model, output layer and sparse optimiser.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2v_jax.data import input_pipeline, on_device
from w2v_jax.evaluation import likelihood
from w2v_jax.model import huffman, output_layers
from w2v_jax.step import optimizers, rows, update

V, D = 30, 8


def zipf_corpus(seed=0, sentences=40, max_length=12):
    """Zipf-ish ids in sentences of 1..max_length tokens (short ones leave empty slots)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_length + 1, size=sentences)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    p = 1.0 / np.arange(1, V + 1)
    ids = rng.choice(V, size=offsets[-1], p=p / p.sum()).astype(np.int32)
    counts = np.bincount(ids, minlength=V).astype(np.int64) + 1
    return ids, offsets, counts


def padded_batch(left_only=False):
    """The last host batch of an epoch: empty slots and filler rows, padded with V."""
    corpus = zipf_corpus()
    items = list(
        input_pipeline.iterate_batches(
            *corpus,
            layout="grouped",
            batch_size=96,
            window=2,
            sample=0.0,
            seed=3,
            epochs=1,
            left_only=left_only,
        )  # fmt: skip
    )
    batch = items[-1].batch
    empty_rows = ~batch.mask.any(axis=1)
    assert empty_rows.sum() >= 4 and (batch.mask[~empty_rows] == 0).any()
    return batch, corpus[2]


def old_padding(batch):
    """The same batch padded the old way: id 0 wherever the mask is 0, centre 0 on a
    filler row."""
    empty_rows = ~batch.mask.any(axis=1)
    return input_pipeline.Batch(
        np.where(empty_rows, 0, batch.centres).astype(np.int32),
        np.where(batch.mask > 0, batch.contexts, 0).astype(np.int32),
        batch.mask,
    )


def test_host_pipeline_pads_with_v_never_0():
    corpus = zipf_corpus()
    for layout, left_only in (("grouped", False), ("grouped", True), ("pairs", False)):
        items = input_pipeline.iterate_batches(
            *corpus, layout=layout, batch_size=64, window=3, sample=1e-2, seed=1, epochs=2,
            left_only=left_only, batches_per_epoch=12,
        )  # fmt: skip
        for item in items:
            b = item.batch
            assert np.all(b.contexts[b.mask == 0] == V)
            assert np.all(b.centres[~b.mask.any(axis=1)] == V)
            assert np.all((b.contexts[b.mask > 0] >= 0) & (b.contexts[b.mask > 0] < V))


@pytest.mark.slow
def test_device_pipeline_pads_with_v_never_0():
    ids, offsets, counts = zipf_corpus()
    corpus = on_device.make_corpus(ids, offsets, counts, sample=1e-2)
    key = on_device.data_key(0)
    for left_only in (False, True):
        spec = on_device.make_spec(
            ids, counts, sample=1e-2, batch_size=32, window=3, left_only=left_only
        )
        assert spec.vocab_size == V
        draw = jax.jit(on_device.draw_batch, static_argnums=3)
        for step in range(0, 3 * spec.steps_per_epoch, 2):
            b = jax.device_get(draw(corpus, key, step, spec))
            assert (b.mask == 0).any()
            assert np.all(b.contexts[b.mask == 0] == V)
            assert np.all((b.centres >= 0) & (b.centres < V))
    epoch = jax.device_get(on_device.subsample(corpus, key, 0))
    assert 0 < epoch.num_kept < ids.size
    assert np.all(epoch.ids[epoch.num_kept :] == V)  # the tail past the kept words


def test_huffman_pads_with_v_minus_1():
    tree = huffman.build_huffman(zipf_corpus()[2])
    pad = tree.mask == 0
    assert pad.any() and np.all(tree.points[pad] == V - 1) and np.all(tree.codes[pad] == 0)
    assert np.all(tree.points[~pad] < V - 1)
    aux = output_layers.constants_for("hs", zipf_corpus()[2])
    codes, points, path_mask = aux.paths(jnp.array([0, V]))  # a word and a padding row
    assert np.all(np.asarray(points)[1] == V - 1) and not np.asarray(path_mask)[1].any()
    np.testing.assert_array_equal(points[0], aux.points[0])


def test_gathers_read_zeros_and_scatters_drop_at_the_padding_id():
    table = jnp.arange(V * D, dtype=jnp.float32).reshape(V, D) + 1.0
    params = {"out_embed": table, "out_bias": jnp.ones(V)}
    out, bias = rows.output_rows(params, "out_embed", jnp.array([3, V, V + 7]))
    np.testing.assert_array_equal(out[0], table[3])
    assert not np.asarray(out[1:]).any() and not np.asarray(bias[1:]).any()
    ids, grads = jnp.array([V, 2, V]), jnp.ones((3, D))
    new, _ = optimizers.sgd(table, (), ids, grads, 0.5)
    np.testing.assert_array_equal(new[2], table[2] - 0.5)
    np.testing.assert_array_equal(np.delete(np.asarray(new), 2, 0), np.delete(table, 2, 0))
    acc = jnp.full_like(table, 0.1)
    new, new_acc = optimizers.sparse_update("adagrad", table, acc, ids, grads, 0.5, eps=1e-7)
    np.testing.assert_array_equal(np.delete(np.asarray(new), 2, 0), np.delete(table, 2, 0))
    np.testing.assert_array_equal(np.delete(np.asarray(new_acc), 2, 0), np.delete(acc, 2, 0))


CASES = [
    (model, loss, optimizer, {})
    for model in ("skipgram", "cbow")
    for loss in ("neg", "hs", "nce", "sampled_softmax", "softmax")
    for optimizer in ("sgd", "adagrad")
] + [
    ("skipgram", "neg", "sgd", {"skipgram_input": "context"}),  # the generic per-pair path
    ("skipgram", "nce", "rowwise_adagrad", {"share": "row"}),
    ("skipgram", "neg", "sgd", {"left_only": True}),
    ("cbow", "neg", "sgd", {"duplicate_power": 1.0}),
    ("skipgram", "sampled_softmax", "adagrad", {"use_bias": True}),
    ("cbow", "hs", "adagrad", {"sparse": False}),
    ("skipgram", "neg", "adam", {"sparse": False}),
]


def _state(cfg, use_bias, counts):
    state = update.init_state(jax.random.PRNGKey(0), V, D, cfg, use_bias)
    # Non-zero output rows and biases, so that every gradient is non-trivial.
    keys = jax.random.split(jax.random.PRNGKey(1), len(state.params))
    params = {
        name: p if name == "in_embed" else 0.3 * jax.random.normal(k, p.shape)
        for (name, p), k in zip(sorted(state.params.items()), keys, strict=True)
    }
    return state._replace(params=params)


@pytest.mark.parametrize(
    "model,loss,optimizer,extra", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}-{c[3]}" for c in CASES]
)
def test_a_step_is_the_same_under_both_paddings(model, loss, optimizer, extra):
    extra = dict(extra)
    use_bias = extra.pop("use_bias", False)
    batch, counts = padded_batch(left_only=extra.get("left_only", False))
    cfg = update.StepConfig(model=model, loss=loss, optimizer=optimizer, k=3, **extra)
    aux = output_layers.constants_for(loss, counts)
    step = jax.jit(update.train_step, static_argnames="cfg")
    results = []
    for b in (batch, old_padding(batch)):
        state = _state(cfg, use_bias, counts)
        for lr in (0.05, 0.04):  # two steps: the second sees the first's accumulators
            state, metrics = step(state, jax.tree.map(jnp.asarray, b), aux, lr, cfg=cfg)
        results.append(jax.device_get((state, metrics)))
    (new_state, new_metrics), (old_state, old_metrics) = results
    assert np.isfinite(new_metrics["loss"]) and new_metrics["examples"] > 0
    for name in ("loss", "examples", "grad_norm_in", "grad_norm_out"):
        np.testing.assert_array_equal(new_metrics[name], old_metrics[name], err_msg=name)
    jax.tree.map(np.testing.assert_array_equal, new_state.params, old_state.params)
    jax.tree.map(np.testing.assert_array_equal, new_state.opt_state, old_state.opt_state)


@pytest.mark.parametrize("loss", ["softmax", "hs"])
@pytest.mark.parametrize("model", ["skipgram", "cbow"])
def test_heldout_terms_are_the_same_under_both_paddings(model, loss):
    batch, counts = padded_batch()
    cfg = update.StepConfig(model=model, loss=loss)
    params = _state(cfg, False, counts).params
    aux = output_layers.constants_for(loss, counts)
    tree = (aux.codes, aux.points, aux.path_mask) if loss == "hs" else None
    terms = [
        likelihood.example_terms(
            params,
            jax.tree.map(jnp.asarray, b),
            tree,
            None,
            model=model,
            loss_name=loss,
            cbow_mean=True,
            chunk_size=7,
        )  # fmt: skip
        for b in (batch, old_padding(batch))
    ]
    (nll, log_z, weights), (old_nll, old_log_z, old_weights) = jax.device_get(terms)
    assert np.all(np.isfinite(nll)) and np.all(np.isfinite(log_z))
    np.testing.assert_array_equal(weights, old_weights)
    keep = weights > 0
    np.testing.assert_array_equal(nll[keep], old_nll[keep])
    np.testing.assert_array_equal(log_z[keep], old_log_z[keep])
