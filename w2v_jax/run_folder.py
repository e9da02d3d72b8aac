"""A finished run folder read back: its config, its data and its trained parameters.

The analysis scripts of ``experiments/`` (PMI shift, gradient bias) start from a run
folder written by `trainer.train_and_evaluate` (``config.json`` + ``checkpoint.npz``).
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import NamedTuple

import jax
import ml_collections

from w2v_jax import checkpoint, settings
from w2v_jax.configs import default
from w2v_jax.data import sources
from w2v_jax.step import update


class Run(NamedTuple):
    config: ml_collections.ConfigDict
    data: sources.Data  # the corpus, its held-out text and (synthetic) the truth
    state: update.TrainState  # host arrays, as the last checkpoint saved them


def _merge(base: dict, stored: dict) -> dict:
    out = dict(base)
    for key, value in stored.items():
        nested = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = _merge(base[key], value) if nested else value
    return out


def read_config(run_dir: str | os.PathLike) -> ml_collections.ConfigDict:
    """The run's ``config.json`` over today's defaults: a field added since the run was
    made takes its default, which keeps the behaviour the run had."""
    path = pathlib.Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; pass a folder written by w2v_jax.main")
    stored = json.loads(path.read_text())
    return ml_collections.ConfigDict(_merge(default.get_config().to_dict(), stored))


def load_run(run_dir: str | os.PathLike) -> Run:
    """The config, the data (from the corpus cache) and the checkpointed state of a run."""
    config = read_config(run_dir)
    path = checkpoint.path_in(run_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; the run has not saved a checkpoint yet")
    dataset = sources.load(config)
    cfg = settings.step_config(config)
    vocab_size = len(dataset.train.vocab)
    template = jax.device_get(
        update.init_state(jax.random.PRNGKey(0), vocab_size, config.dim, cfg, config.loss.use_bias)
    )
    state, _ = checkpoint.load(path, template)
    return Run(config, dataset, state)
