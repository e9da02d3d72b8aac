"""Skip-gram negative sampling on the Penn Treebank (Mikolov's LM splits, 10k words).

Lines are sentences with ``<eos>``; the held-out text is ``ptb.valid.txt``. PTB is
already capped at 10k words with ``<unk>``, so ``min_count`` is 1.

  python -m w2v_jax.main --config=w2v_jax/configs/ptb.py --workdir=/tmp/ptb

Measured (2-core CPU, 2026-11-21): 54 s wall (95k words/s over 5 epochs); held-out
(ptb.valid) skip-gram NLL 8.53 nats under the full softmax, log Z 7.2 (negative sampling
does not self-normalise); analogy 2.7% on the 24% of questions PTB's vocabulary covers,
WordSim-353 Spearman 0.165.
"""

from w2v_jax.configs import default


def get_config():
    config = default.get_config()
    config.corpus.name = "ptb"
    config.corpus.min_count = 1
    config.epochs = 5
    return config
