"""Tests for w2v_jax.model.sampling: the noise distribution, the alias table and the samplers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from w2v_jax.model import sampling

NUM_DRAWS = 1_000_000
P_THRESHOLD = 1e-4


def zipf_counts(num: int, zeros: tuple[int, ...] = (), seed: int = 0) -> np.ndarray:
    """Zipfian integer counts [V] in a shuffled id order, with the given ids set to zero."""
    rng = np.random.default_rng(seed)
    counts = np.floor(1e6 / np.arange(1, num + 1)).astype(np.int64)
    counts = rng.permutation(counts)
    counts[list(zeros)] = 0
    return counts


def naive_alias_probs(table: sampling.AliasTable) -> np.ndarray:
    """The distribution a table draws from, bin by bin, in float64."""
    prob = np.asarray(table.prob, np.float64)
    num = prob.shape[0]
    q = np.zeros(num)
    for i in range(num):
        q[i] += prob[i] / num
        q[int(table.alias[i])] += (1.0 - prob[i]) / num
    return q


def alias_probs(table: sampling.AliasTable) -> np.ndarray:
    """`naive_alias_probs` vectorised (for V = 1e6), float64 [V]."""
    prob = np.asarray(table.prob, dtype=np.float64)
    q = prob + np.bincount(table.alias, weights=1.0 - prob, minlength=prob.shape[0])
    return q / prob.shape[0]


def assert_matches_distribution(ids: np.ndarray, q: np.ndarray) -> None:
    """Chi-square goodness of fit, plus a per-bin binomial bound, on the drawn ids."""
    num_draws = ids.size
    observed = np.bincount(ids.ravel(), minlength=q.shape[0])
    assert observed.shape == q.shape, "an id fell outside [0, V)"
    support = q > 0
    assert observed[~support].sum() == 0, "an id with q = 0 was drawn"
    expected = num_draws * q[support]
    assert expected.min() >= 5, "test set-up: too few expected draws for chi-square"
    result = stats.chisquare(observed[support], expected)
    assert result.pvalue > P_THRESHOLD, result
    # Per bin: |n - Nq| <= z * sqrt(Nq(1-q)), z from a Bonferroni-corrected normal tail.
    z = stats.norm.isf(P_THRESHOLD / (2 * support.sum()))
    sigma = np.sqrt(expected * (1.0 - q[support]))
    worst = np.max(np.abs(observed[support] - expected) / sigma)
    assert worst <= z, f"a bin is {worst:.2f} sigma off (bound {z:.2f})"


# ---------------------------------------------------------------- noise distribution


@pytest.mark.parametrize("power", [0.0, 0.5, 0.75, 1.0, -0.5])
def test_noise_probs_matches_naive(power):
    counts = zipf_counts(200, zeros=(3, 17))
    positive = counts > 0
    weights = np.zeros(counts.shape)
    weights[positive] = counts[positive].astype(np.float64) ** power
    q = sampling.noise_probs(counts, power=power)
    np.testing.assert_allclose(q, weights / weights.sum(), rtol=1e-12, atol=0)
    assert q.dtype == np.float64
    assert np.all(q[~positive] == 0)


def test_noise_log_probs_float32_finite_for_positive_counts():
    counts = zipf_counts(100, zeros=(5,))
    log_q = sampling.noise_log_probs(counts)
    assert log_q.dtype == np.float32 and log_q.shape == (100,)
    positive = counts > 0
    assert np.all(np.isfinite(log_q[positive]))
    assert np.all(log_q[~positive] == -np.inf)
    np.testing.assert_allclose(
        np.exp(log_q.astype(np.float64)), sampling.noise_probs(counts), rtol=1e-6
    )


def test_noise_log_probs_is_stable_for_extreme_counts():
    counts = np.array([1e300, 1e250, 1.0, 1e-300])
    log_q = sampling.noise_log_probs(counts, power=2.0)  # counts**2 overflows float64
    assert np.all(np.isfinite(log_q))
    np.testing.assert_allclose(log_q[0], 0.0, atol=1e-6)
    np.testing.assert_allclose(log_q[1] - log_q[2], 2 * 250 * np.log(10.0), rtol=1e-6)


@pytest.mark.parametrize(
    ("counts", "power", "match"),
    [
        ([3, -1, 2], 0.75, "counts must be non-negative"),
        ([0, 0, 0], 0.75, "counts must have at least one positive"),
        ([[1, 2], [3, 4]], 0.75, "counts must have rank 1"),
        ([], 0.75, "counts must be non-empty"),
        ([1.0, np.nan], 0.75, "counts must be finite"),
        ([1, 2], np.nan, "power must be finite"),
        ([1, 2], np.inf, "power must be finite"),
    ],
)
def test_noise_log_probs_rejects_bad_input(counts, power, match):
    with pytest.raises(ValueError, match=match):
        sampling.noise_log_probs(counts, power=power)
    with pytest.raises(ValueError, match=match):
        sampling.noise_probs(counts, power=power)


# ---------------------------------------------------------------- alias table


@pytest.mark.parametrize("num", [1, 2, 7, 1000])
def test_alias_table_represents_q_exactly(num):
    zeros = (0, num // 2) if num > 2 else ()
    q = sampling.noise_probs(zipf_counts(num, zeros=zeros), power=0.75)
    table = sampling.build_alias_table(q)
    assert table.prob.dtype == np.float32 and table.prob.shape == (num,)
    assert table.alias.dtype == np.int32 and table.alias.shape == (num,)
    assert np.all((table.prob >= 0) & (table.prob <= 1))
    assert np.all((table.alias >= 0) & (table.alias < num))
    implied = naive_alias_probs(table)
    np.testing.assert_allclose(implied, q, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(alias_probs(table), implied, rtol=1e-12)
    # Zero-probability ids are never kept and never an alias: they cannot be drawn.
    for i in np.flatnonzero(q == 0):
        assert table.prob[i] == 0
        assert not np.any((table.alias == i) & (table.prob < 1))


def test_alias_table_at_a_million_words_implies_q_to_rtol_1e_5():
    """V = 1e6 Zipf counts (1e6 / rank, down to 1): the distribution the float32 table
    draws from, computed exactly from its bins (not by sampling), is q to rtol 1e-5 for
    every word, the rarest (q ~ 2.5e-7) and the zero-count ones (never drawn) included."""
    num = 1_000_000
    q = sampling.noise_probs(zipf_counts(num, zeros=(0, num // 2)), power=0.75)
    implied = alias_probs(sampling.build_alias_table(q))
    assert implied[0] == implied[num // 2] == 0.0
    np.testing.assert_allclose(implied, q, rtol=1e-5, atol=0)


def test_alias_table_normalises_weights_and_handles_uniform_and_point_mass():
    uniform = sampling.build_alias_table(np.full(5, 3.0))
    np.testing.assert_array_equal(uniform.prob, np.ones(5, np.float32))
    point = sampling.build_alias_table([0.0, 0.0, 2.5, 0.0])
    np.testing.assert_allclose(alias_probs(point), [0, 0, 1, 0], atol=1e-7)
    weights = np.array([4.0, 1.0, 3.0])
    np.testing.assert_allclose(
        alias_probs(sampling.build_alias_table(weights)),
        weights / weights.sum(),
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    ("probs", "match"),
    [
        (np.log([0.5, 0.5]), "probs must be non-negative"),
        ([0.5, np.inf], "probs must be finite"),
        ([[0.5, 0.5]], "probs must have rank 1"),
        ([], "probs must be non-empty"),
        ([0.0, 0.0], "probs must have at least one positive"),
    ],
)
def test_build_alias_table_rejects_bad_input(probs, match):
    with pytest.raises(ValueError, match=match):
        sampling.build_alias_table(probs)


# ---------------------------------------------------------------- samplers


@pytest.fixture(scope="module")
def zipf_q():
    return sampling.noise_probs(zipf_counts(500, zeros=(11, 250)), power=0.75)


def test_draw_matches_q(zipf_q):
    table = sampling.build_alias_table(zipf_q)
    draw = jax.jit(sampling.draw, static_argnums=2)
    ids = np.asarray(draw(jax.random.key(0), table, (1000, NUM_DRAWS // 1000)))
    assert ids.dtype == np.int32
    assert_matches_distribution(ids, zipf_q)


def test_draw_shapes_determinism_and_table_as_jit_argument():
    traces = []

    @jax.jit
    def step(key, table):
        traces.append(None)  # runs once per trace, not per call
        return sampling.draw(key, table, (4, 3)), sampling.draw(key, table, 5)

    key = jax.random.key(42)
    table_a = sampling.build_alias_table(sampling.noise_probs(zipf_counts(50)))
    table_b = sampling.build_alias_table(np.ones(50))
    ids_bk, ids_k = step(key, table_a)
    assert ids_bk.shape == (4, 3) and ids_bk.dtype == jnp.int32
    assert ids_k.shape == (5,) and ids_k.dtype == jnp.int32
    again_bk, _ = step(key, table_a)
    np.testing.assert_array_equal(ids_bk, again_bk)
    step(key, table_b)  # a new table of the same shape reuses the compiled step
    assert len(traces) == 1
    np.testing.assert_array_equal(sampling.draw(key, table_a, (4, 3)), ids_bk)  # eager


def test_draw_rejects_malformed_table():
    table = sampling.AliasTable(prob=np.ones(4, np.float32), alias=np.arange(3, dtype=np.int32))
    with pytest.raises(ValueError, match="table.prob and table.alias"):
        sampling.draw(jax.random.key(0), table, (2,))
