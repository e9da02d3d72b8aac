"""The noise distribution and its samplers, for NCE, negative sampling and sampled softmax.

The host builds the distribution and its alias table once, in NumPy; the device draws
from the table in O(1) per sample inside the jitted step. The table is a pytree of two
plain arrays, so it is passed to the step as an argument, never closed over.

Typical use::

  q = sampling.noise_probs(counts, power=0.75)  # float64 [V], host
  log_q = sampling.noise_log_probs(counts, power=0.75)  # float32 [V], the loss's correction
  table = sampling.build_alias_table(q)  # AliasTable of [V] arrays, host
  ids = sampling.draw(key, table, (B, K))  # int32 [B, K], device, inside jit

Shape letters: V vocabulary size, B batch rows, K samples per row.
"""

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt


class AliasTable(NamedTuple):
    """Walker's alias table for a distribution q over V ids (Vose's construction).

    Bin i is drawn with probability 1/V; within it, id i is kept with probability
    prob[i] and otherwise replaced by alias[i]. So
    q[i] = (prob[i] + sum_{j: alias[j] = i} (1 - prob[j])) / V.
    """

    prob: np.ndarray  # float32 [V], probability of keeping bin i's own id, in [0, 1]
    alias: np.ndarray  # int32 [V], the id drawn when bin i's coin fails


def as_counts(
    counts: npt.ArrayLike,
    *,
    min_words: int = 1,
    purpose: str = "",
    positive: bool = True,
    name: str = "counts",
) -> np.ndarray:
    """Validates word counts [V]: int64 for integer or bool input (exact sums), else float64.

    ``min_words``: the fewest words allowed (``purpose`` says what for, in the message);
    ``positive``: at least one count must be positive; ``name``: the argument, in messages.
    """
    try:
        array = np.asarray(counts)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be numeric, got {counts!r:.80}") from e
    if array.ndim != 1:
        raise ValueError(f"{name} must have rank 1 [V], got shape {array.shape}")
    if array.shape[0] < min_words:
        if min_words == 1:
            raise ValueError(f"{name} must be non-empty, got shape (0,)")
        raise ValueError(
            f"{name} must have at least {min_words} words{purpose}, got V={array.shape[0]}"
        )
    if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        array = array.astype(np.int64)
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} must be finite, got NaN or inf")
    else:
        raise TypeError(f"{name} must be integer or float, got dtype {array.dtype}")
    if np.any(array < 0):
        raise ValueError(f"{name} must be non-negative, got min {array.min()}")
    if positive and not np.any(array > 0):
        raise ValueError(f"{name} must have at least one positive entry, got all zeros")
    return array


def _log_noise(counts: npt.ArrayLike, power: float) -> np.ndarray:
    """log q in float64 [V]; -inf exactly where counts are zero."""
    counts = as_counts(counts).astype(np.float64)
    power = float(power)
    if not np.isfinite(power):
        raise ValueError(f"power must be finite, got {power}")
    positive = counts > 0
    # Work in log space: counts**power can overflow or underflow for large |power|.
    log_w = np.full(counts.shape, -np.inf)
    log_w[positive] = power * np.log(counts[positive])
    top = log_w[positive].max()
    log_z = top + np.log(np.sum(np.exp(log_w[positive] - top)))
    return log_w - log_z


def noise_probs(counts: npt.ArrayLike, power: float = 0.75) -> np.ndarray:
    r"""The unigram^power noise distribution, in float64 on the host.

    .. math::
      q_w = \frac{c_w^{p}}{\sum_{v: c_v > 0} c_v^{p}} \ (c_w > 0), \qquad q_w = 0 \ (c_w = 0)

    With p = 0.75 this is word2vec's noise table (gensim's ``ns_exponent``); p = 1 is
    the unigram distribution and p = 0 the uniform distribution over the words seen.
    A zero-count word has q = 0 for every p (even p = 0), so it is never sampled.

    Args:
      counts: [V] non-negative word counts (int or float), at least one positive.
      power: the exponent p; any finite value (negative favours rare words).

    Returns:
      float64 [V], summing to 1.

    Raises:
      ValueError: counts of wrong rank, empty, negative, non-finite or all zero; a NaN
        or infinite power.
    """
    return np.exp(_log_noise(counts, power))


def noise_log_probs(counts: npt.ArrayLike, power: float = 0.75) -> np.ndarray:
    """log q of :func:`noise_probs`, computed in float64 (log-sum-exp) and cast to float32.

    log q is finite for every word with a positive count. A zero-count word gets
    log q = -inf: it is never drawn, so it never appears as a noise sample, but it would
    make the ``log(K q)`` correction of NCE or sampled softmax infinite if it were a
    label. Build the vocabulary with ``min_count >= 1`` (every id then has a positive
    count) or drop such words before training.

    Args:
      counts: [V] non-negative word counts, at least one positive.
      power: the exponent (gensim's ``ns_exponent``), finite.

    Returns:
      float32 [V].
    """
    return _log_noise(counts, power).astype(np.float32)


def build_alias_table(probs: npt.ArrayLike) -> AliasTable:
    """Builds a Walker alias table for q = probs / sum(probs), with Vose's method, in O(V).

    The construction runs on the host in float64 (a single pass over the small and large
    bins; V = 1M takes 0.4-1.6 s) and stores ``prob`` in float32. Ids with zero
    probability get prob = 0 and are never the alias of any bin, so they are never drawn.

    Args:
      probs: [V] non-negative weights, at least one positive; normalised here, so
        :func:`noise_probs` output or raw ``counts ** 0.75`` both work. Pass
        probabilities, not log-probabilities (use ``np.exp(log_q)``).

    Returns:
      An :class:`AliasTable` of NumPy arrays: prob float32 [V], alias int32 [V].

    Raises:
      ValueError: probs of wrong rank, empty, negative, non-finite or all zero.

    References:
      Walker, "An efficient method for generating discrete random variables with general
      distributions", ACM TOMS 1977. Vose, "A linear algorithm for generating random
      numbers with a given distribution", IEEE TSE 1991.
    """
    p = as_counts(probs, name="probs").astype(np.float64)
    total = p.sum()
    num = p.shape[0]
    scaled_np = p * (num / total)  # mean 1: a bin holds exactly one unit of mass
    # Vose's loop on Python lists (not NumPy scalars): each step finalises one bin.
    scaled = scaled_np.tolist()
    small = np.flatnonzero(scaled_np < 1.0).tolist()
    large = np.flatnonzero(scaled_np >= 1.0).tolist()
    prob = [1.0] * num
    alias = list(range(num))
    while small and large:
        s = small.pop()
        g = large[-1]
        prob[s] = scaled[s]
        alias[s] = g
        rest = (scaled[g] + scaled[s]) - 1.0  # g gives 1 - scaled[s] to fill bin s
        scaled[g] = rest
        if rest < 1.0:
            small.append(large.pop())
    # What is left in either list holds (up to rounding) exactly one unit: prob 1, no alias.
    return AliasTable(
        prob=np.asarray(prob, dtype=np.float32), alias=np.asarray(alias, dtype=np.int32)
    )


def draw(key: jax.Array, table: AliasTable, shape: int | Sequence[int]) -> jax.Array:
    """Draws ids from an alias table: O(1) per sample, jittable.

    Each sample takes one uniform bin ``i`` in [0, V) and one uniform coin ``u`` in
    [0, 1), and returns ``i if u < prob[i] else alias[i]``. Pass ``table`` as an argument
    of the jitted function (it is a pytree); V is read from its static shape.

    Args:
      key: a PRNG key.
      table: an :class:`AliasTable` with prob float [V] and alias int [V].
      shape: the output shape, static: e.g. ``(B, K)`` per-row samples or ``(K,)``
        samples shared across the batch.

    Returns:
      int32 array of ``shape`` with values in [0, V).

    Example:
      >>> table = build_alias_table(noise_probs(np.array([5, 3, 1, 1])))
      >>> ids = jax.jit(draw, static_argnums=2)(jax.random.key(0), table, (2, 3))
    """
    prob, alias = table
    if jnp.ndim(prob) != 1 or jnp.shape(alias) != jnp.shape(prob):
        raise ValueError(
            "table.prob and table.alias must both have shape [V], got "
            f"{jnp.shape(prob)} and {jnp.shape(alias)}"
        )
    shape = (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)
    key_bin, key_coin = jax.random.split(key)
    bins = jax.random.randint(key_bin, shape, 0, jnp.shape(prob)[0], dtype=jnp.int32)
    coins = jax.random.uniform(key_coin, shape, dtype=jnp.float32)
    keep = coins < jnp.asarray(prob)[bins]
    return jnp.where(keep, bins, jnp.asarray(alias, dtype=jnp.int32)[bins])
