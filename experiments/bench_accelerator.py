r"""Words/s and step time of large steps on whatever device JAX sees (CPU here, a GPU/TPU there).

  W2V_DATA_DIR=../shared/data python experiments/bench_accelerator.py
  W2V_DATA_DIR=../shared/data python experiments/bench_accelerator.py \
      --batch_sizes=16384,65536,262144 --gpu_ftz_atomics   # on a GPU with jaxlib 0.10.2

Each batch size is one `trainer.train_and_evaluate` run of the project's default config
(skip-gram NEG-5, d = 100; ``--config.x=y`` overrides any field) with the on-device input
pipeline, so the host sends only learning rates: ``--steps_per_call`` steps per jitted
call, stopped after ``--calls`` calls plus one warm-up call. Step time and words/s come
from the trainer's own meters (``train/words_per_s`` counts from the end of the first
call, so compilation is excluded); the last stdout line is one JSON object with a row per
batch size.

GPU scatter-add with jaxlib 0.10.2–0.11.0 (openxla#46225): f32 scatter-adds with many
duplicate indices lower to a compare-and-swap loop, hundreds of times slower under
contention. The sparse optimisers already sum a row's duplicates before the write-back
(`step/optimizers.py`), but the summing itself and word2vec's SGD scatter-add still meet
contention; ``--gpu_ftz_atomics`` sets ``XLA_FLAGS=--xla_backend_extra_options=
-nvptx-allow-ftz-atomics`` before JAX starts (only meaningful on an NVIDIA GPU).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from absl import app, flags
from ml_collections import config_flags

from w2v_jax import cli
from w2v_jax.configs import default

_CONFIG = config_flags.DEFINE_config_dict("config", default.get_config())  # --config.x=y

_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["16384", "65536", "262144"], "Rows per step.")
_STEPS_PER_CALL = flags.DEFINE_integer("steps_per_call", 4, "Steps per jitted call.")
_CALLS = flags.DEFINE_integer("calls", 5, "Timed calls per batch size.", lower_bound=1)
_CORPUS = flags.DEFINE_string("corpus", "text8-head", "Corpus name or path.")
_FTZ = flags.DEFINE_bool("gpu_ftz_atomics", False, "Set XLA's NVPTX FTZ-atomics flag (GPU).")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if _FTZ.value:  # must precede JAX's start
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + " --xla_backend_extra_options=-nvptx-allow-ftz-atomics"
        ).strip()
    import jax

    from w2v_jax import trainer

    # The corpus is found through config.corpus.data_dir; without W2V_DATA_DIR the trainer
    # finds no analogy or similarity files, so it does not evaluate after each point.
    data_dir = os.environ.pop("W2V_DATA_DIR", "")
    rows = []
    for b in (int(x) for x in _BATCH_SIZES.value):
        config = _CONFIG.value.copy_and_resolve_references()
        config.corpus.name = _CORPUS.value
        config.corpus.heldout = ""
        config.corpus.data_dir = data_dir
        config.input.mode = "device"
        config.batch_size = b
        config.steps_per_call = _STEPS_PER_CALL.value
        config.max_steps = (_CALLS.value + 1) * _STEPS_PER_CALL.value
        config.log_every = 10**9
        config.export = False
        with tempfile.TemporaryDirectory(prefix="w2v_bench_acc_") as workdir:
            final = trainer.train_and_evaluate(config, workdir)
        steps = int(final["step"])
        wall = final["train/loop_wall_s"]
        rows.append(
            {
                "batch_size": b,
                "steps": steps,
                "words_per_s": final["train/words_per_s"],
                "loop_wall_s": wall,
                "ms_per_step_incl_compile": 1e3 * wall / steps,
                "tokens": int(final["train/tokens"]),
            }
        )
        print(
            f"B={b:>7,}: {final['train/words_per_s']:>12,.0f} words/s "
            f"({steps} steps, loop {wall:.1f} s incl. compile)",
            file=sys.stderr,
        )
    result = {
        "device": str(jax.devices()[0]),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "gpu_ftz_atomics": _FTZ.value,
        "config": {k: _CONFIG.value[k].to_dict() for k in ("loss", "optimizer")},
        "rows": rows,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    cli.run(main)  # one-line errors, tracebacks with --verbose
