"""Command line: ``python -m w2v_jax.main --config=w2v_jax/configs/synthetic.py --workdir=DIR``.

Any config field can be overridden, e.g. ``--config.loss.name=nce --config.loss.k=25``.
Re-running with the same ``--workdir`` resumes from its checkpoint (or says the run is
finished). A mistake is one line on stderr and exit status 1; Ctrl-C or SIGTERM saves a
checkpoint and exits with 130 or 143 (`cli`). ``--verbose`` shows tracebacks.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from w2v_jax import cli, run_folder, trainer

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file (w2v_jax/configs/*.py).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, vectors.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    result = trainer.train_and_evaluate(cli.load_config(_CONFIG), _WORKDIR.value)
    logging.info("%s", run_folder.summary(_WORKDIR.value, result))


if __name__ == "__main__":
    cli.run(main)
