"""Command line: ``python -m w2v_jax.main --config=w2v_jax/configs/synthetic.py --workdir=DIR``.

Any config field can be overridden, e.g. ``--config.loss.name=nce --config.loss.k=25``.
Re-running with the same ``--workdir`` resumes from its checkpoint.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from w2v_jax import trainer

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file (w2v_jax/configs/*.py).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, vectors.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    try:
        result = trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
        # One line naming the problem and the fix; the checkpoint on disk stays intact.
        sys.stderr.write(f"error: {e}\n")
        sys.exit(1)
    logging.info("final metrics: %s", result)


if __name__ == "__main__":
    app.run(main)
