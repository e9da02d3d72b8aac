r"""The six output layers as pure per-example losses: word2vec's five and a penalised softmax.

Every loss is written for one example and batched with `jax.vmap`; it takes arrays and
returns the per-example losses ``[B]`` (the caller reduces). Nothing here draws random
numbers or reads a config: noise samples, their log-probabilities and Huffman paths come
in as arguments, so every loss is deterministic and jittable.

The output ``weights`` need not be the whole vocabulary table: a trainer may pass only the
rows a batch touches with ``labels``/``sampled_ids``/``points`` remapped to local row
indices (and ``biases``/``log_q`` gathered the same way). ``V`` below is the number of rows
given, not the vocabulary size. Every lookup by an id reads zeros at an id outside the rows
(``mode="fill"``; its gradient is dropped), so an example whose weight is 0 may carry a
padding id (V, `input_pipeline.Batch`) and still contributes exactly 0.

Shape letters:
  B batch (examples), D embedding dim, V output rows, K noise samples per example,
  L Huffman code length (tree depth), N inner-node rows.

The score of output row ``w`` for input ``h`` is :math:`s(w) = h \cdot u_w + b_w`, with
``u = weights`` and ``b = biases`` (zero when ``None``). The arguments are checked at trace
time by `losses.checks`; the maths of every loss is a composition of the
logits-level core in `losses.terms`, which the fused kernels of `step.fused` share.
"""

import jax
import jax.numpy as jnp
import numpy as np

from w2v_jax.model.losses import checks, terms

# ---------------------------------------------------------------------------------------
# Per-example pieces.


def _scores(h: jax.Array, weights: jax.Array, biases: jax.Array, ids: jax.Array) -> jax.Array:
    """s(ids) = weights[ids] · h + biases[ids]; ``ids`` [] or [K] -> [] or [K]; 0 at an
    id outside the rows."""
    return take(weights, ids) @ h + take(biases, ids)


def take(table, ids) -> jax.Array:
    """``table[ids]`` reading zeros at an id outside ``[0, len(table))`` (the padding ids V
    and V - 1). ``table``: a NumPy or JAX array, or a view whose own ``view[ids]`` reads
    zeros out of range (a vocabulary-sharded table, `step.exchange.ShardedRows`). Every
    gather by batch ids goes through here: plain ``array[ids]`` clamps an out-of-range id
    to the last row."""
    if isinstance(table, np.ndarray):
        table = jnp.asarray(table)
    if isinstance(table, jax.Array):
        return table.at[ids].get(mode="fill", fill_value=0)
    return table[ids]


def _softmax_one(h, label, weights, biases, penalty):
    logits = weights @ h + biases  # [V]
    return terms.penalised_nll(jax.nn.logsumexp(logits), take(logits, label), penalty)


def _streaming_logsumexp(h, weight_blocks, bias_blocks, valid_blocks):
    """logsumexp over all rows, one ``[c]`` block of logits at a time (``[N, c, ...]`` in)."""

    # The checkpoint makes the backward pass recompute each block's logits instead of
    # saving them, so neither pass ever holds more than one block.
    @jax.checkpoint
    def step(running, block):
        w, b, valid = block  # [c, D], [c], [c]
        logits = jnp.where(valid, w @ h + b, -jnp.inf)  # [c]
        return jnp.logaddexp(running, jax.nn.logsumexp(logits)), None

    init = jnp.full((), -jnp.inf, jnp.result_type(h, weight_blocks))
    lse, _ = jax.lax.scan(step, init, (weight_blocks, bias_blocks, valid_blocks))
    return lse


def _softmax_chunked_one(
    h, label, weights, biases, weight_blocks, bias_blocks, valid_blocks, penalty
):
    log_z = _streaming_logsumexp(h, weight_blocks, bias_blocks, valid_blocks)
    return terms.penalised_nll(log_z, _scores(h, weights, biases, label), penalty)


def _vocab_blocks(weights, biases, chunk_size):
    """``weights`` [V, D] and ``biases`` [V] as ``[N, c, D]`` and ``[N, c]`` blocks of
    ``c = chunk_size`` rows (the last padded) and the ``[N, c]`` mask of real rows."""
    num_rows = weights.shape[0]
    num_blocks = -(-num_rows // chunk_size)
    pad = num_blocks * chunk_size - num_rows
    weight_blocks = jnp.pad(weights, ((0, pad), (0, 0))).reshape(num_blocks, chunk_size, -1)
    bias_blocks = jnp.pad(biases, (0, pad)).reshape(num_blocks, chunk_size)
    valid_blocks = (jnp.arange(num_blocks * chunk_size) < num_rows).reshape(num_blocks, -1)
    return weight_blocks, bias_blocks, valid_blocks


def _softmax(fn, inputs, weights, labels, biases, chunk_size, penalty):
    """`softmax_loss` and `softmax_penalty_loss` (``penalty`` 0: the softmax itself)."""
    inputs, weights, labels, biases = checks.check_inputs(fn, inputs, weights, labels, biases)
    checks.check_chunk_size(fn, chunk_size)
    if chunk_size is None or chunk_size >= weights.shape[0]:
        return jax.vmap(_softmax_one, in_axes=(0, 0, None, None, None))(
            inputs, labels, weights, biases, penalty
        )
    blocks = _vocab_blocks(weights, biases, chunk_size)
    return jax.vmap(_softmax_chunked_one, in_axes=(0, 0) + (None,) * 6)(
        inputs, labels, weights, biases, *blocks, penalty
    )


def _sampled_softmax_one(h, label, sampled_ids, weights, biases, log_q, remove_accidental_hits):
    k = sampled_ids.shape[-1]
    true_logit = terms.log_q_correction(_scores(h, weights, biases, label), take(log_q, label), k)
    noise = terms.log_q_correction(
        _scores(h, weights, biases, sampled_ids), take(log_q, sampled_ids), k
    )
    hits = (sampled_ids == label) if remove_accidental_hits else None  # [K]
    return terms.sampled_softmax_terms(true_logit, noise, hits)


def _nce_one(h, label, sampled_ids, weights, biases, log_q):
    k = sampled_ids.shape[-1]
    true_logit = terms.log_kq_correction(_scores(h, weights, biases, label), take(log_q, label), k)
    noise = terms.log_kq_correction(
        _scores(h, weights, biases, sampled_ids), take(log_q, sampled_ids), k
    )
    true_term, noise_term = terms.sigmoid_terms(true_logit, noise)
    return true_term + noise_term


def _negative_sampling_one(h, label, sampled_ids, weights, biases, remove_accidental_hits):
    # NCE's terms on the raw scores: no log(K q) correction.
    keep = (sampled_ids != label) if remove_accidental_hits else None  # [K]
    true_term, noise_term = terms.sigmoid_terms(
        _scores(h, weights, biases, label), _scores(h, weights, biases, sampled_ids), keep
    )
    return true_term + noise_term


def _hierarchical_softmax_one(h, codes, points, mask, node_weights):
    return terms.tree_terms(take(node_weights, points) @ h, codes, mask)


# ---------------------------------------------------------------------------------------
# Batch losses.


def softmax_loss(
    inputs: jax.typing.ArrayLike,
    weights: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    biases: jax.typing.ArrayLike | None = None,
    *,
    chunk_size: int | None = None,
) -> jax.Array:
    r"""Exact softmax cross entropy over all ``V`` output rows.

    .. math::
        \ell(h, w) = -\log \frac{\exp s(w)}{\sum_{v=1}^{V} \exp s(v)}
                   = \operatorname{logsumexp}_v s(v) - s(w)

    The reference every other loss is measured against; costs :math:`O(VD)` per example.
    With ``chunk_size=c`` the log-partition is a streaming logsumexp over blocks of ``c``
    rows (a `jax.lax.scan` whose body is under `jax.checkpoint`), so neither the forward
    nor the backward pass holds more than a ``[B, c]`` block of logits: a vocabulary of
    millions fits in memory. The result equals the unchunked loss to float rounding and
    ``V`` need not be a multiple of ``c`` (the last block is padded and masked).

    Args:
      inputs: ``[B, D]`` float input vectors :math:`h`.
      weights: ``[V, D]`` float output vectors :math:`u`.
      labels: ``[B]`` integer target rows in ``[0, V)``.
      biases: optional ``[V]`` float output biases :math:`b`.
      chunk_size: optional number of rows per logsumexp block (a static Python int).

    Returns:
      ``[B]`` per-example losses.

    Example:
      >>> import jax.numpy as jnp
      >>> from w2v_jax.model import losses
      >>> inputs, weights = jnp.ones((2, 3)), jnp.zeros((8, 3))
      >>> print(losses.softmax_loss(inputs, weights, jnp.array([0, 5]), chunk_size=3))
      [2.0794415 2.0794415]

    References:
      Mikolov et al., `Efficient Estimation of Word Representations in Vector Space
      <https://arxiv.org/abs/1301.3781>`_, 2013a
    """
    return _softmax("softmax_loss", inputs, weights, labels, biases, chunk_size, 0)


def softmax_penalty_loss(
    inputs: jax.typing.ArrayLike,
    weights: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    biases: jax.typing.ArrayLike | None = None,
    *,
    penalty: float = 1.0,
    chunk_size: int | None = None,
) -> jax.Array:
    r"""The exact softmax cross entropy plus a self-normalisation penalty on :math:`Z`.

    With :math:`Z(h) = \sum_{v=1}^{V} \exp s(v)` computed exactly and :math:`\alpha` =
    ``penalty``,

    .. math::
        \ell(h, w) = \log Z(h) - s(w) + \alpha\,\big(Z(h) - 1 - \log Z(h)\big)

    The penalty is :math:`\ge 0` and zero only at :math:`Z = 1`, so it pulls every
    context's scores towards summing to one. It is what binary NCE with :math:`Z` fixed at
    1 optimises as ``K`` grows (:math:`\alpha = 1`): the log-likelihood minus
    :math:`E[Z - 1 - \log Z]` (Ma & Collins, 2018). Where the model can make every
    :math:`Z(h) = 1` without losing fit, its optimum is the softmax's; where it cannot, it
    trades likelihood for normalisation, as NCE does. ``penalty=0`` is exactly
    `softmax_loss`. ``chunk_size`` streams the logsumexp as in `softmax_loss`; the
    gradient is dense over all ``V`` rows, like the softmax's.

    Args:
      inputs: ``[B, D]`` float input vectors :math:`h`.
      weights: ``[V, D]`` float output vectors :math:`u`.
      labels: ``[B]`` integer target rows in ``[0, V)``.
      biases: optional ``[V]`` float output biases :math:`b`.
      penalty: :math:`\alpha \ge 0`, a Python number (static under `jax.jit`).
      chunk_size: optional number of rows per logsumexp block (a static Python int).

    Returns:
      ``[B]`` per-example losses.

    Example:
      >>> import jax.numpy as jnp
      >>> from w2v_jax.model import losses
      >>> inputs, weights = jnp.ones((2, 3)), jnp.zeros((8, 3))
      >>> # Z = 8: log 8 + (8 - 1 - log 8)
      >>> print(losses.softmax_penalty_loss(inputs, weights, jnp.array([0, 5])))
      [7. 7.]

    References:
      Ma & Collins, `Noise Contrastive Estimation and Negative Sampling for Conditional
      Models: Consistency and Statistical Efficiency <https://arxiv.org/abs/1809.01812>`_,
      2018
    """
    checks.check_penalty("softmax_penalty_loss", penalty)
    return _softmax("softmax_penalty_loss", inputs, weights, labels, biases, chunk_size, penalty)


def sampled_softmax_loss(
    inputs: jax.typing.ArrayLike,
    weights: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    sampled_ids: jax.typing.ArrayLike,
    log_q: jax.typing.ArrayLike,
    biases: jax.typing.ArrayLike | None = None,
    remove_accidental_hits: bool = True,
) -> jax.Array:
    r"""Softmax over the label and ``K`` noise samples, with logits corrected by ``log q``.

    With samples :math:`n_1..n_K \sim q` and :math:`o(v) = s(v) - \log q(v)`,

    .. math::
        \ell(h, w) = \log\Big(e^{o(w)} + \sum_{k=1}^{K} [n_k \ne w]\, e^{o(n_k)}\Big) - o(w)

    The :math:`-\log q` correction makes the sampled partition function an importance
    sampling estimate of the full one, so the gradient approaches the full softmax's as
    ``K`` grows (biased for finite ``K``). With ``remove_accidental_hits`` (the bracket
    above) samples equal to the label are dropped (their logit is set to :math:`-\infty`);
    without it they stay. If the samples are every row except the label and ``q`` is
    uniform, this is exactly `softmax_loss`. Use it to train a softmax model cheaply.

    Args:
      inputs: ``[B, D]`` float input vectors.
      weights: ``[V, D]`` float output vectors.
      labels: ``[B]`` integer target rows in ``[0, V)``.
      sampled_ids: ``[B, K]`` integer noise rows, or ``[K]`` shared by the whole batch.
      log_q: ``[V]`` float log noise probability of each row.
      biases: optional ``[V]`` float output biases.
      remove_accidental_hits: drop samples that equal the example's label.

    Returns:
      ``[B]`` per-example losses.

    Example:
      >>> import jax.numpy as jnp
      >>> from w2v_jax.model import losses
      >>> inputs, weights = jnp.ones((2, 3)), jnp.zeros((8, 3))
      >>> log_q = jnp.full((8,), -jnp.log(8.0))
      >>> labels, ids = jnp.array([0, 5]), jnp.arange(8)
      >>> # every row sampled and q uniform: the full softmax, log 8
      >>> print(losses.sampled_softmax_loss(inputs, weights, labels, ids, log_q))
      [2.0794415 2.0794415]

    References:
      Jean et al., `On Using Very Large Target Vocabulary for Neural Machine Translation
      <https://arxiv.org/abs/1412.2007>`_, 2015
    """
    fn = "sampled_softmax_loss"
    inputs, weights, labels, biases = checks.check_inputs(fn, inputs, weights, labels, biases)
    sampled_ids, ids_axis = checks.check_samples(fn, sampled_ids, inputs.shape[0], weights.shape[0])
    log_q = checks.check_log_q(fn, log_q, weights.shape[0])
    return jax.vmap(_sampled_softmax_one, in_axes=(0, 0, ids_axis, None, None, None, None))(
        inputs, labels, sampled_ids, weights, biases, log_q, bool(remove_accidental_hits)
    )


def nce_loss(
    inputs: jax.typing.ArrayLike,
    weights: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    sampled_ids: jax.typing.ArrayLike,
    log_q: jax.typing.ArrayLike,
    biases: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    r"""Binary noise-contrastive estimation with a self-normalised model (:math:`Z = 1`).

    Each of the label and the ``K`` samples :math:`n_k \sim q` is classified "data" vs
    "noise" with the logit :math:`\Delta(v) = s(v) - \log(K\,q(v))`, the log-odds that
    :math:`v` came from the model :math:`p(v) = e^{s(v)}` rather than from ``K`` noise
    draws:

    .. math::
        \ell(h, w) = -\log\sigma(\Delta(w)) - \sum_{k=1}^{K} \log\sigma(-\Delta(n_k))

    Its expected gradient tends to the softmax gradient as ``K`` grows, and its optimum is
    the normalised data distribution: NCE is a consistent estimator of the softmax model.
    ``K`` is ``sampled_ids.shape[-1]``. With ``K q(v) = 1`` (uniform ``q`` and ``K = V``)
    it is exactly `negative_sampling_loss` with ``remove_accidental_hits=False``.

    Samples equal to the label always count as noise here (there is no
    ``remove_accidental_hits``): the noise is K draws from ``q`` itself, label included,
    and the :math:`\log(K q)` logit is the Bayes log-odds only for that noise. Dropping
    the hits would make the noise ``q`` without the label and the estimator inconsistent
    (TensorFlow's ``nce_loss`` keeps them by default for the same reason).

    Args:
      inputs: ``[B, D]`` float input vectors.
      weights: ``[V, D]`` float output vectors.
      labels: ``[B]`` integer target rows in ``[0, V)``.
      sampled_ids: ``[B, K]`` integer noise rows, or ``[K]`` shared by the whole batch.
      log_q: ``[V]`` float log noise probability of each row.
      biases: optional ``[V]`` float output biases.

    Returns:
      ``[B]`` per-example losses.

    Example:
      >>> import jax.numpy as jnp
      >>> from w2v_jax.model import losses
      >>> inputs, weights = jnp.ones((2, 3)), jnp.zeros((8, 3))
      >>> log_q = jnp.full((8,), -jnp.log(8.0))
      >>> ids = jnp.array([[1, 2], [3, 4]])
      >>> print(losses.nce_loss(inputs, weights, jnp.array([0, 5]), ids, log_q).round(4))
      [3.442 3.442]

    References:
      Gutmann & Hyvärinen, `Noise-contrastive estimation: A new estimation principle for
      unnormalized statistical models <https://proceedings.mlr.press/v9/gutmann10a>`_, 2010

      Mnih & Teh, `A fast and simple algorithm for training neural probabilistic language
      models <https://arxiv.org/abs/1206.6426>`_, 2012

      Dyer, `Notes on Noise Contrastive Estimation and Negative Sampling
      <https://arxiv.org/abs/1410.8251>`_, 2014
    """
    fn = "nce_loss"
    inputs, weights, labels, biases = checks.check_inputs(fn, inputs, weights, labels, biases)
    sampled_ids, ids_axis = checks.check_samples(fn, sampled_ids, inputs.shape[0], weights.shape[0])
    log_q = checks.check_log_q(fn, log_q, weights.shape[0])
    return jax.vmap(_nce_one, in_axes=(0, 0, ids_axis, None, None, None))(
        inputs, labels, sampled_ids, weights, biases, log_q
    )


def negative_sampling_loss(
    inputs: jax.typing.ArrayLike,
    weights: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    sampled_ids: jax.typing.ArrayLike,
    biases: jax.typing.ArrayLike | None = None,
    remove_accidental_hits: bool = True,
) -> jax.Array:
    r"""word2vec's negative sampling: NCE without the :math:`\log(K q)` correction.

    .. math::
        \ell(h, w) = -\log\sigma(s(w)) - \sum_{k=1}^{K} [n_k \ne w] \log\sigma(-s(n_k)),
        \qquad n_k \sim q

    With ``remove_accidental_hits`` (the bracket above; word2vec C's and gensim's
    ``if (target == word) continue;``) a sample equal to the label is skipped, not
    redrawn: the example then has fewer than ``K`` negatives. Without it the sample
    pushes the label's score down while the true term pushes it up.

    It is not an estimator of the softmax: at its optimum, keeping the hits,
    :math:`s(w) = \log \frac{p(w \mid h)}{q(w)} - \log K`, the PMI shifted by
    :math:`\log K` when ``q`` is the unigram distribution (Levy & Goldberg, 2014);
    removing them adds :math:`-\log(1 - p(w \mid h))`, which matters only where one
    word is a large share of a context's continuations. Its expected gradient does not
    approach the softmax gradient as ``K`` grows. It is what word2vec trains
    (``negative=K``, ``q`` the unigram^0.75 table) and is cheap and good for embeddings;
    use `nce_loss` when the scores must be log-probabilities.

    .. warning::
      A naming trap: NCE and negative sampling differ only by the :math:`\log(K q)` shift
      of the logits, and the names get swapped. Code that calls its loss "NCE" but feeds
      the raw scores to the sigmoid trains this loss. Conversely TensorFlow's word2vec
      tutorial trains with ``tf.nn.nce_loss``, which does subtract the log of the
      sampler's expected count (about :math:`K q`): that is NCE, not word2vec's
      objective. Name a loss for what it computes.

    Args:
      inputs: ``[B, D]`` float input vectors.
      weights: ``[V, D]`` float output vectors.
      labels: ``[B]`` integer target rows in ``[0, V)``.
      sampled_ids: ``[B, K]`` integer noise rows, or ``[K]`` shared by the whole batch.
      biases: optional ``[V]`` float output biases (word2vec has none).
      remove_accidental_hits: skip samples that equal the example's label.

    Returns:
      ``[B]`` per-example losses.

    Example:
      >>> import jax.numpy as jnp
      >>> from w2v_jax.model import losses
      >>> inputs, weights = jnp.ones((2, 3)), jnp.zeros((8, 3))
      >>> ids = jnp.array([[1, 2], [3, 4]])
      >>> labels = jnp.array([0, 5])
      >>> print(losses.negative_sampling_loss(inputs, weights, labels, ids).round(4))
      [2.0794 2.0794]

    References:
      Mikolov et al., `Distributed Representations of Words and Phrases and their
      Compositionality <https://arxiv.org/abs/1310.4546>`_, 2013b

      Dyer, `Notes on Noise Contrastive Estimation and Negative Sampling
      <https://arxiv.org/abs/1410.8251>`_, 2014

      Levy & Goldberg, `Neural Word Embedding as Implicit Matrix Factorization
      <https://papers.nips.cc/paper/5477>`_, 2014
    """
    fn = "negative_sampling_loss"
    inputs, weights, labels, biases = checks.check_inputs(fn, inputs, weights, labels, biases)
    sampled_ids, ids_axis = checks.check_samples(fn, sampled_ids, inputs.shape[0], weights.shape[0])
    return jax.vmap(_negative_sampling_one, in_axes=(0, 0, ids_axis, None, None, None))(
        inputs, labels, sampled_ids, weights, biases, bool(remove_accidental_hits)
    )


def hierarchical_softmax_loss(
    inputs: jax.typing.ArrayLike,
    node_weights: jax.typing.ArrayLike,
    codes: jax.typing.ArrayLike,
    points: jax.typing.ArrayLike,
    mask: jax.typing.ArrayLike,
) -> jax.Array:
    r"""word2vec's hierarchical softmax over a binary (Huffman) tree.

    A word is the leaf reached by the path of inner nodes ``points`` taking the branches
    ``codes``; its probability is the product of the branch probabilities:

    .. math::
        \ell(h, w) = -\sum_{l=1}^{L} m_l \log\sigma\big((1 - 2c_l)\, h \cdot u_{p_l}\big)

    Code 0 is the branch taken with probability :math:`\sigma(h \cdot u_p)` and code 1 the
    other, with :math:`1 - \sigma(x) = \sigma(-x)`: word2vec C's convention, whose update
    uses the label ``1 - code``. Over a complete prefix-code tree the leaf probabilities
    sum to one, :math:`\sum_w e^{-\ell(h, w)} = 1`, so this is a normalised model at
    :math:`O(L D)` per example instead of :math:`O(V D)`; there are no biases.

    Args:
      inputs: ``[B, D]`` float input vectors.
      node_weights: ``[N, D]`` float inner-node vectors (``N = V - 1`` for a full tree,
        fewer when a trainer passes only the gathered rows).
      codes: ``[B, L]`` 0/1 branch codes (int, bool or float).
      points: ``[B, L]`` integer inner-node rows in ``[0, N)`` along the path.
      mask: ``[B, L]`` 1 on the path's real positions, 0 on padding (float, int or bool).
        Padded positions may hold any code and point.

    Returns:
      ``[B]`` per-example losses.

    Example:
      >>> import jax.numpy as jnp
      >>> from w2v_jax.model import losses
      >>> inputs, node_weights = jnp.ones((1, 3)), jnp.zeros((7, 3))
      >>> codes, points = jnp.array([[0, 1, 1]]), jnp.array([[0, 1, 4]])
      >>> mask = jnp.array([[1.0, 1.0, 0.0]])
      >>> print(losses.hierarchical_softmax_loss(inputs, node_weights, codes, points, mask))
      [1.3862944]

    References:
      Morin & Bengio, `Hierarchical Probabilistic Neural Network Language Model
      <https://proceedings.mlr.press/r5/morin05a>`_, 2005

      Mikolov et al., `Distributed Representations of Words and Phrases and their
      Compositionality <https://arxiv.org/abs/1310.4546>`_, 2013b
    """
    fn = "hierarchical_softmax_loss"
    inputs, node_weights, codes, points, mask = checks.check_tree(
        fn, inputs, node_weights, codes, points, mask
    )
    dtype = jnp.result_type(inputs, node_weights)
    # Padding may hold any id (-1 would wrap): map it past the rows, where it reads zeros.
    points = jnp.where(mask != 0, points, node_weights.shape[0])
    return jax.vmap(_hierarchical_softmax_one, in_axes=(0, 0, 0, 0, None))(
        inputs, codes.astype(dtype), points, mask.astype(dtype), node_weights
    )
