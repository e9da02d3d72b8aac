r"""How far each sampled loss's gradient is from the exact softmax gradient, as K grows.

At fixed parameters and examples, each sampled loss (sampled softmax, NCE, negative
sampling) gives a random gradient :math:`g_i` per draw of the K noise samples per example
(from :math:`q \propto \mathrm{count}^{0.75}`). Over ``draws`` independent draws this
module estimates its mean :math:`\bar g` and spread and compares them with the exact
softmax gradient :math:`g^*` of the same mean loss, w.r.t. the example inputs [E, D], the
output table [V, D] and, if present, the biases [V], all flattened:

* ``cosine`` :math:`\cos(\bar g, g^*)`, ``rel_error`` :math:`\|\bar g - g^*\| / \|g^*\|`
  (which includes Monte-Carlo noise of size :math:`\sqrt{\sigma^2 / n}`), ``rel_bias``
  (the same with that noise subtracted),
* ``rel_variance`` :math:`E\|g_i - \bar g\|^2 / \|g^*\|^2` and ``rel_mse``
  :math:`E\|g_i - g^*\|^2 / \|g^*\|^2`, the single-draw error.

What the theory predicts: sampled softmax's expected gradient tends to :math:`g^*` as K
grows (bias O(1/K)) when samples equal to the label are kept. Removing them
(``remove_accidental_hits``, the usual default) leaves the label only its own term
:math:`e^{s(y)}/q(y)` in the normaliser against :math:`\approx K (Z - e^{s(y)})` for the
rest, so its predicted probability tends to 0: the bias stops falling once
:math:`K q(y)` is not small, then grows (an example: docs/evaluation.md).
NCE's tends to the gradient of :math:`-s(w) + \sum_v e^{s(v)}`,
which equals :math:`g^*` only where the model is self-normalised, Z(h) = 1 (NCE's own
optimum); at other states NCE's limit differs from the softmax direction. Negative
sampling's noise term grows like K: its gradient does not approach :math:`g^*` at all.

Use it on a trained state and a held-out batch (`likelihood.batch_examples`, keeping
the examples whose weight is 1). Shape letters: E examples, D dim, V vocab, K samples,
P flattened parameters (E·D + V·D [+ V]), n draws. Every gradient is computed at float32
whatever the backend's default (`precision.full_float32`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from w2v_jax.evaluation import precision
from w2v_jax.model import output_layers, sampling

_FLOATS_PER_STEP = 1 << 23  # draws vmapped together: n · P floats at a time


class BiasStats(NamedTuple):
    """One loss at one K, against the exact softmax gradient g*."""

    cosine: float  # cos(mean gradient, g*)
    rel_error: float  # ‖mean - g*‖ / ‖g*‖, Monte-Carlo noise included
    rel_bias: float  # the same with the Monte-Carlo noise (σ² / n) removed
    rel_variance: float  # E‖g_i - mean‖² / ‖g*‖², the spread of single draws
    rel_mse: float  # E‖g_i - g*‖² / ‖g*‖²


def _flat_grad(loss_of, inputs, out, bias, use_bias):
    """∇ of mean(loss_of(inputs, out, bias)) w.r.t. inputs, out (and bias), flattened [P]."""

    def mean_loss(x, w, b):
        return jnp.mean(loss_of(x, w, b))

    gx, gw, gb = jax.grad(mean_loss, argnums=(0, 1, 2))(inputs, out, bias)
    return jnp.concatenate([gx.ravel(), gw.ravel()] + ([gb] if use_bias else []))


def _loss(name, labels, samples, log_q, remove_accidental_hits):
    """The per-example loss of layer ``name`` as a function of (inputs, out, bias)."""
    layer = output_layers.get(name)
    if layer.tree:
        raise ValueError(f"losses must be among {output_layers.SAMPLED}, got {name!r}")
    return lambda x, w, b: layer.per_example(
        x, w, labels, bias=b, samples=samples, log_q=log_q,
        remove_accidental_hits=remove_accidental_hits,
    )  # fmt: skip


@functools.partial(jax.jit, static_argnames=("use_bias",))
@precision.full_float32
def exact_gradient(inputs, out, bias, labels, *, use_bias):
    """The exact softmax gradient g* [P] of the mean loss (see module docstring)."""
    return _flat_grad(_loss("softmax", labels, None, None, True), inputs, out, bias, use_bias)


@functools.partial(jax.jit, static_argnames=("shape",))
def _draw_many(keys, table, *, shape):
    """One draw of ``shape`` ids per key: [n, *shape]."""
    return jax.vmap(lambda key: sampling.draw(key, table, shape))(keys)


@functools.partial(jax.jit, static_argnames=("name", "k", "use_bias", "remove_accidental_hits"))
@precision.full_float32
def _moments(samples, inputs, out, bias, labels, log_q, exact, *, name, k, use_bias,
             remove_accidental_hits):  # fmt: skip
    """Σ_i g_i [P] and Σ_i ‖g_i - g*‖² over the draws ``samples[i, :, :k]`` ([n, E, K_max])."""

    def one(draw):
        loss_of = _loss(name, labels, draw[:, :k], log_q, remove_accidental_hits)
        return _flat_grad(loss_of, inputs, out, bias, use_bias)

    g = jax.vmap(one)(samples)  # [n, P]
    return g.sum(0), jnp.sum(jnp.square(g - exact[None, :]))


def _per_step(draws: int, size: int) -> int:
    """The largest divisor of ``draws`` with divisor · size <= _FLOATS_PER_STEP (>= 1)."""
    cap = max(1, min(draws, _FLOATS_PER_STEP // max(size, 1)))
    return next(n for n in range(cap, 0, -1) if draws % n == 0)


def gradient_bias(
    params: dict,
    inputs,
    labels,
    counts,
    *,
    key: jax.Array,
    ks: Sequence[int] = (1, 5, 25, 100),
    draws: int = 256,
    losses: Sequence[str] = output_layers.SAMPLED,
    ns_exponent: float = 0.75,
    remove_accidental_hits: bool = True,
) -> dict[str, dict[int, BiasStats]]:
    """Monte-Carlo mean and spread of each sampled loss's gradient against softmax's.

    Args:
      params: ``out_embed`` [V, D] and optional ``out_bias`` [V] (the input table enters
        through ``inputs``).
      inputs: [E, D] example inputs (`likelihood.batch_examples`, padding dropped).
      labels: [E] centre words.
      counts: [V] word counts; the noise is ``sampling.noise_probs(counts, ns_exponent)``.
      key: PRNG key. Draw i takes ``max(ks)`` samples per example with key
        ``split(key, draws)[i]``, and every loss and every K use its first K of them
        (common random numbers: the comparisons across K and losses share the noise).
      ks: sample counts K to try.
      draws: independent draws per (loss, K), n.
      losses: any of "sampled_softmax", "nce", "neg".
      ns_exponent: the noise distribution's power.
      remove_accidental_hits: neg's and sampled softmax's option, as in training.

    Returns:
      ``{loss: {K: BiasStats}}``.
    """
    if draws < 2:
        raise ValueError(f"draws must be >= 2 to estimate a variance, got {draws}")
    unknown = sorted(set(losses) - set(output_layers.SAMPLED))
    if unknown or not ks or min(ks) < 1:
        raise ValueError(
            f"losses must be among {output_layers.SAMPLED} and ks >= 1, got {losses}, {ks}"
        )
    inputs = jnp.asarray(inputs, jnp.float32)
    labels = jnp.asarray(labels, jnp.int32)
    out = jnp.asarray(params["out_embed"], jnp.float32)
    use_bias = "out_bias" in params
    bias = jnp.asarray(params["out_bias"] if use_bias else jnp.zeros(out.shape[0]), jnp.float32)
    table = sampling.build_alias_table(sampling.noise_probs(counts, ns_exponent))
    log_q = jnp.asarray(sampling.noise_log_probs(counts, ns_exponent))
    exact = exact_gradient(inputs, out, bias, labels, use_bias=use_bias)
    exact_host = np.asarray(exact, np.float64)
    norm2 = float(exact_host @ exact_host)
    ks = [int(k) for k in ks]
    shape = (labels.shape[0], max(ks))
    n = _per_step(draws, max(exact.shape[0], shape[0] * shape[1]))
    keys = jax.random.split(key, draws)
    sums = {(name, k): (0.0, 0.0) for name in losses for k in ks}
    for lo in range(0, draws, n):
        samples = _draw_many(keys[lo : lo + n], table, shape=shape)  # [n, E, K_max]
        for name, k in sums:
            total, squares = _moments(
                samples, inputs, out, bias, labels, log_q, exact, name=name, k=k,
                use_bias=use_bias, remove_accidental_hits=bool(remove_accidental_hits),
            )  # fmt: skip
            sums[name, k] = (sums[name, k][0] + total, sums[name, k][1] + squares)
    result: dict[str, dict[int, BiasStats]] = {name: {} for name in losses}
    for (name, k), (total, squares) in sums.items():
        mean = np.asarray(total, np.float64) / draws
        error2 = float((mean - exact_host) @ (mean - exact_host))
        mse = float(squares) / draws
        variance = max(mse - error2, 0.0) * draws / (draws - 1)  # unbiased E‖g_i - E g‖²
        cosine = float(mean @ exact_host) / math.sqrt(max(float(mean @ mean) * norm2, 1e-300))
        result[name][k] = BiasStats(
            cosine=cosine,
            rel_error=math.sqrt(error2 / norm2),
            rel_bias=math.sqrt(max(error2 - variance / draws, 0.0) / norm2),
            rel_variance=variance / norm2,
            rel_mse=mse / norm2,
        )
    return result
