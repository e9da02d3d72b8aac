"""Claim 1 at full fidelity: Mnih & Teh's log-bilinear language model on the Penn Treebank.

The model of the paper (``model = "lbl"``): a 2-word left context (a trigram model),
separate context and target tables, a full 100 × 100 matrix C_i per context position,
per-word output biases (starting at the log unigram probabilities, so Z ≈ 1 at step 0),
unigram noise (``ns_exponent = 1``), no subsampling; trained with the project's
large-batch default (sparse AdaGrad) for enough epochs to converge, and scored by exact
test perplexity (``ptb.test.txt``) with log Z's spread beside it. The summed-context model
of the first reproduction is `ptb_lbl.py`.

  python experiments/sweep_k.py --config=experiments/configs/ptb_lbl_full.py \
      --workdir=runs/claim1_lbl --losses=softmax,nce --ks=5,25,100 --seeds=0

Measured (test perplexity after early stopping on validation): experiments/README.md, claim 1;
the one command is experiments/claim1_lbl.py.
"""

from w2v_jax.configs import default


def get_config():
    config = default.get_config()
    config.corpus.name = "ptb"
    config.corpus.min_count = 1  # PTB is already capped at 10k words with <unk>
    config.corpus.heldout = "test"  # Mnih & Teh report test perplexity
    config.eval.heldout_batches = 100_000  # all of the split
    config.model = "lbl"
    config.lbl.context_matrices = "full"
    config.lbl.bias_init = "unigram"
    config.left_only = True  # the previous words only
    config.window = 2  # n - 1: a trigram model, as the paper's PTB runs
    config.dynamic_window = False  # always both words (word2vec samples 1..window)
    config.sample = 0.0  # a language model sees the text as it is
    config.dim = 100
    config.loss.ns_exponent = 1.0  # unigram noise, as the paper
    config.loss.share = "pair"  # each example its own k noise samples (the paper's NCE)
    config.epochs = 10
    config.eval_every = 900  # about once per epoch (~910 steps): the convergence curve
    config.batch_size = 1024
    config.optimizer.alpha = 0.1
    return config
