"""Trace-time argument checks for the `losses` package: small ``ValueError``s and ``TypeError``s.

Each check takes the calling loss's name ``fn`` for its message, converts what it checks
to a `jax.Array` and returns it. Shapes are checked by rank and by the sizes the arguments
share; ids are range-checked only when concrete (a traced array inside `jax.jit` cannot be
inspected).

Shape letters (as in `losses`):
  B batch (examples), D embedding dim, V output rows, K noise samples per example,
  L Huffman code length (tree depth), N inner-node rows.
"""

import jax
import jax.numpy as jnp
import numpy as np


def describe(x: jax.Array) -> str:
    """``x``'s dtype and shape, as the messages show them: ``float32[2, 3]``."""
    return f"{x.dtype}{list(x.shape)}"


def array(fn: str, name: str, x: jax.typing.ArrayLike, shape: str, kind=jnp.floating) -> jax.Array:
    """``x`` as an array of dtype ``kind`` whose rank matches the letters in ``shape``."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, kind):
        what = "a float" if kind is jnp.floating else "an integer"
        raise TypeError(f"{fn}: {name} must be {what} array of shape {shape}, got {describe(x)}")
    if x.ndim != shape.count(",") + 1:
        raise ValueError(f"{fn}: {name} must have shape {shape}, got {describe(x)}")
    return x


def check_size(fn: str, name: str, x: jax.Array, axis: int, size: int, what: str) -> None:
    """Raises unless ``x`` has ``size`` (described by ``what``) along ``axis``."""
    if x.shape[axis] != size:
        raise ValueError(
            f"{fn}: {name} must have {size} ({what}) along axis {axis}, got {describe(x)}"
        )


def check_range(fn: str, name: str, ids: jax.Array, upper: int, where=None) -> None:
    """Raises if concrete ``ids`` (where ``where`` is true) leave ``[0, upper)``.

    Traced arrays (inside `jax.jit`) cannot be inspected and are not checked.
    """
    if isinstance(ids, jax.core.Tracer) or isinstance(where, jax.core.Tracer):
        return
    ids = np.asarray(ids)
    if where is not None:
        ids = ids[np.asarray(where) != 0]
    if ids.size and (ids.min() < 0 or ids.max() >= upper):
        raise ValueError(
            f"{fn}: {name} must lie in [0, {upper}) (rows of the output table), "
            f"got values in [{ids.min()}, {ids.max()}]"
        )


def check_inputs(fn, inputs, weights, labels, biases):
    """Checks the arguments every flat loss shares; returns them as arrays.

    ``inputs`` [B, D], ``weights`` [V, D], ``labels`` [B] in [0, V), ``biases`` [V] or None
    (returned as zeros).
    """
    inputs = array(fn, "inputs", inputs, "[B, D]")
    weights = array(fn, "weights", weights, "[V, D]")
    check_size(fn, "weights", weights, 1, inputs.shape[1], "D, the inputs' last dim")
    labels = array(fn, "labels", labels, "[B]", jnp.integer)
    check_size(fn, "labels", labels, 0, inputs.shape[0], "B, the inputs' first dim")
    check_range(fn, "labels", labels, weights.shape[0])
    if biases is None:
        biases = jnp.zeros(weights.shape[:1], weights.dtype)
    biases = array(fn, "biases", biases, "[V]")
    check_size(fn, "biases", biases, 0, weights.shape[0], "V, the rows of weights")
    return inputs, weights, labels, biases


def check_samples(fn, sampled_ids, batch, num_rows):
    """``sampled_ids`` as ``[B, K]`` or shared ``[K]`` ids, and its `jax.vmap` axis."""
    sampled_ids = jnp.asarray(sampled_ids)
    shape = "[B, K] or [K]"
    if not jnp.issubdtype(sampled_ids.dtype, jnp.integer):
        raise TypeError(
            f"{fn}: sampled_ids must be an integer array of shape {shape}, "
            f"got {describe(sampled_ids)}"
        )
    if sampled_ids.ndim not in (1, 2):
        raise ValueError(f"{fn}: sampled_ids must have shape {shape}, got {describe(sampled_ids)}")
    if sampled_ids.ndim == 2:
        check_size(fn, "sampled_ids", sampled_ids, 0, batch, "B, the inputs' first dim")
    if sampled_ids.shape[-1] == 0:
        raise ValueError(f"{fn}: sampled_ids must hold at least one sample (K >= 1)")
    check_range(fn, "sampled_ids", sampled_ids, num_rows)
    return sampled_ids, (0 if sampled_ids.ndim == 2 else None)


def check_log_q(fn, log_q, num_rows):
    """``log_q`` as a ``[V]`` float array, one log noise probability per output row."""
    log_q = array(fn, "log_q", log_q, "[V]")
    check_size(fn, "log_q", log_q, 0, num_rows, "V, the rows of weights")
    return log_q


def check_chunk_size(fn, chunk_size) -> None:
    """Raises unless ``chunk_size`` is None or a positive Python int."""
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"{fn}: chunk_size must be None or a positive int, got {chunk_size!r}")


def check_penalty(fn, penalty) -> None:
    """Raises unless ``penalty`` is a finite Python number >= 0 (a static weight)."""
    if (
        not isinstance(penalty, (int, float))
        or isinstance(penalty, bool)
        or not 0 <= penalty < float("inf")
    ):
        raise ValueError(f"{fn}: penalty must be a finite Python number >= 0, got {penalty!r}")


def check_tree(fn, inputs, node_weights, codes, points, mask):
    """Checks the hierarchical softmax's arguments; returns them as arrays.

    ``inputs`` [B, D], ``node_weights`` [N, D], ``points`` [B, L] integer, and ``codes`` and
    ``mask`` [B, L] numeric or bool; ``points`` must lie in [0, N) where ``mask`` is set.
    """
    inputs = array(fn, "inputs", inputs, "[B, D]")
    node_weights = array(fn, "node_weights", node_weights, "[N, D]")
    check_size(fn, "node_weights", node_weights, 1, inputs.shape[1], "D, the inputs' last dim")
    points = array(fn, "points", points, "[B, L]", jnp.integer)
    check_size(fn, "points", points, 0, inputs.shape[0], "B, the inputs' first dim")
    codes, mask = jnp.asarray(codes), jnp.asarray(mask)
    for name, x in (("codes", codes), ("mask", mask)):
        if not (jnp.issubdtype(x.dtype, jnp.number) or x.dtype == jnp.bool_):
            raise TypeError(f"{fn}: {name} must be a numeric or bool array, got {describe(x)}")
        if x.shape != points.shape:
            raise ValueError(
                f"{fn}: {name} must have shape [B, L] like points {list(points.shape)}, "
                f"got {describe(x)}"
            )
    check_range(fn, "points", points, node_weights.shape[0], where=mask)
    return inputs, node_weights, codes, points, mask
