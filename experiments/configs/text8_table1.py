"""Claim 2 (Mikolov et al., 2013b, Table 1): skip-gram NEG-k / HS / NCE-k on text8-head.

300-d skip-gram, window 5, no subsampling here (``sample=0``; add ``--config.sample=1e-5``
for the paper's subsampled rows); analogy accuracy with the 30k-word cap (eval.restrict_vocab)
needs ``questions-words.txt`` next to ``text8-head.txt.gz`` in $W2V_DATA_DIR.

  python experiments/sweep_k.py --config=experiments/configs/text8_table1.py \
      --workdir=runs/claim2_nosub --points=neg:5,neg:15,hs,nce:5 --seeds=0

Expected results: to be measured (experiments/README.md).
"""

from w2v_jax.configs import text8_head


def get_config():
    config = text8_head.get_config()
    config.model = "skipgram"
    config.dim = 300
    config.window = 5
    config.sample = 0.0
    config.epochs = 3  # 3 x 2.1M tokens: all eight Table-1 points fit in ~30 min here
    config.eval.restrict_vocab = 30_000
    return config
