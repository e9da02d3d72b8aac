"""Tests for the synthetic Markov-chain corpus and its exact ground truth.

Statistical checks compare empirical distributions with the truth in total variation (TV).
For n i.i.d. draws from p the expected TV is about sum_i sqrt(2 p_i (1 - p_i) / (pi n)) / 2;
tokens of a Markov chain and pairs of overlapping windows are correlated, so the tests
allow twice that (observed: 0.9-1.3 times) and check that a plausible wrong truth (the
other window rule) is rejected by the same tolerance.
"""

import dataclasses

import numpy as np
import pytest

from w2v_jax.data import synthetic

SMALL = synthetic.SyntheticSpec(vocab_size=40, rank=4, num_tokens=1_000_000, seed=3)


def _tv(p, q):
    return 0.5 * np.abs(p - q).sum()


def _tolerance(p, n):
    """Twice the expected TV between p and the frequencies of n i.i.d. draws from p."""
    return 2 * 0.5 * np.sqrt(2 * p * (1 - p) / (np.pi * n)).sum()


def _pair_counts(ids, offsets, vocab_size, window, *, dynamic, left_only, seed=0):
    """Brute-force counts [U, U] of (centre, context) pairs within sentences.

    With ``dynamic``, each centre draws b ~ Uniform{1..W} and keeps distances d <= b, as
    the trainer does; otherwise every distance 1..W is kept.
    """
    n = len(ids)
    sentence = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))  # [N]
    rng = np.random.default_rng(seed)
    reach = rng.integers(1, window + 1, n) if dynamic else np.full(n, window)  # [N]
    counts = np.zeros(vocab_size * vocab_size, np.int64)
    centre = np.arange(n)
    for d in range(1, window + 1):
        for sign in (-1,) if left_only else (-1, 1):
            other = centre + sign * d
            ok = (other >= 0) & (other < n)
            t, o = centre[ok], other[ok]
            ok = (sentence[t] == sentence[o]) & (d <= reach[t])
            t, o = t[ok], o[ok]
            pair = ids[t].astype(np.int64) * vocab_size + ids[o]
            counts += np.bincount(pair, minlength=vocab_size * vocab_size)
    return counts.reshape(vocab_size, vocab_size)


@pytest.fixture(scope="module")
def small():
    return synthetic.make_synthetic(SMALL)


def test_reproducible_from_seed():
    spec = synthetic.SyntheticSpec(vocab_size=50, rank=3, num_tokens=20_000, seed=7)
    (c1, t1), (c2, t2) = synthetic.make_synthetic(spec), synthetic.make_synthetic(spec)
    np.testing.assert_array_equal(c1.ids, c2.ids)
    np.testing.assert_array_equal(c1.offsets, c2.offsets)
    assert c1.vocab == c2.vocab
    np.testing.assert_array_equal(t1.chain.transition, t2.chain.transition)
    np.testing.assert_array_equal(t1.vocab_to_chain, t2.vocab_to_chain)
    other, _ = synthetic.make_synthetic(dataclasses.replace(spec, seed=8))
    assert not np.array_equal(other.ids, c1.ids)
    # The chain depends on the seed and shape, not on the corpus length.
    longer = synthetic.make_chain(dataclasses.replace(spec, num_tokens=9))
    np.testing.assert_array_equal(longer.transition, t1.chain.transition)


@pytest.mark.parametrize("spec", [SMALL, synthetic.SyntheticSpec()], ids=["small", "default"])
def test_transition_rows_sum_to_one_and_pi_is_stationary(spec):
    chain = synthetic.make_chain(spec)
    v = spec.vocab_size
    assert chain.transition.shape == (v, v) and chain.stationary.shape == (v,)
    assert chain.transition.dtype == np.float64
    assert np.all(chain.transition > 0)
    np.testing.assert_allclose(chain.transition.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.all(chain.stationary > 0)
    np.testing.assert_allclose(chain.stationary.sum(), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(chain.stationary @ chain.transition, chain.stationary, atol=1e-14)


def test_scale_zero_is_iid_zipf():
    spec = synthetic.SyntheticSpec(vocab_size=30, rank=2, num_tokens=10, scale=0.0)
    chain = synthetic.make_chain(spec)
    zipf = 1.0 / np.arange(1, 31)
    zipf /= zipf.sum()
    np.testing.assert_allclose(chain.stationary, zipf, rtol=1e-12)
    np.testing.assert_allclose(chain.transition, np.tile(zipf, (30, 1)), rtol=1e-12)
    np.testing.assert_allclose(
        synthetic.pmi_from_joint(synthetic.pair_joint(chain, 3)), 0.0, atol=1e-12
    )


def test_corpus_layout(small):
    corpus, truth = small
    n, length = SMALL.num_tokens, SMALL.sentence_length
    assert corpus.ids.dtype == np.int32 and corpus.ids.shape == (n,)
    assert corpus.offsets.dtype == np.int64
    np.testing.assert_array_equal(corpus.offsets, np.arange(0, n + 1, length))
    ragged = synthetic.SyntheticSpec(vocab_size=10, rank=2, num_tokens=2_500, sentence_length=1000)
    ragged_corpus, _ = synthetic.make_synthetic(ragged)
    np.testing.assert_array_equal(ragged_corpus.offsets, [0, 1000, 2000, 2500])
    assert corpus.ids.min() >= 0 and corpus.ids.max() < len(corpus.vocab.words)


def test_vocab_order_and_permutation(small):
    corpus, truth = small
    vocab = corpus.vocab
    counts = np.bincount(corpus.ids, minlength=len(vocab.words))
    np.testing.assert_array_equal(counts, vocab.counts)
    order = sorted(range(len(vocab.words)), key=lambda i: (-counts[i], vocab.words[i]))
    assert order == list(range(len(vocab.words)))
    # The permutation: vocab id i is chain word vocab_to_chain[i], named after it.
    names = synthetic.word_names(SMALL.vocab_size)
    assert [names[c] for c in truth.vocab_to_chain] == list(vocab.words)
    np.testing.assert_array_equal(truth.chain_to_vocab[truth.vocab_to_chain], np.arange(40))
    assert sorted(truth.vocab_to_chain.tolist()) == list(range(40))
    # Truth in vocab order is the chain-order truth permuted.
    perm = truth.vocab_to_chain
    np.testing.assert_allclose(truth.unigram(), truth.chain.stationary[perm], rtol=1e-12)
    np.testing.assert_allclose(
        truth.next_word_conditional(), truth.chain.transition[np.ix_(perm, perm)], rtol=1e-10
    )
    chain_pmi = synthetic.pmi_from_joint(synthetic.pair_joint(truth.chain, 3))
    np.testing.assert_allclose(truth.pmi(3), chain_pmi[np.ix_(perm, perm)], atol=1e-10)


def test_missing_words_are_dropped_and_truth_renormalised():
    spec = synthetic.SyntheticSpec(vocab_size=300, rank=4, num_tokens=500, zipf_exponent=1.5)
    corpus, truth = synthetic.make_synthetic(spec)
    u = len(corpus.vocab.words)
    assert u < 300  # Some words never occurred.
    occurring = np.unique(truth.vocab_to_chain[corpus.ids])  # Chain ids seen in the corpus.
    np.testing.assert_array_equal(np.sort(truth.vocab_to_chain), occurring)
    np.testing.assert_array_equal(np.flatnonzero(truth.chain_to_vocab >= 0), occurring)
    assert truth.unigram().shape == (u,)
    np.testing.assert_allclose(truth.unigram().sum(), 1.0)
    for conditional in (truth.next_word_conditional(), truth.skipgram_conditional(2)):
        assert conditional.shape == (u, u)
        np.testing.assert_allclose(conditional.sum(axis=1), 1.0)
    np.testing.assert_allclose(truth.pair_joint(2).sum(), 1.0)


def test_empirical_unigram_matches_pi(small):
    corpus, truth = small
    pi = truth.unigram()
    freq = np.bincount(corpus.ids, minlength=len(pi)) / len(corpus.ids)
    assert _tv(freq, pi) < _tolerance(pi, len(corpus.ids))


def test_empirical_bigrams_match_pi_times_p(small):
    corpus, truth = small
    u = len(truth.unigram())
    counts = _pair_counts(corpus.ids, corpus.offsets, u, 1, dynamic=False, left_only=True)
    bigram = counts.T / counts.sum()  # [previous, next]
    joint = truth.unigram()[:, None] * truth.next_word_conditional()
    tol = _tolerance(joint, counts.sum())
    assert _tv(bigram, joint) < tol
    assert _tv(bigram, np.outer(truth.unigram(), truth.unigram())) > 10 * tol


@pytest.mark.parametrize(
    "window,dynamic,left_only", [(3, False, False), (3, True, False), (4, False, True)]
)
def test_empirical_skipgram_pairs_match_truth(small, window, dynamic, left_only):
    corpus, truth = small
    u = len(truth.unigram())
    counts = _pair_counts(
        corpus.ids, corpus.offsets, u, window, dynamic=dynamic, left_only=left_only
    )
    n = counts.sum()
    joint = truth.pair_joint(window, dynamic=dynamic, left_only=left_only)
    tol = _tolerance(joint, n)
    assert _tv(counts / n, joint) < tol
    wrong = truth.pair_joint(window, dynamic=not dynamic, left_only=left_only)
    assert _tv(counts / n, wrong) > 3 * tol
    # Conditionals of the frequent centres (skipgram_conditional is the row-normalised joint).
    conditional = truth.skipgram_conditional(window, dynamic=dynamic, left_only=left_only)
    # A single row has few cells, so its TV varies more: allow three times the i.i.d. TV.
    for w in range(3):
        row = counts[w] / counts[w].sum()
        assert _tv(row, conditional[w]) < 1.5 * _tolerance(conditional[w], counts[w].sum())


def test_window_one_is_forward_and_backward_step():
    chain = synthetic.make_chain(SMALL)
    backward = synthetic.reverse_transition(chain)
    np.testing.assert_allclose(backward.sum(axis=1), 1.0, atol=1e-12)
    expected = 0.5 * (chain.transition + backward)
    for dynamic in (True, False):
        got = synthetic.skipgram_conditional(chain, 1, dynamic=dynamic)
        np.testing.assert_allclose(got, expected, rtol=1e-12)
    left = synthetic.skipgram_conditional(chain, 1, left_only=True)
    np.testing.assert_allclose(left, backward, rtol=1e-12)
    np.testing.assert_allclose(synthetic.window_weights(4), [1.0, 0.75, 0.5, 0.25])
    np.testing.assert_allclose(synthetic.window_weights(4, dynamic=False), 1.0)


@pytest.mark.parametrize("dynamic", [True, False])
def test_two_sided_joint_and_pmi_are_symmetric(dynamic):
    chain = synthetic.make_chain(SMALL)
    joint = synthetic.pair_joint(chain, 5, dynamic=dynamic)
    np.testing.assert_allclose(joint, joint.T, rtol=1e-10, atol=0)
    np.testing.assert_allclose(joint.sum(axis=0), chain.stationary, rtol=1e-10)
    np.testing.assert_allclose(joint.sum(axis=1), chain.stationary, rtol=1e-10)
    pmi = synthetic.pmi_from_joint(synthetic.pair_joint(chain, 5, dynamic=dynamic))
    np.testing.assert_allclose(pmi, pmi.T, atol=1e-10)
    left = synthetic.pmi_from_joint(synthetic.pair_joint(chain, 5, dynamic=dynamic, left_only=True))
    assert np.abs(left - left.T).max() > 0.1  # Direction matters with left-only windows.


def test_pmi_matches_empirical_pmi_on_frequent_pairs(small):
    corpus, truth = small
    u = len(truth.unigram())
    counts = _pair_counts(corpus.ids, corpus.offsets, u, 2, dynamic=False, left_only=False)
    n = counts.sum()
    empirical = np.log(counts * n / np.outer(counts.sum(axis=1), counts.sum(axis=0)))
    frequent = counts >= 2_000
    assert frequent.sum() > 100
    # The standard error of a log count is about 1/sqrt(count) (observed rms 0.9 of it);
    # the largest of these few hundred errors stays under 4.5 standard errors, allow 6.
    bound = 6 / np.sqrt(counts[frequent])
    error = np.abs(empirical - truth.pmi(2, dynamic=False))[frequent]
    assert np.all(error < bound)
    wrong = np.abs(empirical - truth.pmi(2, dynamic=True))[frequent]
    assert np.mean(wrong > bound) > 0.3


def test_conditional_entropy_of_bigrams_is_entropy_rate():
    chain = synthetic.make_chain(SMALL)
    joint = chain.stationary[:, None] * chain.transition
    rate = -(joint * np.log(chain.transition)).sum()
    assert synthetic.conditional_entropy(joint) == pytest.approx(rate, rel=1e-12)
    unigram = -(chain.stationary * np.log(chain.stationary)).sum()
    assert rate < unigram


def test_for_vocab_rejects_unknown_words(small):
    corpus, truth = small
    sub = type(corpus.vocab).from_counts({"w0001": 5, "w0000": 9, "w0039": 1}, min_count=1)
    restricted = truth.for_vocab(sub)
    np.testing.assert_array_equal(restricted.vocab_to_chain, [0, 1, 39])
    with pytest.raises(ValueError, match="not in the chain"):
        truth.for_vocab(type(corpus.vocab).from_counts({"the": 3}, min_count=1))


@pytest.mark.parametrize(
    "field,value",
    [
        ("vocab_size", 1),
        ("rank", 0),
        ("rank", 41),
        ("num_tokens", 0),
        ("num_tokens", 1e6),
        ("zipf_exponent", -0.5),
        ("zipf_exponent", float("nan")),
        ("scale", -1.0),
        ("seed", -1),
        ("sentence_length", 1),
    ],
)
def test_bad_spec_raises_naming_the_field(field, value):
    kwargs = {"vocab_size": 40, "rank": 4, field: value}
    with pytest.raises(ValueError, match=f"SyntheticSpec.{field} "):
        synthetic.SyntheticSpec(**kwargs)
