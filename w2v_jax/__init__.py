"""w2v_jax: word2vec in JAX with five output layers compared against the exact softmax.

Shape letters used throughout the package:
  B batch rows, C context slots per row, D embedding dim, V vocabulary size,
  K negative/noise samples, L Huffman code length (tree depth), N corpus tokens,
  S sentences.
"""

__version__ = "0.1.0"


def load(run_dir):
    """A finished run as a Flax NNX module (`run.trained.Word2Vec`): ``.embed`` is an
    `nnx.Embed` [V, D] of its exported word vectors in ``.vocab`` order, ``.inputs`` and
    ``.output`` its input and output vectors (``.nodes`` for hierarchical softmax).
    One-line `errors.RunFolderError` for a folder that holds no finished run."""
    from w2v_jax.run import trained  # Flax and the run's modules only when asked for

    return trained.load(run_dir)
