"""Measurements at full float32, whatever the training precision and the backend.

A float32 matmul runs at the backend's default precision unless told otherwise: one
bfloat16 pass on TPU, TensorFloat-32 (10-bit mantissa) on Ampere and later NVIDIA GPUs,
float32 on XLA:CPU. Held-out likelihood, log Z, KL to the truth, analogy cosines and
gradient cosines would then shift with the machine (and with ``config.matmul_precision``,
which sets only the training step's). `full_float32` pins every matmul a function traces
to ``Precision.HIGHEST`` (float32 on GPUs, six bf16 passes on TPU), so measurements compare
across machines. On XLA:CPU it changes nothing numerically (the precision config is
ignored there). Where it applies: docs/training.md, "Measurements are always float32".
"""

from __future__ import annotations

import functools

import jax

FULL = "float32"  # jax_default_matmul_precision name of lax.Precision.HIGHEST


def full_float32(fn):
    """``fn`` with every matmul it traces (or runs eagerly) at float32.

    Apply it under ``jax.jit`` (``@jax.jit`` above ``@full_float32``): the precision is
    read at trace time, and a global ``jax_default_matmul_precision`` does not reach the
    traced dots.
    """

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision(FULL):
            return fn(*args, **kwargs)

    return wrapped
