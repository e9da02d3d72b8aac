"""TensorBoard event files beside ``metrics.jsonl`` (``config.tensorboard=True``).

Every row `run_folder.MetricsLog` appends to ``metrics.jsonl`` is also written, one
scalar per numeric key at the row's step, to ``<run folder>/tensorboard/``; the JSON
lines stay the source of truth (notebooks, sweeps and plots read them). A sweep's points
are run folders under the sweep's folder, so ``tensorboard --logdir=SWEEP_DIR`` shows
each point as its own run. A resumed run starts a new event file with a purge at the
step after its checkpoint, so TensorBoard drops what the stopped run logged past it, as
``metrics.jsonl`` does.

The writer is tensorboardX (no TensorFlow), an optional extra: ``pip install -e
.[tensorboard]``; `settings` refuses the switch in one line when it is not installed.
Imports `errors` only.
"""

from __future__ import annotations

import importlib.util
import numbers
import os
import pathlib

from w2v_jax import errors

FOLDER = "tensorboard"  # under the run folder
INSTALL = "pip install -e .[tensorboard]"


def check_installed() -> None:
    """One-line `errors.ConfigError` when tensorboardX cannot be imported."""
    if importlib.util.find_spec("tensorboardX") is None:
        raise errors.ConfigError(
            f"--config.tensorboard=True needs tensorboardX, which is not installed: {INSTALL}"
        )


class Writer:
    """The event files of one run folder; `write` takes `MetricsLog`'s rows."""

    def __init__(self, workdir: str | os.PathLike, resume_step: int = 0):
        check_installed()
        from tensorboardX import SummaryWriter  # the optional extra, imported when asked for

        self.path = pathlib.Path(workdir) / FOLDER
        purge = resume_step + 1 if resume_step else None  # drop a stopped run's later rows
        # Numbered, so a writer opened in the same second as the last one (named by the
        # second) starts a new file instead of overwriting it; TensorBoard reads them in
        # name order.
        opened = len(list(self.path.glob("events.out.tfevents.*")))
        self._writer = SummaryWriter(
            logdir=str(self.path), purge_step=purge, filename_suffix=f".{opened:04d}"
        )

    def write(self, step: int, row: dict) -> None:
        """One scalar per numeric value of ``row`` (booleans and text skipped), flushed,
        so the event file is as current as ``metrics.jsonl``."""
        for key, value in row.items():
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                self._writer.add_scalar(key, float(value), int(step))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
