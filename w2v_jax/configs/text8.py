"""Skip-gram negative sampling on the full text8 (17M tokens), word2vec's demo settings.

text8 is not shipped: the first run downloads text8.zip (31 MB, size and CRC-32 checked)
into the data directory because ``corpus.download`` is True here.

  python -m w2v_jax.main --config=w2v_jax/configs/text8.py --workdir=/tmp/text8

text8 is about 8x text8-head, so expect about 8x the text8_head.py time
(docs/performance.md, "The configs").
"""

from w2v_jax.configs import default


def get_config():
    config = default.get_config()
    config.corpus.name = "text8"
    config.corpus.download = True
    return config
