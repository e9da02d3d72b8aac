r"""Milliseconds per jitted training step, for step-configuration variants side by side.

  python experiments/bench_step.py                                   # the default's step
  python experiments/bench_step.py --variants=default,optimizer=sgd,skipgram_input=centre

Each variant is ``update.StepConfig`` overrides (``key=value`` joined by ``+``, or
``default``) on top of the project's default step (skip-gram NEG-5, row-shared negatives
with word2vec C's context input, sparse AdaGrad from 1.0). Every variant trains on the
same synthetic batches — centre and context ids drawn from a Zipf law over ``--vocab``
words, ``2 × --window`` context slots per row, ``--valid`` of them valid — with the
tables donated, after ``--warmup`` untimed steps; the median of ``--repeats`` timings of
``--steps`` steps is printed. No corpus, no input pipeline: only the step (gather, loss,
gradient, optimiser, write-back). Variants alternate within each repeat, so a noisy
machine affects them alike; still, run it alone.
"""

from __future__ import annotations

import functools
import statistics
import time

import jax
import numpy as np
from absl import app, flags

from w2v_jax import cli
from w2v_jax.data import input_pipeline
from w2v_jax.model import output_layers
from w2v_jax.parallel import host_memory
from w2v_jax.step import update

_VARIANTS = flags.DEFINE_list("variants", ["default"], "StepConfig overrides, k=v+k=v.")
_ROWS = flags.DEFINE_integer("rows", 1024, "Centre rows per step (batch_size).")
_VOCAB = flags.DEFINE_integer("vocab", 22_408, "V (text8-head's vocabulary by default).")
_DIM = flags.DEFINE_integer("dim", 100, "D.")
_WINDOW = flags.DEFINE_integer("window", 5, "Context slots per row: 2 × window.")
_VALID = flags.DEFINE_float("valid", 0.6, "Fraction of valid context slots.")
_STEPS = flags.DEFINE_integer("steps", 40, "Timed steps per repeat.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Repeats (median).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps (compilation).")

DEFAULT = dict(
    model="skipgram", loss="neg", k=5, share="row", skipgram_input="context",
    optimizer="adagrad", initial_accumulator=1.0,
)  # fmt: skip


def parse(variant: str) -> dict:
    if variant == "default":
        return {}
    out = {}
    for item in variant.split("+"):
        key, _, value = item.partition("=")
        field = update.StepConfig.__dataclass_fields__.get(key)
        if field is None or not value:
            raise app.UsageError(f"--variants: {item!r} is not a StepConfig key=value")
        kind = type(DEFAULT.get(key, field.default))
        out[key] = kind(value) if kind is not bool else value.lower() in ("1", "true")
    return out


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    host_memory.keep_freed_memory()  # as the trainer does
    v, b, c = _VOCAB.value, _ROWS.value, 2 * _WINDOW.value
    rng = np.random.default_rng(0)
    counts = (1e6 / np.arange(1, v + 1)).astype(np.int64) + 5
    p = counts / counts.sum()
    batches = [
        jax.device_put(
            input_pipeline.Batch(
                rng.choice(v, b, p=p).astype(np.int32),
                rng.choice(v, (b, c), p=p).astype(np.int32),
                (rng.random((b, c)) < _VALID.value).astype(np.float32),
            )
        )
        for _ in range(8)
    ]
    runs = {}
    for variant in _VARIANTS.value:
        cfg = update.StepConfig(**{**DEFAULT, **parse(variant)})
        aux = jax.device_put(output_layers.constants_for(cfg.loss, counts))
        state = update.init_state(jax.random.PRNGKey(0), v, _DIM.value, cfg)
        step = jax.jit(functools.partial(update.train_step, cfg=cfg), donate_argnums=0)
        for i in range(_WARMUP.value):
            state, _ = step(state, batches[i % 8], aux, np.float32(0.1))
        jax.block_until_ready(state)
        runs[variant] = [step, state, aux, []]
    for _ in range(_REPEATS.value):
        for run in runs.values():
            step, state, aux, times = run
            start = time.perf_counter()
            for i in range(_STEPS.value):
                state, _ = step(state, batches[i % 8], aux, np.float32(0.1))
            jax.block_until_ready(state)
            times.append((time.perf_counter() - start) / _STEPS.value)
            run[1] = state
    print(f"{'variant':50s} {'ms/step':>8s} {'rows/s':>10s}")
    for variant, (_, _, _, times) in runs.items():
        ms = 1e3 * statistics.median(times)
        print(f"{variant:50s} {ms:8.2f} {b / ms * 1e3:10,.0f}")


if __name__ == "__main__":
    cli.run(main)  # one-line errors, tracebacks with --verbose
