"""Skip-gram negative sampling on wiki-60m (60M tokens of 2015 English Wikipedia).

Needs ``wiki-60m.txt.gz`` in ``$W2V_DATA_DIR``; the first run encodes and caches it,
later runs load the cache in a fraction of the time.

  python -m w2v_jax.main --config=w2v_jax/configs/wiki60m.py --workdir=/tmp/wiki60m

What to expect (wall time, memory, analogy, WordSim-353, held-out NLL):
docs/performance.md, "The configs".
"""

from w2v_jax.configs import default


def get_config():
    config = default.get_config()
    config.corpus.name = "wiki-60m"
    config.epochs = 1
    return config
