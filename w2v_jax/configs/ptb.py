"""Skip-gram negative sampling on the Penn Treebank (Mikolov's LM splits, 10k words).

Lines are sentences with ``<eos>``; the held-out text is ``ptb.valid.txt``. PTB is
already capped at 10k words with ``<unk>``, so ``min_count`` is 1.

  python -m w2v_jax.main --config=w2v_jax/configs/ptb.py --workdir=/tmp/ptb

What to expect (wall time, held-out NLL and log Z, analogy, WordSim-353):
docs/performance.md, "The configs".
"""

from w2v_jax.configs import word2vec


def get_config():
    config = word2vec.get_config()  # word2vec's estimator
    config.corpus.name = "ptb"
    config.corpus.min_count = 1
    config.epochs = 5
    return config
