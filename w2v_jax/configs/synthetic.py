"""The embedded default: skip-gram + negative sampling on the synthetic Markov corpus.

No download; every loss can be compared with the true distribution (see synthetic.py).

  python -m w2v_jax.main --config=w2v_jax/configs/synthetic.py --workdir=/tmp/w2v_run

What to expect (wall time, held-out NLL against the entropy floor, KL to the true
conditional, log Z): docs/performance.md, "The configs".
"""

from w2v_jax.configs import word2vec


def get_config():
    config = word2vec.get_config()  # word2vec's estimator
    config.corpus.name = "synthetic"
    config.corpus.min_count = 1
    config.sample = 0.0  # subsampling off: the truth is exact only without it
    config.dim = 32
    config.window = 2
    config.epochs = 3
    return config
