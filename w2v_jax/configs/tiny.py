"""A shrunken synthetic run for tests: a few hundred steps at most, seconds on a CPU."""

from w2v_jax.configs import synthetic


def get_config():
    config = synthetic.get_config()  # word2vec's estimator, subsampling off, window 2
    config.synthetic.vocab_size = 60
    config.synthetic.rank = 4
    config.synthetic.num_tokens = 6_000
    config.synthetic.heldout_tokens = 1_000
    config.synthetic.sentence_length = 200
    config.dim = 8
    config.epochs = 2
    config.batch_size = 64
    config.steps_per_call = 1  # so pmap/mesh overrides work; scan is tested explicitly
    config.log_every = 10
    config.checkpoint_every = 20
    config.eval.heldout_batches = 4
    config.prefetch = 0
    return config
