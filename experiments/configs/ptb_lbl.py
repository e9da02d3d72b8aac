"""Claim 1 (Mnih & Teh, 2012): a log-bilinear n-gram language model on the Penn Treebank.

CBOW with a left-only, fixed context of the n-1 previous words (``window = n - 1``;
n = 3 here), summed (``cbow_mean=False``), no subsampling, 100-d vectors. Every loss is
scored by the exact NLL / perplexity of the next word on ``ptb.test.txt`` (the paper's
split; ``--config.corpus.heldout=valid`` for the validation text) under the model's full
softmax (``eval/heldout_nll``, ``eval/heldout_ppl``) and its self-normalisation
(``eval/log_z_mean``), on the whole split. Needs ``ptb.*.txt`` in $W2V_DATA_DIR.

  python experiments/sweep_k.py --config=experiments/configs/ptb_lbl.py \
      --workdir=runs/claim1_ptb --losses=softmax,sampled_softmax,nce,neg \
      --ks=1,5,25,100 --seeds=0,1

Other n: ``--config.window=<n-1>``. Measured (2-core CPU, 2026-11-21, mean of seeds 0 and
1): test perplexity softmax 209.1 (~300 s); NCE 336.5 / 255.1 / 245.6 / 251.7 at
k = 1 / 5 / 25 / 100 (log Z 0.33 → −0.29), sampled softmax 311.1 → 214.7, negative
sampling 1,739 → 1,044 (experiments/results/claim1_ptb/).
"""

from w2v_jax.configs import ptb


def get_config():
    config = ptb.get_config()
    config.model = "cbow"
    config.left_only = True  # contexts are the previous `window` words only
    config.dynamic_window = False  # always exactly n-1 words (word2vec samples 1..window)
    config.window = 2  # n - 1: a trigram model
    config.sample = 0.0  # a language model sees the text as it is
    config.cbow_mean = False  # sum the context vectors
    config.dim = 100
    # Steps stay at the default 32 rows (32 per call): at 1024-row steps and alpha 0.025
    # the full softmax, which updates every output row with the whole step's gradient,
    # went non-finite within 60 steps (see docs/training.md, "Batching").
    config.corpus.heldout = "test"  # Mnih & Teh report test perplexity
    config.eval.heldout_batches = 100_000  # all of the held-out split, not the first 50
    return config
