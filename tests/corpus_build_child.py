"""A process of test_corpus_build's shared-build test, kept apart so that a spawned child
imports only the data modules (not JAX, as the test module does)."""

import hashlib
import os
import time

import numpy as np

from w2v_jax.data import corpus, readers


def digest(c: corpus.Corpus) -> str:
    """A short hash of a corpus's ids, offsets and vocabulary."""
    h = hashlib.sha256()
    h.update(c.ids.dtype.str.encode() + bytes(np.ascontiguousarray(c.ids)))
    h.update(c.offsets.dtype.str.encode() + bytes(np.ascontiguousarray(c.offsets)))
    h.update(repr((c.vocab.words, c.vocab.counts.tolist())).encode())
    return h.hexdigest()[:16]


def load(path, cache_dir, marker, barrier, results) -> None:
    """Loads ``path`` after the barrier; each build it starts appends a line to ``marker``
    and takes at least a second, so an unlocked twin would start its own build too."""
    real = readers.read_tokens

    def slow_read(*args, **kwargs):
        with open(marker, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(1.0)
        return real(*args, **kwargs)

    readers.read_tokens = slow_read
    barrier.wait(timeout=60)
    c = corpus.load_corpus(path, split="train", min_count=1, cache_dir=cache_dir)
    results.put((os.getpid(), digest(c)))
