"""Skip-gram negative sampling on text8-head (the first 2.1M tokens of text8).

gensim's benchmark settings (issue 7): negative 5, window 5, dim 100, sample 1e-3,
min_count 5, 5 epochs. Needs ``text8-head.txt.gz`` in ``$W2V_DATA_DIR``.

  python -m w2v_jax.main --config=w2v_jax/configs/text8_head.py --workdir=/tmp/text8_head

The default's large-batch AdaGrad on it: 10.7% analogy and WS353 0.604 after 5 epochs
(gensim, same settings: 8.2% and 0.471); against gensim's time, docs/performance.md,
"Time to quality against gensim".
"""

from w2v_jax.configs import default


def get_config():
    config = default.get_config()
    config.corpus.name = "text8-head"
    return config
