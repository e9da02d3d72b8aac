"""likelihood: exact held-out NLL under the full softmax against float64 loops."""

import math

import numpy as np
import pytest
import scipy.special

from w2v_jax.data import input_pipeline
from w2v_jax.evaluation import likelihood
from w2v_jax.model import huffman, losses, output_layers

V, D, B, C = 23, 5, 7, 4


def _params(seed=0, bias=True, scale=1.0):
    rng = np.random.default_rng(seed)
    params = {
        "in_embed": rng.normal(0, scale, (V, D)).astype(np.float32),
        "out_embed": rng.normal(0, scale, (V, D)).astype(np.float32),
    }
    if bias:
        params["out_bias"] = rng.normal(0, 1, V).astype(np.float32)
    return params


def _batches(seed=0, num=3):
    """Batches with padded slots and one all-padding row, as the pipeline pads."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num):
        mask = (rng.random((B, C)) < 0.7).astype(np.float32)
        mask[0] = 1.0
        mask[-1] = 0.0  # a padding row
        contexts = rng.integers(0, V, (B, C)).astype(np.int32) * (mask > 0)
        centres = rng.integers(0, V, B).astype(np.int32)
        out.append(input_pipeline.Batch(centres, contexts, mask))
    return out


def _brute_force(params, batches, model_name, cbow_mean=True):
    """Per-example (NLL, log Z) with float64 loops over rows and slots."""
    in_embed = params["in_embed"].astype(np.float64)
    out = params["out_embed"].astype(np.float64)
    bias = params.get("out_bias", np.zeros(V)).astype(np.float64)
    nll, log_z = [], []
    for batch in batches:
        for b in range(B):
            slots = [c for c in range(C) if batch.mask[b, c] > 0]
            if model_name == "skipgram":
                inputs = [in_embed[batch.contexts[b, c]] for c in slots]
            elif slots:
                summed = sum(in_embed[batch.contexts[b, c]] for c in slots)
                inputs = [summed / len(slots) if cbow_mean else summed]
            else:
                inputs = []
            for h in inputs:
                s = np.array([out[w] @ h + bias[w] for w in range(V)])
                z = scipy.special.logsumexp(s)
                nll.append(z - s[batch.centres[b]])
                log_z.append(z)
    return np.array(nll), np.array(log_z)


@pytest.mark.parametrize(
    "model_name,cbow_mean,per_word",
    [
        ("skipgram", True, False),
        ("skipgram", True, True),
        ("cbow", True, None),
        ("cbow", False, None),
    ],
)
def test_heldout_nll_equals_float64_loops(model_name, cbow_mean, per_word):
    params, batches = _params(), _batches()
    got = likelihood.heldout_nll(
        params, batches, model=model_name, loss_name="neg", cbow_mean=cbow_mean,
        chunk_size=None, per_word=per_word,
    )  # fmt: skip
    nll, log_z = _brute_force(params, batches, model_name, cbow_mean)
    assert got.count == nll.size
    np.testing.assert_allclose(got.nll, nll.mean(), rtol=1e-5)
    np.testing.assert_allclose(got.total, nll.sum(), rtol=1e-5)
    np.testing.assert_allclose(got.ppl, math.exp(nll.mean()), rtol=1e-5)
    np.testing.assert_allclose(got.nll_unnormalised, (nll - log_z).mean(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.log_z_mean, log_z.mean(), rtol=1e-5)
    np.testing.assert_allclose(got.log_z_std, log_z.std(), rtol=1e-4)
    quantiles = np.quantile(log_z, likelihood.QUANTILES)
    np.testing.assert_allclose(got.log_z_quantiles, quantiles, rtol=1e-5)


@pytest.mark.parametrize("per_word", [False, True])
def test_chunked_equals_unchunked(per_word):
    params, batches = _params(1), _batches(1)
    kwargs = dict(model="skipgram", loss_name="softmax", per_word=per_word)
    full = likelihood.heldout_nll(params, batches, chunk_size=None, **kwargs)
    for chunk in (4, 5, V, 1000):  # a ragged last block, V itself, and more than V
        got = likelihood.heldout_nll(params, batches, chunk_size=chunk, **kwargs)
        np.testing.assert_allclose(np.array(got[:7]), np.array(full[:7]), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(got.log_z_quantiles, full.log_z_quantiles, rtol=1e-6)


def test_word_log_z_pads_the_last_block():
    params = _params(2)
    want = scipy.special.logsumexp(
        params["in_embed"].astype(np.float64) @ params["out_embed"].T.astype(np.float64)
        + params["out_bias"],
        axis=1,
    )
    for rows in (4, 10, 64):
        got = likelihood.word_log_z(params, chunk_size=6, rows=rows)
        np.testing.assert_allclose(got, want, rtol=1e-5)


def _hs_setup(seed=0):
    rng = np.random.default_rng(seed)
    tree = huffman.build_huffman(rng.integers(1, 100, V))
    aux = output_layers.Constants(
        codes=tree.codes.astype(np.float32),
        points=tree.points.astype(np.int32),
        path_mask=tree.mask.astype(np.float32),
    )
    params = {
        "in_embed": rng.normal(0, 1, (V, D)).astype(np.float32),
        "node_embed": rng.normal(0, 1, (V - 1, D)).astype(np.float32),
    }
    return params, aux


def test_hs_nll_is_the_hs_loss_and_log_z_is_zero():
    params, aux = _hs_setup()
    batches = _batches(2)
    got = likelihood.heldout_nll(params, batches, model="skipgram", loss_name="hs", aux=aux)
    per = []
    for batch in batches:
        inputs, labels, weights = likelihood.batch_examples(params, batch, model="skipgram")
        keep = np.asarray(weights) > 0
        loss = losses.hierarchical_softmax_loss(
            inputs, params["node_embed"], aux.codes[labels], aux.points[labels],
            aux.path_mask[labels],
        )  # fmt: skip
        per.append(np.asarray(loss)[keep])
    np.testing.assert_allclose(got.nll, np.concatenate(per).mean(), rtol=1e-6)
    assert got.log_z_mean == got.log_z_std == 0.0 and set(got.log_z_quantiles) == {0.0}
    assert got.nll_unnormalised == pytest.approx(got.nll)


def test_hs_leaf_probabilities_sum_to_one_and_match_the_loss():
    params, aux = _hs_setup(3)
    inputs = np.random.default_rng(4).normal(0, 1, (6, D)).astype(np.float32)
    log_p = likelihood.hs_log_probs(
        inputs, params["node_embed"], aux.codes, aux.points, aux.path_mask
    )  # [6, V]
    np.testing.assert_allclose(scipy.special.logsumexp(log_p, axis=1), 0.0, atol=1e-9)
    assert log_p.shape == (6, V)
    for w in range(V):
        loss = losses.hierarchical_softmax_loss(
            inputs, params["node_embed"], np.repeat(aux.codes[w : w + 1], 6, 0),
            np.repeat(aux.points[w : w + 1], 6, 0), np.repeat(aux.path_mask[w : w + 1], 6, 0),
        )  # fmt: skip
        np.testing.assert_allclose(-log_p[:, w], loss, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(
        likelihood.log_probs(params, inputs, loss_name="hs", aux=aux), log_p
    )


def test_self_normalised_model_has_log_z_zero():
    """in = I, out[w, c] = log p(w | c): the scores are log-probabilities, so Z = 1."""
    rng = np.random.default_rng(5)
    log_p = np.log(rng.dirichlet(np.ones(V), size=V))  # [c, w]
    params = {"in_embed": np.eye(V, dtype=np.float32), "out_embed": log_p.T.astype(np.float32)}
    got = likelihood.heldout_nll(params, _batches(6), model="skipgram", loss_name="nce")
    assert abs(got.log_z_mean) < 1e-5 and got.log_z_std < 1e-5
    assert max(abs(x) for x in got.log_z_quantiles) < 1e-5
    assert got.nll_unnormalised == pytest.approx(got.nll, abs=1e-5)
    inputs = np.eye(V)[:4]
    np.testing.assert_allclose(
        likelihood.log_probs(params, inputs, loss_name="nce"), log_p[:4], atol=1e-5
    )


@pytest.mark.parametrize("model_name", ["skipgram", "cbow"])
def test_penalised_softmax_is_scored_as_the_plain_softmax(model_name):
    """softmax_penalty's held-out NLL is -log p(w | h) under the softmax (the float64
    loops), not its training objective, which adds the penalty on Z."""
    params, batches = _params(), _batches()
    got = likelihood.heldout_nll(
        params, batches, model=model_name, loss_name="softmax_penalty", chunk_size=7
    )
    want = likelihood.heldout_nll(params, batches, model=model_name, loss_name="softmax")
    nll, log_z = _brute_force(params, batches, model_name)
    assert got.nll == pytest.approx(want.nll, rel=1e-6) == pytest.approx(nll.mean(), rel=1e-5)
    assert got.log_z_std == pytest.approx(log_z.std(), rel=1e-4)
    inputs = params["in_embed"][:3]
    np.testing.assert_array_equal(
        likelihood.log_probs(params, inputs, loss_name="softmax_penalty"),
        likelihood.log_probs(params, inputs, loss_name="softmax"),
    )


def test_zero_output_vectors_give_log_v():
    params = _params(7, bias=False)
    params["out_embed"] = np.zeros_like(params["out_embed"])
    got = likelihood.heldout_nll(params, _batches(8), model="cbow", loss_name="neg")
    assert got.nll == pytest.approx(math.log(V), rel=1e-6)
    assert got.ppl == pytest.approx(V, rel=1e-5)
    assert got.nll_unnormalised == pytest.approx(0.0, abs=1e-6)


def test_metrics_keys():
    got = likelihood.heldout_nll(_params(), _batches(), model="skipgram", loss_name="neg")
    keys = set(got.metrics())
    quantile_keys = {f"eval/log_z_q{q}" for q in ("05", "25", "50", "75", "95")}
    assert quantile_keys <= keys
    assert {"eval/heldout_nll", "eval/heldout_ppl", "eval/heldout_nll_unnormalised"} <= keys
    assert all(np.isfinite(v) for v in got.metrics().values())


def test_one_compilation_per_batch_shape():
    params, batches = _params(9), _batches(9, num=4)
    kwargs = dict(model="skipgram", loss_name="sampled_softmax", chunk_size=8)
    likelihood.heldout_nll(params, batches, **kwargs)
    before = likelihood.example_terms._cache_size()
    likelihood.heldout_nll(_params(10), batches, **kwargs)
    assert likelihood.example_terms._cache_size() == before


def test_bad_arguments():
    with pytest.raises(ValueError, match="model must be one of"):
        likelihood.heldout_nll(_params(), _batches(), model="glove", loss_name="neg")
    with pytest.raises(ValueError, match="loss_name must be one of"):
        likelihood.heldout_nll(_params(), _batches(), model="cbow", loss_name="nope")
    with pytest.raises(ValueError, match="needs aux"):
        likelihood.heldout_nll(_params(), _batches(), model="cbow", loss_name="hs")
    with pytest.raises(ValueError, match="at least one batch"):
        likelihood.heldout_nll(_params(), [], model="cbow", loss_name="neg")
    empty = [input_pipeline.Batch(*(np.zeros_like(a) for a in _batches()[0]))]
    with pytest.raises(ValueError, match="every batch is padding"):
        likelihood.heldout_nll(_params(), empty, model="cbow", loss_name="neg")
