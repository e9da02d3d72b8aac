"""The one translation of a ConfigDict into typed, validated settings.

`resolve(config) -> Settings` checks every field (a one-line ValueError naming the field,
its value and the fix) and returns frozen settings for each part of a run: the step
(`update.StepConfig`), the pipeline (`input_pipeline.PipelineOptions`), the corpus
(`sources.CorpusOptions`), evaluation (`evaluator.EvalOptions`), parallelism
(`runners.ParallelOptions`) and the loop (`LoopSettings`). Library code takes these, never
the ConfigDict; only the trainer, this module and the sweep read ``config.*``.

Every check runs before any data is read or any array is allocated, except
`check_against_corpus`, which runs right after the corpus is loaded.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import jax

from w2v_jax import errors, evaluator
from w2v_jax.data import corpus, input_pipeline, sources, synthetic
from w2v_jax.model import output_layers, word2vec
from w2v_jax.parallel import distributed, placement
from w2v_jax.run import tensorboard
from w2v_jax.step import optimizers, runners, update

SHARES = ("pair", "row", "block")
SKIPGRAM_INPUTS = ("centre", "context")
INPUT_MODES = ("host", "device")
# The legacy names jax_default_matmul_precision accepts (jax 0.10.2 also takes
# lax.DotAlgorithmPreset names; not offered): float32 = highest, tensorfloat32 = high,
# bfloat16 = default (the backend's own choice).
MATMUL_PRECISIONS = ("float32", "highest", "tensorfloat32", "high", "bfloat16", "default")


def _existing_files(name: str, paths) -> None:
    """Evaluation files given explicitly must exist before any training ("" = none)."""
    for path in filter(None, paths):
        if not os.path.isfile(path):
            what = "a folder, not a file" if os.path.isdir(path) else "no such file"
            raise errors.ConfigError(f'--config.{name}={path!r}: {what}; fix the path or pass ""')


def validate(config) -> None:
    """Raises ValueError naming the first invalid field and its allowed values."""
    errors.choice("model", config.model, word2vec.MODELS)
    errors.choice("loss.name", config.loss.name, sorted(output_layers.NAMES))
    errors.choice("optimizer.name", config.optimizer.name, optimizers.OPTIMIZERS)
    errors.choice("layout", config.layout, input_pipeline.LAYOUTS)
    errors.choice("loss.share", config.loss.share, SHARES)
    errors.choice("loss.skipgram_input", config.loss.skipgram_input, SKIPGRAM_INPUTS)
    errors.choice("parallel.mode", config.parallel.mode, runners.PARALLEL)
    errors.choice("input.mode", config.input.mode, INPUT_MODES)
    errors.choice("vectors", config.vectors, output_layers.VECTORS)
    errors.at_least("input.device_memory_gib", config.input.device_memory_gib, 0.0)
    for name in (
        "dim",
        "window",
        "batch_size",
        "log_every",
        "checkpoint_every",
        "steps_per_call",
    ):
        errors.at_least(name, config[name], 1)
    errors.positive("epochs", config.epochs)
    errors.at_least("loss.k", config.loss.k, 1)
    errors.at_least("loss.block_size", config.loss.block_size, 1)
    errors.at_least("corpus.min_count", config.corpus.min_count, 1)
    errors.at_least("corpus.workers", config.corpus.workers, 0)
    for name in ("sample", "eval_every", "max_steps", "shuffle_buffer", "prefetch", "max_loss"):
        errors.at_least(name, config[name], 0)
    errors.at_least("checkpoint_every_secs", config.checkpoint_every_secs, 0)
    for name in ("resume_override", "deterministic", "tensorboard"):
        errors.boolean(name, config[name])
    if config.tensorboard:
        tensorboard.check_installed()
    errors.choice("matmul_precision", config.matmul_precision, MATMUL_PRECISIONS)
    _existing_files("eval.analogies", [config.eval.analogies])
    _existing_files("eval.similarity", config.eval.similarity.split(","))
    errors.at_least("loss.chunk_size", config.loss.chunk_size, 0)
    errors.at_least("corpus.max_vocab_size", config.corpus.max_vocab_size, 0)
    errors.at_least("parallel.num_devices", config.parallel.num_devices, 0)
    errors.at_least("parallel.model_axis", config.parallel.model_axis, 1)
    errors.positive("optimizer.alpha", config.optimizer.alpha)
    errors.at_least("optimizer.min_alpha", config.optimizer.min_alpha, 0.0)
    errors.at_least("optimizer.duplicate_power", config.optimizer.duplicate_power, 0.0)
    if config.optimizer.duplicate_power and not (
        config.optimizer.name == "sgd" and config.optimizer.sparse
    ):
        raise errors.ConfigError(
            "--config.optimizer.duplicate_power needs the sparse SGD update "
            "(optimizer.name='sgd', optimizer.sparse=True); set it to 0"
        )
    for name, usual in (("initial_accumulator", 0.1), ("eps", 1e-7)):
        errors.positive(f"optimizer.{name}", config.optimizer[name], usual)
    if config.optimizer.sparse and config.optimizer.name not in optimizers.SPARSE:
        raise errors.ConfigError(
            f"--config.optimizer.name={config.optimizer.name!r} has no sparse form; set "
            f"optimizer.sparse=False or use one of {list(optimizers.SPARSE)}"
        )
    _penalty(config.loss)
    _lbl(config)
    if not math.isfinite(config.loss.ns_exponent):
        raise errors.ConfigError(
            f"--config.loss.ns_exponent={config.loss.ns_exponent!r} must be finite"
        )
    if not str(config.corpus.name).strip():  # "" would read the current folder as a corpus
        raise errors.ConfigError(
            "--config.corpus.name is empty; pass synthetic, text8, text8-head, ptb, or a "
            "corpus file or folder"
        )
    if config.corpus.name != "synthetic":
        ptb_splits = corpus.PTB_SPLITS[1:] if config.corpus.name == "ptb" else ()
        errors.choice("corpus.heldout", config.corpus.heldout, ("", "heldout", *ptb_splits))
    if config.steps_per_call > 1 and config.parallel.mode == "pmap":
        raise errors.ConfigError(
            f"--config.steps_per_call={config.steps_per_call} needs parallel.mode 'single' or "
            "'mesh'; use steps_per_call=1 with pmap"
        )
    if config.layout == "pairs" and config.model != "skipgram":
        raise errors.ConfigError(
            "--config.layout='pairs' needs --config.model='skipgram'; use 'grouped'"
        )
    if config.loss.share == "block" and config.batch_size % config.loss.block_size:
        raise errors.ConfigError(
            f"--config.batch_size={config.batch_size} must be a multiple of "
            f"--config.loss.block_size={config.loss.block_size} when loss.share='block'"
        )
    if config.input.mode == "device":
        _device_input(config)
    if config.parallel.shard_vocab and config.parallel.mode != "mesh":
        raise errors.ConfigError(
            "--config.parallel.shard_vocab=True needs parallel.mode='mesh', not "
            f"{config.parallel.mode!r}"
        )
    distributed.check_processes(config, jax.process_count())  # several processes
    if config.parallel.mode == "pmap" and config.parallel.num_devices:
        if config.batch_size % config.parallel.num_devices:
            raise errors.ConfigError(
                f"--config.batch_size={config.batch_size} must be divisible by "
                f"parallel.num_devices={config.parallel.num_devices} under pmap"
            )


def _penalty(loss) -> None:
    """loss.penalty: a finite number >= 0 (softmax_penalty's weight, update.StepConfig)."""
    value = loss.penalty
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < math.inf:
        raise errors.ConfigError(
            f"--config.loss.penalty={value!r} must be a finite number >= 0 (the weight of "
            "Z - 1 - log Z; 0 is the plain softmax); e.g. --config.loss.penalty=1.0"
        )


def _lbl(config) -> None:
    """The log-bilinear model's options, and what it runs with so far."""
    errors.choice("lbl.context_matrices", config.lbl.context_matrices, word2vec.CONTEXT_MATRICES)
    errors.choice("lbl.bias_init", config.lbl.bias_init, LBL_BIAS_INIT)
    if config.model != "lbl":
        for name, default in (("context_matrices", "full"), ("bias_init", "zeros")):
            if config.lbl[name] != default:
                raise errors.ConfigError(
                    f"--config.lbl.{name}={config.lbl[name]!r} applies to model='lbl' only, "
                    f"not {config.model!r}; set model='lbl' or leave lbl.{name}={default!r}"
                )
        return
    if config.parallel.mode == "pmap" or config.parallel.shard_vocab:
        raise errors.ConfigError(
            "--config.model='lbl' runs with parallel.mode 'single' or 'mesh' (tables not "
            "sharded); its dense context matrices have no pmap path yet"
        )
    if config.lbl.bias_init == "unigram" and output_layers.get(config.loss.name).tree:
        raise errors.ConfigError(
            "--config.lbl.bias_init='unigram': loss 'hs' has no output biases; use 'zeros'"
        )


def _device_input(config) -> None:
    """What input.mode='device' (data/on_device.py) supports so far."""
    for name, value, need in (
        ("layout", config.layout, "grouped"),
        ("parallel.mode", config.parallel.mode, "single"),
    ):
        if value != need:
            raise errors.ConfigError(
                f"--config.input.mode='device' needs --config.{name}={need!r}, got {value!r}; "
                "set it or use input.mode='host'"
            )


class LoopSettings(NamedTuple):
    """What the training loop itself needs: schedule, bookkeeping, guards."""

    seed: int  # initialisation and the step's RNG
    dim: int  # embedding dimension D
    use_bias: bool  # output biases
    context_matrices: str  # lbl: "full" or "diagonal" C_i; "" for the other models
    bias_init: str  # "zeros" or "unigram" (log unigram probabilities; lbl)
    ns_exponent: float  # noise q ∝ count^ns_exponent
    epochs: float  # passes over the corpus; a fraction ends the last one early (`passes`)
    alpha: float  # initial learning rate
    min_alpha: float  # final learning rate (linear decay by words processed)
    log_every: int  # steps between metrics rows
    eval_every: int  # steps between evaluations; 0 = only at the end
    checkpoint_every: int  # steps between checkpoints
    checkpoint_every_secs: float  # seconds between checkpoints (as well); 0 = by steps only
    resume_override: bool  # resume even if epochs / alpha / min_alpha changed
    max_steps: int  # stop after the call that reaches this many steps; 0 = all epochs
    max_loss: float  # stop when a step's mean loss exceeds this; 0 = never
    export: bool  # write vectors and vocabulary at the end
    tensorboard: bool  # metrics rows to TensorBoard event files as well
    keep_freed_memory: bool  # glibc: keep memory XLA frees for reuse
    input_mode: str  # "host" (NumPy batches) or "device" (data/on_device.py draws them)
    device_memory_gib: float  # device mode: memory to assume free; 0 = ask the device


class Settings(NamedTuple):
    """Everything a run needs, typed and validated (see the module doc)."""

    step: update.StepConfig
    pipeline: input_pipeline.PipelineOptions
    corpus: sources.CorpusOptions
    evaluation: evaluator.EvalOptions
    parallel: runners.ParallelOptions
    loop: LoopSettings


def check_data(config) -> None:
    """Raises (one line) unless every file ``config`` reads is there: the corpus's training
    and held-out splits (`corpus.locate`; a corpus that ``corpus.download`` fetches, and
    the synthetic one, are not checked) and the evaluation files. Reads nothing: scripts
    that train many runs call it first, so missing data stops them before any training."""
    validate(config)
    c = config.corpus
    if c.name == "synthetic" or (c.name == "text8" and c.download):
        return
    for split in dict.fromkeys(["train", sources.heldout_split(c.name, c.heldout)]):
        if split:
            corpus.locate(c.name, split, c.data_dir or None)


def resolve(config) -> Settings:
    """Validates ``config`` (ValueError naming the first bad field) and translates it."""
    validate(config)
    c, s = config.corpus, config.synthetic
    spec = None
    if c.name == "synthetic":
        spec = synthetic.SyntheticSpec(
            vocab_size=s.vocab_size,
            rank=s.rank,
            num_tokens=s.num_tokens,
            zipf_exponent=s.zipf_exponent,
            scale=s.scale,
            seed=s.seed,
            sentence_length=s.sentence_length,
        )
    corpus_options = sources.CorpusOptions(
        name=c.name,
        data_dir=c.data_dir or None,
        cache_dir=c.cache_dir or None,
        workers=c.workers or None,
        download=c.download,
        min_count=c.min_count,
        max_vocab_size=c.max_vocab_size or None,
        max_sentence_length=c.max_sentence_length,
        heldout_split=sources.heldout_split(c.name, c.heldout),
        synthetic=spec,
        synthetic_heldout_tokens=s.heldout_tokens,
    )
    p = config.parallel
    parallel = runners.ParallelOptions(
        mode=p.mode,
        num_devices=p.num_devices,
        model_axis=p.model_axis,
        shard_vocab=p.shard_vocab,
        steps_per_call=config.steps_per_call,
    )
    if p.mode == "mesh":
        runners.mesh_shape(parallel, config.batch_size)  # one line if the mesh cannot be
    share, shares = 0, 1
    if p.mode == "mesh" and jax.process_count() > 1:
        mesh = placement.make_mesh(jax.device_count(), p.model_axis)
        share, shares = placement.input_share(mesh)
    pipeline = input_pipeline.PipelineOptions(
        layout=config.layout,
        # Each process reads its share of the corpus and batches only its devices' rows
        # (runners.local_rows); the shares' batches together are the step's.
        rows_per_call=config.batch_size * config.steps_per_call // shares,
        window=config.window,
        sample=config.sample,
        dynamic_window=config.dynamic_window,
        left_only=config.left_only,
        shuffle_buffer=config.shuffle_buffer,
        prefetch=config.prefetch,
        seed=config.seed,
        epochs=passes(config.epochs),
        process_index=share,
        process_count=shares,
    )
    evaluation = evaluator.EvalOptions(
        analogies=config.eval.analogies,
        similarity=tuple(p for p in config.eval.similarity.split(",") if p),
        restrict_vocab=config.eval.restrict_vocab,
        heldout_batches=config.eval.heldout_batches,
        vectors=config.vectors,
    )
    loop = LoopSettings(
        seed=config.seed,
        dim=config.dim,
        use_bias=uses_bias(config),
        context_matrices=config.lbl.context_matrices if config.model == "lbl" else "",
        bias_init=config.lbl.bias_init,
        ns_exponent=float(config.loss.ns_exponent),
        epochs=float(config.epochs),
        alpha=config.optimizer.alpha,
        min_alpha=config.optimizer.min_alpha,
        log_every=config.log_every,
        eval_every=config.eval_every,
        checkpoint_every=config.checkpoint_every,
        checkpoint_every_secs=float(config.checkpoint_every_secs),
        resume_override=config.resume_override,
        max_steps=config.max_steps,
        max_loss=config.max_loss,
        export=config.export,
        tensorboard=config.tensorboard,
        keep_freed_memory=config.keep_freed_memory,
        input_mode=config.input.mode,
        device_memory_gib=float(config.input.device_memory_gib),
    )
    return Settings(step_config(config), pipeline, corpus_options, evaluation, parallel, loop)


LBL_BIAS_INIT = ("zeros", "unigram")


def passes(epochs: float) -> int:
    """Passes over the corpus the input reads for ``epochs`` (2.5: 3, the last cut at half
    way: the run ends once its planned tokens, epochs × N, are processed)."""
    return math.ceil(epochs)


def ends_part_way(epochs: float) -> bool:
    """Whether ``epochs`` is a fraction: the last pass stops once epochs × N words are in."""
    return epochs != passes(epochs)


def uses_bias(config) -> bool:
    """Output biases: ``loss.use_bias``, or always for the log-bilinear model (when its
    layer has biases: not the tree's inner nodes)."""
    implied = config.model == "lbl" and output_layers.get(config.loss.name).biases
    return bool(config.loss.use_bias or implied)


def check_against_corpus(settings: Settings, train: corpus.Corpus) -> None:
    """Raises ValueError when one call's rows exceed what an epoch of ``train`` yields, a
    sampled layer's k exceeds the vocabulary, or the run's steps would reach 2^31 − 1 (the
    step counter and ``fold_in(key, step)`` are int32)."""
    vocab_size, k = len(train.vocab), settings.step.k
    if output_layers.get(settings.step.loss).sampled and k > vocab_size:
        raise errors.ConfigError(
            f"--config.loss.k={k} is larger than the vocabulary ({vocab_size:,} words): the "
            "noise samples would repeat every word; lower loss.k"
        )
    options = settings.pipeline
    rows = input_pipeline.expected_rows_per_epoch(options, train.vocab.counts)
    call = options.rows_per_call * options.process_count  # every share's rows of a call
    if call > rows:
        s = settings.parallel
        raise errors.ConfigError(
            f"--config.batch_size={call // s.steps_per_call} x "
            f"steps_per_call={s.steps_per_call} = {call} rows is larger than "
            f"the ~{rows:.0f} rows one epoch of this corpus yields; lower batch_size or "
            f"steps_per_call (or sample={options.sample})"
        )
    # The planned steps, from the expected rows (a call's rounding as margin): the step
    # counter and fold_in(key, step) are int32, so refuse before anything is allocated.
    s, loop = settings.parallel, settings.loop
    batch = call // s.steps_per_call
    per_epoch = math.ceil(rows / batch) + s.steps_per_call
    steps = math.ceil(loop.epochs * per_epoch)
    if loop.max_steps:
        steps = min(steps, loop.max_steps + s.steps_per_call - 1)
    if steps >= 2**31 - 1:
        raise errors.ConfigError(
            f"--config.epochs={loop.epochs} x ~{per_epoch:,} steps per epoch (batch_size="
            f"{batch}) reaches {steps:,} steps, past the int32 step counter's limit of "
            f"{2**31 - 2:,}; raise batch_size, lower epochs or set max_steps below it"
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
        penalty=float(config.loss.penalty),
        cbow_mean=config.cbow_mean,
        cbow_exact_grad=config.cbow_exact_grad,
        left_only=config.left_only,
        skipgram_input=config.loss.skipgram_input,
        optimizer=config.optimizer.name,
        sparse=config.optimizer.sparse,
        duplicate_power=float(config.optimizer.duplicate_power),
        initial_accumulator=float(config.optimizer.initial_accumulator),
        eps=float(config.optimizer.eps),
        matmul_precision=config.matmul_precision,
    )
