"""theory, truth_fit, gradient_bias: the theory's predictions on planted and exact cases."""

import collections
import math

import jax
import numpy as np
import pytest
import scipy.special

from w2v_jax.analysis import gradient_bias, pmi_shift
from w2v_jax.data import input_pipeline, synthetic
from w2v_jax.evaluation import truth_fit

# ------------------------------------------------------------------------- pair counts


def _corpus(seed=0, vocab=9, tokens=400):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, tokens).astype(np.int32)
    offsets = np.array([0, 37, 38, 150, 151, 290, tokens])  # a one-token sentence too
    return ids, offsets


def _pipeline_counts(ids, offsets, vocab, window, left_only):
    """One epoch of the training pipeline (fixed window, no subsampling), pairs counted."""
    counts = collections.Counter()
    items = input_pipeline.iterate_batches(
        ids, offsets, np.bincount(ids, minlength=vocab), layout="grouped", batch_size=16,
        window=window, sample=0.0, seed=0, epochs=1, dynamic_window=False, left_only=left_only,
    )  # fmt: skip
    for item in items:
        b = item.batch
        for r, c in zip(*np.nonzero(b.mask), strict=True):
            counts[(int(b.centres[r]), int(b.contexts[r, c]))] += 1
    return counts


def _as_dict(pairs):
    keys = zip(pairs.centre.tolist(), pairs.context.tolist(), strict=True)
    return dict(zip(keys, pairs.count.tolist(), strict=True))


@pytest.mark.parametrize("left_only", [False, True])
def test_count_pairs_equals_the_training_pipeline(left_only):
    ids, offsets = _corpus()
    got = pmi_shift.count_pairs(
        ids, offsets, 9, window=3, dynamic_window=False, left_only=left_only, chunk_tokens=50,
    )  # fmt: skip
    want = _pipeline_counts(ids, offsets, 9, 3, left_only)
    assert _as_dict(got) == want
    assert got.total == sum(want.values())
    np.testing.assert_array_equal(got.centre_total, np.bincount(got.centre, got.count, 9))
    np.testing.assert_array_equal(got.context_total, np.bincount(got.context, got.count, 9))


def test_count_pairs_dynamic_window_weights_and_top_words():
    ids, offsets = _corpus(1)
    window = 3
    want = collections.Counter()
    for s in range(len(offsets) - 1):
        sentence = ids[offsets[s] : offsets[s + 1]]
        for i in range(len(sentence)):
            for j in range(len(sentence)):
                d = abs(i - j)
                if 1 <= d <= window:  # centre i, context j, used with probability a_d
                    want[(sentence[i], sentence[j])] += (window - d + 1) / window
    got = pmi_shift.count_pairs(ids, offsets, 9, window=window, chunk_tokens=64)
    pairs = _as_dict(got)
    assert pairs.keys() == want.keys()
    np.testing.assert_allclose([pairs[k] for k in want], list(want.values()))
    top = pmi_shift.count_pairs(ids, offsets, 9, window=window, top_words=4)
    assert top.centre.max() < 4 and top.context.max() < 4
    np.testing.assert_allclose(top.centre_total, got.centre_total)  # marginals: all pairs
    assert top.total == pytest.approx(got.total)


# -------------------------------------------------------------------------- PMI shift


def _planted(v=12, seed=0, shift=-1.6094379124341003):  # -log 5
    """Counts from a known joint, and in = I, out[w, c] = PMI(w, c) + shift."""
    rng = np.random.default_rng(seed)
    joint = rng.dirichlet(np.ones(v * v)).reshape(v, v)  # [w, c]
    n = joint * 1e6
    w, c = np.divmod(np.arange(v * v), v)
    pairs = pmi_shift.PairCounts(
        w.astype(np.int32), c.astype(np.int32), n.ravel(), n.sum(1), n.sum(0), n.sum()
    )
    pmi = np.log(joint) - np.log(joint.sum(1, keepdims=True)) - np.log(joint.sum(0))
    params = {
        "in_embed": np.eye(v, dtype=np.float32),
        "out_embed": (pmi + shift).astype(np.float32),
    }
    return pairs, params, joint


def test_pmi_fit_recovers_a_planted_shift():
    pairs, params, joint = _planted()
    log_q = np.log(np.full(12, 1 / 12))
    got = pmi_shift.pmi_shift(pairs, params, min_count=0, k=5, log_q=log_q)
    assert got.num_pairs == 144 and got.predicted_offset == pytest.approx(-math.log(5))
    assert got.pmi.slope == pytest.approx(1.0, abs=1e-5)
    assert got.pmi.intercept == pytest.approx(-math.log(5), abs=1e-5)
    assert got.pmi.offset == pytest.approx(-math.log(5), abs=1e-5)
    assert got.pmi.pearson == pytest.approx(1.0, abs=1e-6) and got.pmi.residual_std < 1e-5
    # log p̂(w | c) = PMI + log p(w): a per-word term, so the unit-slope fit is off.
    assert got.log_cond.pearson < 0.999 and got.log_cond.residual_std > 0.1


def test_nce_scores_fit_log_conditional_with_offset_zero():
    pairs, params, joint = _planted(seed=1)
    log_cond = np.log(joint) - np.log(joint.sum(0))  # [w, c], log p(w | c)
    params["out_embed"] = log_cond.astype(np.float32)
    got = pmi_shift.pmi_shift(pairs, params, min_count=1e3)
    assert got.num_pairs == np.count_nonzero(pairs.count >= 1e3)
    assert got.log_cond.offset == pytest.approx(0.0, abs=1e-5)
    assert got.log_cond.slope == pytest.approx(1.0, abs=1e-5)
    assert got.log_ratio is None and got.predicted_offset is None
    with pytest.raises(ValueError, match="fewer than 2 pairs"):
        pmi_shift.pmi_shift(pairs, params, min_count=1e9)


# ------------------------------------------------------------------------ ground truth


def _truth(v=25, seed=3):
    spec = synthetic.SyntheticSpec(vocab_size=v, rank=3, num_tokens=1000, seed=seed)
    return synthetic.GroundTruth(spec, synthetic.make_chain(spec), np.arange(v))


def _true_model(target):
    """in = I, out[w, c] = log p(w | c): the model is the truth."""
    v = target.log_cond.shape[0]
    return {
        "in_embed": np.eye(v, dtype=np.float32),
        "out_embed": target.log_cond.T.astype(np.float32),
    }


def test_kl_is_zero_for_the_true_model_and_positive_when_perturbed():
    truth = _truth()
    kwargs = dict(model="skipgram", window=2, dynamic=True, loss_name="nce")
    target = truth_fit.true_conditional(truth, model="skipgram", window=2)
    # Two-sided windows: the joint is symmetric, so p(w | c) is skipgram_conditional's row c.
    np.testing.assert_allclose(np.exp(target.log_cond), truth.skipgram_conditional(2), atol=1e-12)
    np.testing.assert_allclose(target.context_probs, truth.unigram(), rtol=1e-9)
    params = _true_model(target)
    exact = truth_fit.kl_to_truth(params, truth, **kwargs)
    assert abs(exact.kl) < 1e-6
    assert exact.corr_logp == pytest.approx(1.0, abs=1e-6)
    assert exact.spearman_logp == pytest.approx(1.0, abs=1e-6)
    entropy = -np.sum(target.joint * target.log_cond)
    assert exact.entropy == pytest.approx(entropy)
    rng = np.random.default_rng(0)
    params["out_embed"] = params["out_embed"] + rng.normal(0, 0.3, params["out_embed"].shape)
    perturbed = truth_fit.kl_to_truth(params, truth, **kwargs)
    log_model = scipy.special.log_softmax(params["out_embed"].T.astype(np.float64), axis=1)
    p = np.exp(target.log_cond)
    want = np.sum(target.context_probs[:, None] * p * (target.log_cond - log_model))
    assert perturbed.kl > 0.01 and perturbed.kl == pytest.approx(want, rel=1e-6)
    assert perturbed.corr_logp < 1.0


def test_left_only_and_cbow_truths():
    truth = _truth()
    p = truth.chain.transition  # vocab order = chain order here
    left = truth_fit.true_conditional(truth, model="skipgram", window=2, left_only=True)
    a = synthetic.window_weights(2)  # centre w is k steps after its context c: P^k[c, w]
    want = (a[0] * p + a[1] * p @ p) / a.sum()
    np.testing.assert_allclose(np.exp(left.log_cond), want, atol=1e-12)
    cbow = truth_fit.true_conditional(truth, model="cbow", window=1, left_only=True)
    np.testing.assert_allclose(np.exp(cbow.log_cond), truth.next_word_conditional(), atol=1e-12)
    assert truth_fit.true_conditional(truth, model="cbow", window=2, left_only=True) is None
    assert truth_fit.kl_to_truth({}, truth, model="cbow", window=2, loss_name="neg") is None


def test_cbow_heldout_kl_matches_the_closed_form_for_one_left_context():
    truth = _truth(v=15, seed=4)
    target = truth_fit.true_conditional(truth, model="cbow", window=1, left_only=True)
    params = _true_model(target)
    ids, offsets = synthetic.sample_chain(
        truth.chain, num_tokens=20_000, sentence_length=500, seed=0
    )
    batches = [
        item.batch
        for item in input_pipeline.iterate_batches(
            ids, offsets, np.bincount(ids), layout="grouped", batch_size=512, window=1,
            sample=0.0, seed=0, epochs=1, dynamic_window=False, left_only=True,
        )
    ]  # fmt: skip
    kwargs = dict(loss_name="nce", left_only=True)
    assert abs(truth_fit.cbow_kl_heldout(params, batches, truth, **kwargs)) < 1e-6
    params["out_embed"] = params["out_embed"] * 0.5
    estimate = truth_fit.cbow_kl_heldout(params, batches, truth, **kwargs)
    closed = truth_fit.fit_to_truth(params, target, loss_name="nce").kl
    assert estimate == pytest.approx(closed, rel=0.05)  # 20k rows: a few % sampling error


# ----------------------------------------------------------------------- gradient bias


def _normalised_state(v=40, d=6, e=16, seed=0):
    """Inputs with an extra coordinate -log Z(h) against an all-ones output column: Z = 1."""
    rng = np.random.default_rng(seed)
    out = rng.normal(0, 1, (v, d + 1))
    out[:, -1] = 1.0
    h = rng.normal(0, 1, (e, d + 1))
    h[:, -1] = 0.0
    h[:, -1] = -scipy.special.logsumexp(h @ out.T, axis=1)
    counts = np.maximum(1, 1000 // np.arange(1, v + 1))
    return (
        {"out_embed": out.astype(np.float32)},
        h.astype(np.float32),
        rng.integers(0, v, e),
        counts,
    )


def test_gradient_moments_match_an_explicit_loop():
    params, h, labels, counts = _normalised_state(v=10, d=3, e=4)
    key, draws, k = jax.random.PRNGKey(1), 6, 2
    got = gradient_bias.gradient_bias(
        params, h, labels, counts, key=key, ks=(k, 3), draws=draws, losses=("nce",)
    )["nce"][k]
    sampling = gradient_bias.sampling
    table = sampling.build_alias_table(sampling.noise_probs(counts))
    log_q = sampling.noise_log_probs(counts)
    out, bias = params["out_embed"], np.zeros(10, np.float32)
    exact = np.asarray(gradient_bias.exact_gradient(h, out, bias, labels, use_bias=False))

    @jax.jit
    def one(key):  # the first k of the draw's max(ks) = 3 samples per example
        samples = sampling.draw(key, table, (4, 3))[:, :k]
        loss_of = gradient_bias._loss("nce", labels, samples, log_q, True)
        return gradient_bias._flat_grad(loss_of, h, out, bias, False)

    grads = np.asarray([one(x) for x in jax.random.split(key, draws)], np.float64)
    mean, norm2 = grads.mean(0), exact @ exact
    cosine = mean @ exact / np.sqrt((mean @ mean) * norm2)
    assert got.cosine == pytest.approx(cosine, rel=1e-5)
    assert got.rel_error == pytest.approx(np.linalg.norm(mean - exact) / np.sqrt(norm2), rel=1e-4)
    mse = np.mean(np.sum((grads - exact) ** 2, axis=1)) / norm2
    assert got.rel_mse == pytest.approx(mse, rel=1e-4)
    variance = np.sum(grads.var(0, ddof=1)) / norm2
    assert got.rel_variance == pytest.approx(variance, rel=1e-3)
    with pytest.raises(ValueError, match="losses must be among"):
        gradient_bias.gradient_bias(params, h, labels, counts, key=key, losses=("hs",))


@pytest.mark.slow
def test_nce_and_sampled_softmax_converge_with_k_and_neg_does_not():
    """At a self-normalised state (Z = 1). 64 draws: Monte-Carlo error in the mean ~0.03."""
    params, h, labels, counts = _normalised_state()
    got = gradient_bias.gradient_bias(
        params, h, labels, counts, key=jax.random.PRNGKey(0), ks=(1, 10, 100), draws=64
    )
    for name in ("nce", "sampled_softmax"):
        cos = [got[name][k].cosine for k in (1, 10, 100)]
        bias = [got[name][k].rel_bias for k in (1, 10, 100)]
        assert cos[0] < cos[1] - 0.05 < cos[2] - 0.1 and cos[2] > 0.98, (name, cos)
        assert bias[0] > bias[1] > bias[2] and bias[2] < 0.2, (name, bias)
    neg = got["neg"]
    assert all(neg[k].rel_bias > 0.5 for k in (1, 10, 100))  # measured 0.67, 0.60, 0.75
    assert neg[100].rel_bias > neg[10].rel_bias and neg[100].cosine < 0.9
