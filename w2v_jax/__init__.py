"""w2v_jax: word2vec in JAX with five output layers compared against the exact softmax.

Shape letters used throughout the package:
  B batch rows, C context slots per row, D embedding dim, V vocabulary size,
  K negative/noise samples, L Huffman code length (tree depth), N corpus tokens,
  S sentences.
"""

__version__ = "0.1.0"
