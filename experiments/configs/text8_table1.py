"""Claim 2 (Mikolov et al., 2013b, Table 1): skip-gram NEG-k / HS / NCE-k on text8-head.

300-d skip-gram, window 5, no subsampling here (``sample=0``; add ``--config.sample=1e-5``
for the paper's subsampled rows); analogy accuracy with the 30k-word cap (eval.restrict_vocab)
needs ``questions-words.txt`` next to ``text8-head.txt.gz`` in $W2V_DATA_DIR.

  python experiments/sweep_k.py --config=experiments/configs/text8_table1.py \
      --workdir=runs/claim2_nosub --points=neg:5,neg:15,hs,nce:5 --seeds=0

Measured (2-core CPU, 2026-11-21, experiments/results/claim2_text8_head/): analogy total
NEG-15 6.31% > NEG-5 5.72% > NCE-5 4.00% > HS 3.65% (HS with
``--config.optimizer.duplicate_power=1.0``; at 0 it diverged); subsampling at 1e-5 trains
3x faster but keeps 30% of this small corpus's tokens and loses accuracy.
"""

from w2v_jax.configs import text8_head, word2vec


def get_config():
    config = word2vec.original(text8_head.get_config())  # the estimator it was measured with
    config.model = "skipgram"
    config.dim = 300
    config.window = 5
    config.sample = 0.0
    config.epochs = 3  # 3 x 2.1M tokens: the eight Table-1 points took 19 min here
    config.eval.restrict_vocab = 30_000
    return config
