r"""Throughput of the host input pipeline (one core, NumPy): skip-gram pairs per second.

Loads a corpus with `corpus.load_corpus`, runs `input_pipeline.iterate_batches` over
``--epochs`` epochs ``--repeats`` times, and reports the median. A "pair" is one valid
(centre, context) slot, so the figure is comparable between the two layouts. Loading and
vocabulary building are not timed.

  W2V_DATA_DIR=../shared/data python experiments/bench_pipeline.py --layout=pairs

The last stdout line is one JSON object: pairs_per_s, tokens_per_s, layout, window, sample,
tokens (raw tokens per epoch), pairs (per epoch), batches, seconds (median, all epochs).
Target (CPU notes): at least 10M pairs/s on text8-head with window 5, sample 1e-3.
"""

import json
import os
import statistics
import time

import numpy as np
from absl import flags

from w2v_jax import cli
from w2v_jax.data import corpus, input_pipeline

_CORPUS = flags.DEFINE_string("corpus", "text8-head", "Corpus name for corpus.load_corpus.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", os.environ.get("W2V_DATA_DIR"), "Directory of the corpora (W2V_DATA_DIR)."
)
_WINDOW = flags.DEFINE_integer("window", 5, "Maximum window.")
_SAMPLE = flags.DEFINE_float("sample", 1e-3, "Subsampling threshold t (0 = off).")
_LAYOUT = flags.DEFINE_enum("layout", "pairs", list(input_pipeline.LAYOUTS), "Batch layout.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 4096, "Rows per batch.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats; the median is reported.")
_EPOCHS = flags.DEFINE_integer("epochs", 1, "Epochs per repeat.")
_DYNAMIC = flags.DEFINE_bool("dynamic_window", True, "word2vec's random effective window.")
_SHUFFLE = flags.DEFINE_integer("shuffle_buffer", 0, "Shuffle buffer in rows (0 = off).")
_CHUNK = flags.DEFINE_integer("chunk_tokens", 1 << 16, "Tokens per independently seeded chunk.")


def run_once(data) -> tuple[float, int, int]:
    """One timed pass: (seconds, valid pairs, batches)."""
    items = input_pipeline.iterate_batches(
        data.ids,
        data.offsets,
        data.vocab.counts,
        layout=_LAYOUT.value,
        batch_size=_BATCH_SIZE.value,
        window=_WINDOW.value,
        sample=_SAMPLE.value,
        seed=0,
        epochs=_EPOCHS.value,
        dynamic_window=_DYNAMIC.value,
        shuffle_buffer=_SHUFFLE.value,
        chunk_tokens=_CHUNK.value,
    )
    pairs = batches = 0
    start = time.perf_counter()
    for item in items:
        pairs += int(np.count_nonzero(item.batch.mask))
        batches += 1
    return time.perf_counter() - start, pairs, batches


def main(argv) -> None:
    del argv
    data = corpus.load_corpus(_CORPUS.value, data_dir=_DATA_DIR.value)
    tokens = int(data.ids.shape[0])
    runs = [run_once(data) for _ in range(_REPEATS.value)]
    seconds = statistics.median(r[0] for r in runs)
    _, pairs, batches = runs[0]
    result = {
        "corpus": _CORPUS.value,
        "layout": _LAYOUT.value,
        "window": _WINDOW.value,
        "sample": _SAMPLE.value,
        "dynamic_window": _DYNAMIC.value,
        "batch_size": _BATCH_SIZE.value,
        "shuffle_buffer": _SHUFFLE.value,
        "epochs": _EPOCHS.value,
        "tokens": tokens,
        "pairs": pairs // _EPOCHS.value,
        "batches": batches,
        "seconds": round(seconds, 4),
        "pairs_per_s": round(pairs / seconds),
        "tokens_per_s": round(tokens * _EPOCHS.value / seconds),
    }
    print(f"{'repeat':>6} {'seconds':>8} {'M pairs/s':>10}")
    for i, (s, p, _) in enumerate(runs):
        print(f"{i:>6} {s:>8.3f} {p / s / 1e6:>10.1f}")
    print(
        f"median {seconds:.3f}s: {result['pairs_per_s'] / 1e6:.1f}M pairs/s, "
        f"{result['tokens_per_s'] / 1e6:.1f}M tokens/s ({pairs / _EPOCHS.value / tokens:.2f} "
        f"pairs per token, {_LAYOUT.value}, window {_WINDOW.value}, sample {_SAMPLE.value})"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    cli.run(main)  # one-line errors, tracebacks with --verbose
