"""Skip-gram negative sampling on wiki-60m (60M tokens of 2015 English Wikipedia).

Needs ``wiki-60m.txt.gz`` in ``$W2V_DATA_DIR``; the first run encodes and caches it
(about 25 s), later runs load the cache in a fraction of a second.

  python -m w2v_jax.main --config=w2v_jax/configs/wiki60m.py --workdir=/tmp/wiki60m

Measured result: see README "Results on real corpora".
"""

from w2v_jax.configs import default


def get_config():
    config = default.get_config()
    config.corpus.name = "wiki-60m"
    config.epochs = 1
    config.eval_every = 20_000
    config.checkpoint_every = 10_000
    config.log_every = 1_000
    return config
