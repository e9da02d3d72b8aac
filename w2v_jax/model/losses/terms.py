r"""The logits-level core of the output layers, written once (optax-style).

Every loss of this package and every fused kernel of `step.fused` is a composition
of the functions below: the callers only score (``logits = h · u + b``, by a gather or an
einsum) and reduce; the maths of each layer lives here. Arrays in, arrays out, any
leading shape ``[...]``; nothing is reduced over examples.

The thesis in four lines: with logits :math:`s(v)`,

* negative sampling is `sigmoid_terms` of :math:`s` itself;
* NCE is `sigmoid_terms` of :math:`s - \log(K q)` (`log_kq_correction`);
* sampled softmax is `sampled_softmax_terms` of :math:`s - \log q` (`log_q_correction`);
* hierarchical softmax is `tree_terms` of the path's logits;

and the penalised softmax adds `normaliser_penalty` of the exact :math:`\log Z` to the
softmax's :math:`\log Z - s(w)` (`penalised_nll`).

Shape letters: K noise samples, L Huffman path length; ``[...]`` any leading shape.
"""

import math

import jax
import jax.numpy as jnp


def log_q_correction(logits: jax.Array, log_q: jax.Array, k: int) -> jax.Array:
    r""":math:`o(v) = s(v) - \log q(v)`: sampled softmax's importance correction.

    ``k`` does not enter (it is taken so every correction has one signature).
    """
    del k
    return logits - log_q


def log_kq_correction(logits: jax.Array, log_q: jax.Array, k: int) -> jax.Array:
    r""":math:`\Delta(v) = s(v) - \log(K\,q(v))`: NCE's log-odds of data against noise.

    Written as :math:`(s - \log K) - \log q`, the order every caller uses.
    """
    return logits - math.log(k) - log_q


def sigmoid_terms(
    true_logits: jax.Array, noise_logits: jax.Array, noise_weights: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    r"""The two halves of a binary data-vs-noise loss (NCE and negative sampling).

    .. math::
        -\log\sigma(t), \qquad -\sum_{k=1}^{K} m_k \log\sigma(-n_k)

    Args:
      true_logits: ``[...]`` logit of the example's label.
      noise_logits: ``[..., K]`` logits of its noise samples.
      noise_weights: optional ``[..., K]`` (broadcastable) weights :math:`m_k` of the
        samples' terms (1 when None): 0 skips a sample equal to the label (word2vec C's
        ``if (target == word) continue;``); a caller whose noise is shared by several
        labels passes how many of them each sample counts for.

    Returns:
      ``[...]`` true term and ``[...]`` noise term; their sum is the loss. They come apart
      so a caller whose noise is shared by several labels can weight each once.
    """
    true_term = -jax.nn.log_sigmoid(true_logits)
    noise = jax.nn.log_sigmoid(-noise_logits)
    if noise_weights is not None:
        noise = noise_weights * noise
    return true_term, -jnp.sum(noise, axis=-1)


def sampled_softmax_terms(
    true_logits: jax.Array, noise_logits: jax.Array, hits: jax.Array | None = None
) -> jax.Array:
    r"""Softmax cross entropy of the label against its samples.

    .. math::
        \log\Big(e^{t} + \sum_{k=1}^{K} [\lnot h_k]\, e^{n_k}\Big) - t

    Args:
      true_logits: ``[...]`` logit of the label.
      noise_logits: ``[..., K]`` logits of the samples.
      hits: optional bool ``[..., K]`` (broadcastable): samples equal to the label
        ("accidental hits"), dropped from the sum (logit :math:`-\infty`); the true
        logit keeps the sum finite.

    Returns:
      ``[...]`` per-example losses.
    """
    if hits is not None:
        noise_logits = jnp.where(hits, -jnp.inf, noise_logits)
    return jnp.logaddexp(true_logits, jax.nn.logsumexp(noise_logits, axis=-1)) - true_logits


def tree_terms(path_logits: jax.Array, codes: jax.Array, mask: jax.Array) -> jax.Array:
    r"""Hierarchical softmax: minus the log-probability of a Huffman path.

    .. math::
        -\sum_{l=1}^{L} m_l \log\sigma\big((1 - 2c_l)\, x_l\big)

    Code 0 is the branch taken with probability :math:`\sigma(x)` (word2vec C's).

    Args:
      path_logits: ``[..., L]`` logits :math:`x_l = h \cdot u_{p_l}` along the path.
      codes: ``[..., L]`` 0/1 branch codes, float.
      mask: ``[..., L]`` 1 on the path's real positions, 0 on padding.

    Returns:
      ``[...]`` per-example losses.
    """
    sign = 1 - 2 * codes  # +1 for code 0, -1 for code 1
    return -jnp.sum(mask * jax.nn.log_sigmoid(sign * path_logits), axis=-1)


def normaliser_penalty(log_z: jax.Array) -> jax.Array:
    r""":math:`Z - 1 - \log Z \ge 0` from :math:`\log Z`: zero exactly when :math:`Z = 1`.

    Written :math:`\operatorname{expm1}(\log Z) - \log Z`, accurate near :math:`Z = 1`;
    it overflows to ``inf`` past :math:`\log Z \approx 88` in float32. Binary NCE with
    :math:`Z` fixed at 1 maximises, as ``K`` grows, the log-likelihood minus this penalty
    in expectation (Ma & Collins, 2018).

    Args:
      log_z: ``[...]`` log partition function :math:`\log Z(h)`.

    Returns:
      ``[...]`` penalties.
    """
    return jnp.expm1(log_z) - log_z


def penalised_nll(log_z: jax.Array, true_logits: jax.Array, penalty: float) -> jax.Array:
    r"""The softmax NLL plus ``penalty`` times `normaliser_penalty`.

    .. math::
        \log Z - t + \alpha\,(Z - 1 - \log Z)

    Args:
      log_z: ``[...]`` exact log partition function (a logsumexp over every row).
      true_logits: ``[...]`` logit :math:`t` of the label.
      penalty: :math:`\alpha \ge 0`, a Python number; 0 is the softmax itself (the
        penalty is then not computed, so a huge :math:`Z` cannot turn it into NaN).

    Returns:
      ``[...]`` per-example losses.
    """
    nll = log_z - true_logits
    return nll + penalty * normaliser_penalty(log_z) if penalty else nll
