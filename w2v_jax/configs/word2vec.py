"""word2vec's own estimator: 32-row sequential SGD steps with per-pair negatives.

The original training of word2vec C and gensim: plain SGD on the summed loss, α = 0.025
decayed linearly to 1e-4, K independent negatives for every (centre, pair), the centre's
vector as the input of a skip-gram pair, and steps of 32 rows run 32 per jitted call
(`lax.scan`), each seeing the parameters its predecessor wrote. Exact but slow; the
project's default (configs/default.py) trains with large sparse-AdaGrad steps instead
(docs/performance.md, "Large-batch training").

  python -m w2v_jax.main --config=w2v_jax/configs/word2vec.py --workdir=/tmp/w2v_text8_head

The small-corpus configs of the study (synthetic, tiny, ptb) start from this one, so the
claims measured with it reproduce from the same commands.
"""

from w2v_jax.configs import default


def original(config):
    """``config`` with word2vec's small-step SGD estimator; returns it."""
    config.optimizer.name = "sgd"
    config.optimizer.sparse = True
    config.optimizer.duplicate_power = 0.0
    config.optimizer.alpha = 0.025
    config.optimizer.min_alpha = 1e-4
    config.batch_size = 32
    config.steps_per_call = 32
    config.loss.share = "pair"
    config.loss.skipgram_input = "centre"
    config.input.mode = "host"
    config.vectors = "input"  # word2vec C exports its input vectors
    return config


def get_config():
    return original(default.get_config())


def overrides() -> list[str]:
    """``key=value`` items that turn the default config into this one, e.g. for
    ``experiments/benchmark.py --ours_overrides`` (only the fields `original` changes)."""

    from w2v_jax import resume  # here, so loading a config file stays light

    base = resume.flatten(default.get_config().to_dict())
    mine = resume.flatten(get_config().to_dict())
    return [f"{key}={value}" for key, value in mine.items() if base[key] != value]
