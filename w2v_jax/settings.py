"""Config validation (one line naming the field and the allowed values) and the
translation of a ConfigDict into the static `update.StepConfig`.

Every check here runs before any data is read or any array is allocated, except
`validate_against_corpus`, which runs right after the corpus is loaded.
"""

from __future__ import annotations

import math

import numpy as np

from w2v_jax.data import corpus, input_pipeline
from w2v_jax.model import output_layers, word2vec
from w2v_jax.step import update

LAYOUTS = ("grouped", "pairs")
SHARES = ("pair", "row", "block")
SKIPGRAM_INPUTS = ("centre", "context")


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"config.{name}={value!r} is not allowed; use one of {list(allowed)}")


def _at_least(name: str, value, low) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= low:
        raise ValueError(f"config.{name}={value!r} must be a number >= {low}")


def validate(config) -> None:
    """Raises ValueError naming the first invalid field and its allowed values."""
    _choice("model", config.model, word2vec.MODELS)
    _choice("loss.name", config.loss.name, sorted(output_layers.NAMES))
    _choice("optimizer.name", config.optimizer.name, update.OPTIMIZERS)
    _choice("layout", config.layout, LAYOUTS)
    _choice("loss.share", config.loss.share, SHARES)
    _choice("loss.skipgram_input", config.loss.skipgram_input, SKIPGRAM_INPUTS)
    _choice("parallel.mode", config.parallel.mode, update.PARALLEL)
    for name in (
        "dim",
        "window",
        "batch_size",
        "epochs",
        "log_every",
        "checkpoint_every",
        "steps_per_call",
    ):
        _at_least(name, config[name], 1)
    _at_least("loss.k", config.loss.k, 1)
    _at_least("loss.block_size", config.loss.block_size, 1)
    _at_least("corpus.min_count", config.corpus.min_count, 1)
    for name in ("sample", "eval_every", "max_steps", "shuffle_buffer", "prefetch", "max_loss"):
        _at_least(name, config[name], 0)
    _at_least("loss.chunk_size", config.loss.chunk_size, 0)
    _at_least("corpus.max_vocab_size", config.corpus.max_vocab_size, 0)
    _at_least("parallel.num_devices", config.parallel.num_devices, 0)
    _at_least("parallel.model_axis", config.parallel.model_axis, 1)
    if not (isinstance(config.optimizer.alpha, float) and config.optimizer.alpha > 0):
        raise ValueError(f"config.optimizer.alpha={config.optimizer.alpha!r} must be > 0")
    _at_least("optimizer.min_alpha", config.optimizer.min_alpha, 0.0)
    _at_least("optimizer.duplicate_power", config.optimizer.duplicate_power, 0.0)
    if config.optimizer.duplicate_power and not (
        config.optimizer.name == "sgd" and config.optimizer.sparse
    ):
        raise ValueError(
            "config.optimizer.duplicate_power needs the sparse SGD update "
            "(optimizer.name='sgd', optimizer.sparse=True); set it to 0"
        )
    if not math.isfinite(config.loss.ns_exponent):
        raise ValueError(f"config.loss.ns_exponent={config.loss.ns_exponent!r} must be finite")
    if config.corpus.name != "synthetic":
        ptb_splits = corpus.PTB_SPLITS[1:] if config.corpus.name == "ptb" else ()
        _choice("corpus.heldout", config.corpus.heldout, ("", "heldout", *ptb_splits))
    if config.steps_per_call > 1 and config.parallel.mode == "pmap":
        raise ValueError(
            f"config.steps_per_call={config.steps_per_call} needs parallel.mode 'single' or "
            "'mesh'; use steps_per_call=1 with pmap"
        )
    if config.layout == "pairs" and config.model != "skipgram":
        raise ValueError("config.layout='pairs' needs config.model='skipgram'; use 'grouped'")
    if config.loss.share == "block" and config.batch_size % config.loss.block_size:
        raise ValueError(
            f"config.batch_size={config.batch_size} must be a multiple of "
            f"config.loss.block_size={config.loss.block_size} when loss.share='block'"
        )
    if config.parallel.mode == "pmap" and config.parallel.num_devices:
        if config.batch_size % config.parallel.num_devices:
            raise ValueError(
                f"config.batch_size={config.batch_size} must be divisible by "
                f"parallel.num_devices={config.parallel.num_devices} under pmap"
            )


def expected_rows_per_epoch(config, corpus) -> float:
    """Expected batch rows per epoch: kept centre words (grouped) or kept pairs."""
    counts = corpus.vocab.counts
    kept = float(np.sum(counts * input_pipeline.keep_probabilities(counts, config.sample)))
    if config.layout == "grouped":
        return kept
    mean_window = (config.window + 1) / 2 if config.dynamic_window else config.window
    return kept * (mean_window if config.left_only else 2 * mean_window)


def validate_against_corpus(config, corpus) -> None:
    rows = expected_rows_per_epoch(config, corpus)
    per_call = config.batch_size * config.steps_per_call
    if per_call > rows:
        raise ValueError(
            f"config.batch_size={config.batch_size} x steps_per_call={config.steps_per_call} "
            f"= {per_call} rows is larger than the ~{rows:.0f} rows one epoch of this corpus "
            f"yields; lower batch_size or steps_per_call (or sample={config.sample})"
        )


def step_config(config) -> update.StepConfig:
    return update.StepConfig(
        model=config.model,
        loss=config.loss.name,
        k=config.loss.k,
        share=config.loss.share,
        block_size=config.loss.block_size,
        chunk_size=config.loss.chunk_size or None,
        remove_accidental_hits=config.loss.remove_accidental_hits,
        cbow_mean=config.cbow_mean,
        cbow_exact_grad=config.cbow_exact_grad,
        left_only=config.left_only,
        skipgram_input=config.loss.skipgram_input,
        optimizer=config.optimizer.name,
        sparse=config.optimizer.sparse,
        duplicate_power=float(config.optimizer.duplicate_power),
    )
