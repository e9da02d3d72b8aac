"""Tests for `w2v_jax.model.losses`: naive references, exact reductions, gradients, theory."""

import doctest
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import flatten_util
from jax import test_util as jtu

from w2v_jax.model import losses, output_layers
from w2v_jax.model.losses import terms

# ---------------------------------------------------------------------------------------
# Problems and naive float64 references.


class Problem(NamedTuple):
    inputs: np.ndarray  # [B, D] float32
    weights: np.ndarray  # [V, D] float32
    biases: np.ndarray  # [V] float32
    labels: np.ndarray  # [B] int32
    sampled_ids: np.ndarray  # [B, K] int32, column 0 an accidental hit
    log_q: np.ndarray  # [V] float32, non-uniform


def _problem(seed=0, batch=4, rows=9, dim=3, samples=5, scale=1.0) -> Problem:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, rows, size=batch).astype(np.int32)
    sampled_ids = rng.integers(0, rows, size=(batch, samples)).astype(np.int32)
    sampled_ids[:, 0] = labels  # an accidental hit in every row
    q = rng.uniform(0.2, 1.0, size=rows)
    return Problem(
        inputs=(scale * rng.normal(size=(batch, dim))).astype(np.float32),
        weights=(scale * rng.normal(size=(rows, dim))).astype(np.float32),
        biases=rng.normal(size=rows).astype(np.float32),
        labels=labels,
        sampled_ids=sampled_ids,
        log_q=np.log(q / q.sum()).astype(np.float32),
    )


def _tree(code_strings: list[str], node_of_prefix: dict[str, int]):
    """codes, points, mask [V, L] of a prefix-code tree; padding is garbage on purpose."""
    depth = max(map(len, code_strings))
    codes = np.ones((len(code_strings), depth), np.int32)
    points = np.full((len(code_strings), depth), -1, np.int32)
    mask = np.zeros((len(code_strings), depth), np.float32)
    for w, code in enumerate(code_strings):
        for level, bit in enumerate(code):
            codes[w, level] = int(bit)
            points[w, level] = node_of_prefix[code[:level]]
            mask[w, level] = 1.0
    return codes, points, mask


def _complete_tree(depth: int):
    """All 2**depth leaves; inner nodes heap-numbered (root 0, children 2n+1, 2n+2)."""
    prefixes = [format(i, f"0{n}b") if n else "" for n in range(depth) for i in range(2**n)]
    leaves = [format(w, f"0{depth}b") for w in range(2**depth)]
    return _tree(leaves, {prefix: i for i, prefix in enumerate(prefixes)})


TREES = {
    "complete8": _complete_tree(3),
    "huffman5": _tree(["00", "01", "10", "110", "111"], {"": 0, "0": 1, "1": 2, "11": 3}),
    "caterpillar5": _tree(["0", "10", "110", "1110", "1111"], {"": 0, "1": 1, "11": 2, "111": 3}),
}


class HSProblem(NamedTuple):
    inputs: np.ndarray  # [B, D]
    node_weights: np.ndarray  # [V - 1, D]
    codes: np.ndarray  # [B, L]
    points: np.ndarray  # [B, L], -1 on padding
    mask: np.ndarray  # [B, L]


def _hs_problem(seed=0, batch=6, dim=3, tree="huffman5", scale=1.0) -> HSProblem:
    rng = np.random.default_rng(seed)
    codes, points, mask = TREES[tree]
    words = rng.integers(0, codes.shape[0], size=batch)
    return HSProblem(
        inputs=(scale * rng.normal(size=(batch, dim))).astype(np.float32),
        node_weights=(scale * rng.normal(size=(codes.shape[0] - 1, dim))).astype(np.float32),
        codes=codes[words],
        points=points[words],
        mask=mask[words],
    )


def _log_sigmoid(x: float) -> float:
    return -np.logaddexp(0.0, -x)


def _logsumexp(xs: list[float]) -> float:
    top = max(xs)
    return top + math.log(sum(math.exp(x - top) for x in xs))


def _score(p: Problem, i: int, v: int) -> float:
    h, u = p.inputs[i].astype(np.float64), p.weights[v].astype(np.float64)
    return float(h @ u) + float(p.biases[v])


def _ref_softmax(p: Problem) -> np.ndarray:
    out = []
    for i, label in enumerate(p.labels):
        scores = [_score(p, i, v) for v in range(p.weights.shape[0])]
        out.append(_logsumexp(scores) - scores[label])
    return np.array(out)


def _ref_sampled_softmax(p: Problem, remove_accidental_hits: bool) -> np.ndarray:
    out = []
    for i, label in enumerate(p.labels):
        true_logit = _score(p, i, label) - float(p.log_q[label])
        logits = [true_logit]
        for n in p.sampled_ids[i]:
            if not (remove_accidental_hits and n == label):
                logits.append(_score(p, i, n) - float(p.log_q[n]))
        out.append(_logsumexp(logits) - true_logit)
    return np.array(out)


def _ref_nce(p: Problem) -> np.ndarray:
    out = []
    for i, label in enumerate(p.labels):
        log_k = math.log(p.sampled_ids.shape[1])
        loss = -_log_sigmoid(_score(p, i, label) - log_k - float(p.log_q[label]))
        for n in p.sampled_ids[i]:
            loss -= _log_sigmoid(-(_score(p, i, n) - log_k - float(p.log_q[n])))
        out.append(loss)
    return np.array(out)


def _ref_negative_sampling(p: Problem, remove_accidental_hits: bool) -> np.ndarray:
    out = []
    for i, label in enumerate(p.labels):
        loss = -_log_sigmoid(_score(p, i, label))
        for n in p.sampled_ids[i]:
            if not (remove_accidental_hits and n == label):  # word2vec C: `continue`
                loss -= _log_sigmoid(-_score(p, i, n))
        out.append(loss)
    return np.array(out)


def _ref_hierarchical_softmax(p: HSProblem) -> np.ndarray:
    out = []
    for i in range(p.inputs.shape[0]):
        loss = 0.0
        for code, point, m in zip(p.codes[i], p.points[i], p.mask[i], strict=True):
            if m:
                x = float(p.inputs[i].astype(np.float64) @ p.node_weights[point].astype(np.float64))
                loss -= _log_sigmoid((1.0 - 2.0 * float(code)) * x)
        out.append(loss)
    return np.array(out)


# Each loss as (its float arguments, a function of them) on a problem: the generic tests
# below (gradients, stability, registry) run over this table.


def _float_calls(p: Problem, hs: HSProblem) -> dict:
    x, w, b, lq = p.inputs, p.weights, p.biases, p.log_q
    y, ids = p.labels, p.sampled_ids
    # Differentiating in the mask must not turn padding on (its points are -1): the mask
    # is varied on the valid slots only.
    on = (hs.mask != 0).astype(np.float32)
    return {
        "softmax": ((x, w, b), lambda x, w, b: losses.softmax_loss(x, w, y, b)),
        "softmax_chunked": (
            (x, w, b),
            lambda x, w, b: losses.softmax_loss(x, w, y, b, chunk_size=4),
        ),
        "sampled_softmax": (
            (x, w, b, lq),
            lambda x, w, b, lq: losses.sampled_softmax_loss(x, w, y, ids, lq, b),
        ),
        "nce": ((x, w, b, lq), lambda x, w, b, lq: losses.nce_loss(x, w, y, ids, lq, b)),
        "neg": ((x, w, b), lambda x, w, b: losses.negative_sampling_loss(x, w, y, ids, b)),
        "hs": (
            (hs.inputs, hs.node_weights, hs.codes.astype(np.float32), hs.mask),
            lambda x, n, c, m: losses.hierarchical_softmax_loss(x, n, c, hs.points, m * on),
        ),
    }


CALLS = list(_float_calls(_problem(), _hs_problem()))

# ---------------------------------------------------------------------------------------
# Naive references, through jax.jit.


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_softmax_matches_reference(chunk_size):
    p = _problem()
    fn = jax.jit(functools.partial(losses.softmax_loss, chunk_size=chunk_size))
    got = fn(p.inputs, p.weights, p.labels, p.biases)
    assert got.shape == (4,) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, _ref_softmax(p), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("remove_accidental_hits", [True, False])
def test_sampled_softmax_matches_reference(remove_accidental_hits):
    p = _problem()
    fn = jax.jit(losses.sampled_softmax_loss, static_argnames="remove_accidental_hits")
    got = fn(
        p.inputs, p.weights, p.labels, p.sampled_ids, p.log_q, p.biases, remove_accidental_hits
    )
    want = _ref_sampled_softmax(p, remove_accidental_hits)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_nce_matches_reference():
    p = _problem()
    got = jax.jit(losses.nce_loss)(p.inputs, p.weights, p.labels, p.sampled_ids, p.log_q, p.biases)
    np.testing.assert_allclose(got, _ref_nce(p), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("remove_accidental_hits", [True, False])
def test_negative_sampling_matches_reference(remove_accidental_hits):
    p = _problem()
    fn = jax.jit(losses.negative_sampling_loss, static_argnames="remove_accidental_hits")
    got = fn(p.inputs, p.weights, p.labels, p.sampled_ids, p.biases, remove_accidental_hits)
    want = _ref_negative_sampling(p, remove_accidental_hits)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("codes_dtype, mask_dtype", [(np.int32, np.float32), (np.float32, bool)])
def test_hierarchical_softmax_matches_reference(codes_dtype, mask_dtype):
    p = _hs_problem()
    assert (p.points[p.mask == 0] == -1).any()  # out-of-range padding must be ignored
    got = jax.jit(losses.hierarchical_softmax_loss)(
        p.inputs, p.node_weights, p.codes.astype(codes_dtype), p.points, p.mask.astype(mask_dtype)
    )
    np.testing.assert_allclose(got, _ref_hierarchical_softmax(p), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------
# Exact reductions between losses.


def test_softmax_equals_optax():
    p = _problem(rows=11)
    logits = p.inputs @ p.weights.T + p.biases  # [B, V]
    want = optax.softmax_cross_entropy_with_integer_labels(logits, p.labels)
    got = losses.softmax_loss(p.inputs, p.weights, p.labels, p.biases)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_sampled_softmax_over_every_other_row_is_softmax():
    """Samples = every row but the label: the softmax of s - log q over all rows.

    So with uniform q (log q a constant c that shifts every logit alike) it is exactly the
    full softmax, and with any q it is the softmax with biases b - log q. Sampling every
    row including the label and keeping the hit adds the label's term twice:
    log(Z + e^{s_w}) - s_w = softmax + log(1 + p_w).
    """
    p = _problem()
    rows = p.weights.shape[0]
    others = np.array([[v for v in range(rows) if v != y] for y in p.labels], np.int32)
    uniform = np.full(rows, -math.log(rows), np.float32)
    softmax = losses.softmax_loss(p.inputs, p.weights, p.labels, p.biases)
    sampled = functools.partial(losses.sampled_softmax_loss, p.inputs, p.weights, p.labels)

    np.testing.assert_allclose(sampled(others, uniform, p.biases), softmax, rtol=1e-6)
    np.testing.assert_allclose(
        sampled(others, p.log_q, p.biases),
        losses.softmax_loss(p.inputs, p.weights, p.labels, p.biases - p.log_q),
        rtol=1e-6,
    )
    every = np.arange(rows, dtype=np.int32)
    np.testing.assert_allclose(sampled(every, uniform, p.biases), softmax, rtol=1e-6)
    kept = sampled(every, uniform, p.biases, remove_accidental_hits=False)
    np.testing.assert_allclose(kept, softmax + jnp.log1p(jnp.exp(-softmax)), rtol=1e-6)


def test_nce_with_uniform_q_and_k_equal_v_is_negative_sampling():
    """log(K q) = log(V / V) = 0: the correction vanishes (NCE keeps accidental hits)."""
    rows = 9
    p = _problem(rows=rows, samples=rows)
    uniform = np.full(rows, -math.log(rows), np.float32)
    nce = losses.nce_loss(p.inputs, p.weights, p.labels, p.sampled_ids, uniform, p.biases)
    neg = losses.negative_sampling_loss(
        p.inputs, p.weights, p.labels, p.sampled_ids, p.biases, remove_accidental_hits=False
    )
    np.testing.assert_allclose(nce, neg, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("tree", sorted(TREES))
def test_hierarchical_softmax_leaf_probabilities_sum_to_one(tree):
    codes, points, mask = TREES[tree]
    leaves, dim = codes.shape[0], 4
    rng = np.random.default_rng(1)
    node_weights = (2.0 * rng.normal(size=(leaves - 1, dim))).astype(np.float32)
    for h in rng.normal(size=(3, dim)).astype(np.float32):
        inputs = np.tile(h, (leaves, 1))  # every leaf for the same context
        loss = losses.hierarchical_softmax_loss(inputs, node_weights, codes, points, mask)
        np.testing.assert_allclose(jnp.sum(jnp.exp(-loss)), 1.0, rtol=1e-5)


@pytest.mark.parametrize("chunk_size", [1, 4, 5, 22, 23, 100])
def test_chunked_softmax_equals_unchunked(chunk_size):
    p = _problem(rows=23, batch=5)  # 23 is prime: most chunk sizes leave a padded block

    def total(chunk, x, w, b):
        return jnp.sum(losses.softmax_loss(x, w, p.labels, b, chunk_size=chunk))

    grad = jax.jit(jax.value_and_grad(total, argnums=(1, 2, 3)), static_argnums=0)
    xwb = (p.inputs, p.weights, p.biases)
    (want, want_grads), (got, got_grads) = grad(None, *xwb), grad(chunk_size, *xwb)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    for g, w in zip(got_grads, want_grads, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_chunked_softmax_never_holds_all_logits():
    """Compiled forward+backward scratch memory is far below one [B, V] logits array."""
    batch, rows, dim = 128, 20_000, 4
    inputs, weights = jnp.ones((batch, dim)), jnp.full((rows, dim), 0.01)
    labels = jnp.zeros((batch,), jnp.int32)

    def scratch_bytes(chunk_size):
        def loss(x, w):
            return jnp.sum(losses.softmax_loss(x, w, labels, chunk_size=chunk_size))

        stats = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(inputs, weights).compile()
        stats = stats.memory_analysis()
        if stats is None:
            pytest.skip("backend reports no memory analysis")
        return stats.temp_size_in_bytes

    logits_bytes = batch * rows * 4
    assert scratch_bytes(None) >= logits_bytes  # the dense path does hold them
    assert scratch_bytes(1000) < logits_bytes / 4


@pytest.mark.parametrize("name", ["sampled_softmax", "nce", "neg"])
def test_shared_samples_equal_tiled_samples(name):
    p = _problem()
    shared = p.sampled_ids[0]  # [K]
    tiled = np.tile(shared, (p.labels.shape[0], 1))  # [B, K]
    extra = (p.log_q,) if name != "neg" else ()

    def total(ids, x, w, b):
        return jnp.sum(output_layers.get(name).loss(x, w, p.labels, ids, *extra, b))

    grad = jax.value_and_grad(total, argnums=(1, 2, 3))
    xwb = (p.inputs, p.weights, p.biases)
    (got, got_grads), (want, want_grads) = grad(shared, *xwb), grad(tiled, *xwb)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    for g, w in zip(got_grads, want_grads, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["sampled_softmax", "nce", "neg", "hs"])
def test_gathered_rows_equal_full_table(name):
    """A trainer passes only the rows a batch touches, with ids remapped to local rows."""
    if name == "hs":
        p = _hs_problem(tree="complete8")
        out_ids = np.unique(p.points[p.mask != 0])
        local = np.where(p.mask != 0, np.searchsorted(out_ids, p.points), 0).astype(np.int32)
        full = losses.hierarchical_softmax_loss(p.inputs, p.node_weights, p.codes, p.points, p.mask)
        got = losses.hierarchical_softmax_loss(
            p.inputs, p.node_weights[out_ids], p.codes, local, p.mask
        )
        np.testing.assert_allclose(got, full, rtol=1e-6)
        return
    p = _problem(rows=30)
    out_ids = np.unique(np.concatenate([p.labels, p.sampled_ids.ravel()]))
    assert len(out_ids) < 30

    def local(ids):
        return np.searchsorted(out_ids, ids).astype(np.int32)

    fn = output_layers.get(name).loss
    full_q = (p.log_q,) if name != "neg" else ()
    local_q = (p.log_q[out_ids],) if name != "neg" else ()
    full = fn(p.inputs, p.weights, p.labels, p.sampled_ids, *full_q, p.biases)
    got = fn(
        p.inputs,
        p.weights[out_ids],
        local(p.labels),
        local(p.sampled_ids),
        *local_q,
        p.biases[out_ids],
    )
    np.testing.assert_allclose(got, full, rtol=1e-6)


# ---------------------------------------------------------------------------------------
# Gradients and stability.


@pytest.mark.parametrize("name", CALLS)
def test_gradients_match_finite_differences(name):
    with jax.enable_x64(True):
        args, fn = _float_calls(_problem(), _hs_problem())[name]
        args = [jnp.asarray(a, jnp.float64) for a in args]
        jtu.check_grads(fn, args, order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", CALLS)
def test_huge_logits_give_finite_losses_and_gradients(name):
    p, hs = _problem(scale=60.0), _hs_problem(scale=60.0)  # |scores| up to about 1e4
    scores = p.inputs @ p.weights.T
    assert np.abs(scores).max() > 5e3 and np.abs(hs.inputs @ hs.node_weights.T).max() > 5e3
    args, fn = _float_calls(p, hs)[name]
    argnums = tuple(range(len(args)))
    loss, grads = jax.value_and_grad(lambda *a: jnp.sum(fn(*a)), argnums=argnums)(*args)
    per_example = fn(*args)
    assert np.isfinite(per_example).all() and (per_example >= 0).all()
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads)


# ---------------------------------------------------------------------------------------
# The theory: NCE's expected gradient tends to the softmax gradient, negative sampling's
# does not.
#
# In score space, for a label w and samples n_1..n_K ~ q (Mnih & Teh 2012):
#   E ∂ℓ_NCE/∂s = -(1 - σ(Δ_w)) e_w + Σ_v K q_v σ(Δ_v) e_v,   σ(Δ_v) = p_v / (p_v + K q_v)
# which tends to -e_w + p = ∂ℓ_softmax/∂s as K → ∞ when the model is normalised
# (p_v = exp s_v). Negative sampling's
#   E ∂ℓ_neg/∂s = -(1 - σ(s_w)) e_w + K Σ_v q_v σ(s_v) e_v
# grows along q ⊙ σ(s) instead. The parameter gradient is the pullback of these through
# s = W h + b, so the same holds for (h, W, b).
#
# Labels come from the model's own p, as the task asks; but averaged over such labels
# every one of these expectations (softmax and NCE alike) is zero, since p is their fixed
# point. So the comparison is per label: the vector stacks each label's gradient.

_V, _D, _LABELS, _GROUPS = 30, 5, 16, 16  # rows, dim, labels drawn from p, groups of draws
_DRAWS_PER_K = 2**18  # sample ids drawn per K: fewer draws as K grows, whose noise is lower


def _theory_model():
    """A normalised model (h, W, b), a non-uniform noise q and labels drawn from p."""
    rng = np.random.default_rng(0)
    h = rng.normal(size=_D)
    w = 0.5 * rng.normal(size=(_V, _D))
    b_raw = 0.5 * rng.normal(size=_V)
    scores = w @ h + b_raw
    b = b_raw - (scores.max() + np.log(np.sum(np.exp(scores - scores.max()))))
    p = np.exp(w @ h + b)  # Σ_v p_v = 1: the scores are log-probabilities
    zipf = (1.0 / np.arange(1, _V + 1)) ** 0.75
    q = rng.permutation(zipf / zipf.sum())  # non-uniform, not proportional to p
    labels = rng.choice(_V, size=_LABELS, p=p / p.sum()).astype(np.int32)
    params = tuple(jnp.asarray(a, jnp.float32) for a in (h, w, b))
    return params, jnp.asarray(q, jnp.float32), jnp.asarray(labels)


def _expected_gradient(params, q, label, num_samples, name):
    """The exact E over noise of the loss's gradient, from the formulas above."""
    h, w, b = params
    scores = w @ h + b  # [V]
    logits = scores - jnp.log(num_samples * q) if name == "nce" else scores
    e_w = jax.nn.one_hot(label, _V)
    d_scores = num_samples * q * jax.nn.sigmoid(logits) - e_w * jax.nn.sigmoid(-logits)
    _, pullback = jax.vjp(lambda p: p[1] @ p[0] + p[2], params)
    return flatten_util.ravel_pytree(pullback(d_scores))[0]


@functools.partial(jax.jit, static_argnames=("per_group", "num_samples"))
def _monte_carlo_gradients(key, params, q, labels, *, per_group, num_samples):
    """Per loss, mean and standard error over noise draws of each label's gradient.

    Returns ``{"nce": (mean, stderr), "neg": (mean, stderr)}``, each ``[M * P]``: the
    ``R = G * per_group`` draws of each label are split into ``G`` groups whose means give
    the standard error (batch means). Both losses see the same draws.
    """
    # Inverse-CDF sampling from q: [M, G, R/G, K] ids.
    uniform = jax.random.uniform(key, (_LABELS, _GROUPS, per_group, num_samples))
    ids = jnp.minimum(jnp.searchsorted(jnp.cumsum(q), uniform), _V - 1).astype(jnp.int32)
    per_loss = {
        "nce": lambda x, w, y, n, b: losses.nce_loss(x, w, y, n, jnp.log(q), b),
        # `_expected_gradient`'s neg keeps the hits (K independent draws from q).
        "neg": functools.partial(losses.negative_sampling_loss, remove_accidental_hits=False),
    }
    out = {}
    for name, loss_fn in per_loss.items():

        def group_gradient(label, group_ids, loss_fn=loss_fn):  # [R/G, K] -> [P]
            def mean_loss(params):
                h, w, b = params
                inputs = jnp.broadcast_to(h, (per_group, _D))
                group_labels = jnp.full((per_group,), label)
                return jnp.mean(loss_fn(inputs, w, group_labels, group_ids, b))

            return flatten_util.ravel_pytree(jax.grad(mean_loss)(params))[0]

        grads = jax.vmap(jax.vmap(group_gradient, in_axes=(None, 0)))(labels, ids)  # [M, G, P]
        stderr = jnp.std(grads, axis=1, ddof=1) / math.sqrt(_GROUPS)
        out[name] = (jnp.mean(grads, axis=1).ravel(), stderr.ravel())
    return out


def _cosine_and_margin(estimate, stderr, target):
    """Cosine to ``target`` and a bound on its Monte-Carlo error from the standard errors.

    The delta method gives the cosine's standard deviation σ; noise orthogonal to the
    estimate lowers the cosine by about ε²/2 (ε = ‖stderr‖ / ‖estimate‖). Margin: 4σ + ε².
    """
    unit, target = estimate / jnp.linalg.norm(estimate), target / jnp.linalg.norm(target)
    cosine = float(unit @ target)
    sigma = float(jnp.linalg.norm(stderr * (target - cosine * unit)) / jnp.linalg.norm(estimate))
    eps = float(jnp.linalg.norm(stderr) / jnp.linalg.norm(estimate))
    return cosine, 4 * sigma + eps**2


@pytest.mark.slow
def test_nce_gradient_tends_to_softmax_gradient_but_negative_sampling_does_not():
    params, q, labels = _theory_model()

    def softmax_gradient(label):
        def loss(p):
            return losses.softmax_loss(p[0][None], p[1], label[None], p[2])[0]

        return flatten_util.ravel_pytree(jax.grad(loss)(params))[0]

    target = jax.vmap(softmax_gradient)(labels).ravel()  # [M * P], one block per label
    cosines = {"nce": [], "neg": []}
    for i, num_samples in enumerate((1, 8, 64, 512)):
        per_group = max(_DRAWS_PER_K // (_LABELS * _GROUPS * num_samples), 2)
        estimates = _monte_carlo_gradients(
            jax.random.fold_in(jax.random.key(1), i), params, q, labels,
            per_group=per_group, num_samples=num_samples,
        )  # fmt: skip
        for name, (mean, stderr) in estimates.items():
            exact = functools.partial(_expected_gradient, params, q)
            exact = jax.vmap(exact, in_axes=(0, None, None))(labels, num_samples, name).ravel()
            # The estimate sits within its standard error of the exact expectation.
            assert jnp.linalg.norm(mean - exact) < 2 * jnp.linalg.norm(stderr), (name, num_samples)
            cosines[name].append(_cosine_and_margin(mean, stderr, target))

    nce, (neg_high, neg_margin) = cosines["nce"], cosines["neg"][-1]
    for (before, m0), (after, m1) in zip(nce, nce[1:], strict=False):
        assert after + m1 > before - m0, nce  # NCE's cosine never falls ...
        if before < 0.999:
            assert after - m1 > before + m0, nce  # ... and rises until it has converged
    assert nce[-1][0] - nce[-1][1] > 0.99 > nce[0][0], nce
    assert neg_high + neg_margin < min(0.9, nce[-1][0] - nce[-1][1] - 0.1), cosines["neg"]


# ---------------------------------------------------------------------------------------
# Argument checks, registry, docs.


def _valid_kwargs(name: str) -> dict:
    p, hs = _problem(), _hs_problem()
    if name == "hs":
        return dict(hs._asdict())
    kwargs = dict(inputs=p.inputs, weights=p.weights, labels=p.labels, biases=p.biases)
    if name != "softmax":
        kwargs["sampled_ids"] = p.sampled_ids
    if name in ("sampled_softmax", "nce"):
        kwargs["log_q"] = p.log_q
    return kwargs


F32, I32 = np.float32, np.int32
BAD_INPUTS = [  # (loss, changed arguments, error, message); B=4, D=3, V=9, K=5, HS N=4
    ("softmax", dict(inputs=np.ones((4, 3), I32)), TypeError, "softmax_loss: inputs must be a float array of shape \\[B, D\\]"),  # noqa: E501
    ("softmax", dict(inputs=np.ones(3, F32)), ValueError, "inputs must have shape \\[B, D\\]"),
    ("softmax", dict(weights=np.ones((9, 4), F32)), ValueError, "weights must have 3 \\(D"),
    ("softmax", dict(labels=np.zeros(4, F32)), TypeError, "labels must be an integer array"),
    ("softmax", dict(labels=np.zeros(5, I32)), ValueError, "labels must have 4 \\(B"),
    ("softmax", dict(labels=np.array([0, 1, 9, 2], I32)), ValueError, "labels must lie in \\[0, 9\\)"),  # noqa: E501
    ("softmax", dict(labels=np.array([0, -1, 2, 2], I32)), ValueError, "labels must lie in"),
    ("softmax", dict(biases=np.zeros(8, F32)), ValueError, "biases must have 9 \\(V"),
    ("softmax", dict(biases=np.zeros(9, I32)), TypeError, "biases must be a float array"),
    ("softmax", dict(chunk_size=0), ValueError, "chunk_size must be None or a positive int"),
    ("sampled_softmax", dict(sampled_ids=np.zeros((4, 5), F32)), TypeError, "sampled_ids must be an integer array"),  # noqa: E501
    ("sampled_softmax", dict(sampled_ids=np.zeros((4, 5, 1), I32)), ValueError, "sampled_ids must have shape \\[B, K\\] or \\[K\\]"),  # noqa: E501
    ("sampled_softmax", dict(sampled_ids=np.zeros((5, 5), I32)), ValueError, "sampled_ids must have 4 \\(B"),  # noqa: E501
    ("sampled_softmax", dict(log_q=np.zeros(8, F32)), ValueError, "log_q must have 9 \\(V"),
    ("sampled_softmax", dict(log_q=np.zeros(9, I32)), TypeError, "log_q must be a float array"),
    ("nce", dict(sampled_ids=np.zeros((4, 0), I32)), ValueError, "nce_loss: sampled_ids must hold at least one"),  # noqa: E501
    ("nce", dict(sampled_ids=np.full((4, 5), 9, I32)), ValueError, "sampled_ids must lie in \\[0, 9\\)"),  # noqa: E501
    ("neg", dict(sampled_ids=np.array([0, 12], I32)), ValueError, "negative_sampling_loss: sampled_ids must lie in"),  # noqa: E501
    ("neg", dict(inputs=np.ones((4, 3, 1), F32)), ValueError, "inputs must have shape \\[B, D\\]"),
    ("hs", dict(inputs=np.ones((6, 3), I32)), TypeError, "hierarchical_softmax_loss: inputs must be a float"),  # noqa: E501
    ("hs", dict(node_weights=np.ones((4, 2), F32)), ValueError, "node_weights must have 3 \\(D"),
    ("hs", dict(points=np.zeros((6, 3), F32)), TypeError, "points must be an integer array"),
    ("hs", dict(points=np.zeros((5, 3), I32)), ValueError, "points must have 6 \\(B"),
    ("hs", dict(codes=np.zeros((6, 2), I32)), ValueError, "codes must have shape \\[B, L\\]"),
    ("hs", dict(mask=np.ones((6, 1), F32)), ValueError, "mask must have shape \\[B, L\\]"),
    ("hs", dict(points=np.full((6, 3), 4, I32), mask=np.ones((6, 3), F32)), ValueError, "points must lie in \\[0, 4\\)"),  # noqa: E501
]  # fmt: skip


@pytest.mark.parametrize("name, change, error, match", BAD_INPUTS)
def test_bad_input_raises_naming_the_argument(name, change, error, match):
    kwargs = {**_valid_kwargs(name), **change}
    with pytest.raises(error, match=match):
        output_layers.get(name).loss(**kwargs)


def test_ids_under_jit_are_not_checked():
    """Traced ids cannot be inspected; jit must still trace (the gather clamps)."""
    p = _problem()
    bad = np.full(4, 50, np.int32)
    assert np.isfinite(jax.jit(losses.softmax_loss)(p.inputs, p.weights, bad)).all()


def test_registry():
    assert {name: layer.loss for name, layer in output_layers.BY_NAME.items()} == {
        "softmax": losses.softmax_loss,
        "softmax_penalty": losses.softmax_penalty_loss,
        "sampled_softmax": losses.sampled_softmax_loss,
        "nce": losses.nce_loss,
        "neg": losses.negative_sampling_loss,
        "hs": losses.hierarchical_softmax_loss,
    }
    assert output_layers.NAMES == (
        "softmax", "softmax_penalty", "sampled_softmax", "nce", "neg", "hs"
    )  # fmt: skip
    assert output_layers.SAMPLED == ("sampled_softmax", "nce", "neg")
    hs = output_layers.get("hs")
    assert (hs.table, hs.tree, hs.sampled, hs.biases) == ("node_embed", True, False, False)
    assert {output_layers.get(n).table for n in output_layers.SAMPLED} == {"out_embed"}
    assert output_layers.get(hs) is hs
    with pytest.raises(ValueError, match="unknown output layer 'glove'; use one of"):
        output_layers.get("glove")


def test_negative_sampling_is_nce_without_the_log_kq_correction():
    """The registry states the thesis: the same sigmoid core, NCE with log(K q) removed."""
    neg, nce = output_layers.get("neg"), output_layers.get("nce")
    assert neg.binary and nce.binary and neg.correction is None
    assert nce.correction is terms.log_kq_correction
    logits, log_q = jnp.array([0.3, -1.2]), jnp.log(jnp.array([0.1, 0.4]))
    want = logits - jnp.log(5 * jnp.exp(log_q))
    np.testing.assert_allclose(nce.correction(logits, log_q, 5), want, rtol=1e-6)


def test_logits_core_matches_the_naive_formulas():
    rng = np.random.default_rng(0)
    t, n = rng.normal(size=(3,)), rng.normal(size=(3, 4))
    log_sig = lambda x: -np.logaddexp(0.0, -x)  # noqa: E731
    true_term, noise_term = terms.sigmoid_terms(jnp.asarray(t), jnp.asarray(n))
    np.testing.assert_allclose(true_term, -log_sig(t), rtol=1e-6)
    np.testing.assert_allclose(noise_term, -log_sig(-n).sum(-1), rtol=1e-6)
    hits = np.array([[True, False, False, False]] * 3)
    got = terms.sampled_softmax_terms(jnp.asarray(t), jnp.asarray(n), jnp.asarray(hits))
    want = np.log(np.exp(t) + np.where(hits, 0.0, np.exp(n)).sum(-1)) - t
    np.testing.assert_allclose(got, want, rtol=1e-6)
    codes, mask = np.array([[0.0, 1.0, 1.0]]), np.array([[1.0, 1.0, 0.0]])
    x = rng.normal(size=(1, 3))
    want = -(mask * log_sig((1 - 2 * codes) * x)).sum(-1)
    np.testing.assert_allclose(terms.tree_terms(x, codes, mask), want, rtol=1e-6)


def test_docstring_examples():
    results = doctest.testmod(losses)
    assert results.attempted >= 5 and results.failed == 0
