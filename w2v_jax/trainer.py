"""`train_and_evaluate(config, workdir)`: the one function the CLI, sweeps, notebooks and
tests call. It loads the data, resumes from ``workdir`` if a checkpoint is there, trains
with the configured step (jit, pmap or mesh), logs progress, evaluates, checkpoints
atomically and exports the vectors.

Files written to ``workdir``: ``config.json`` (at start), ``metrics.jsonl`` (one JSON
object per logged step, keys ``step``, ``train/*``, ``eval/*``), ``checkpoint.npz``,
and at the end ``vectors.txt``, ``vectors.bin`` (word2vec formats) and ``vocab.tsv``.
"""

from __future__ import annotations

import json
import pathlib
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from w2v_jax import checkpoint, evaluator, host_memory, progress, settings
from w2v_jax.data import input_pipeline, sources
from w2v_jax.evaluation import keyed_vectors
from w2v_jax.step import runners, update


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss, or one above ``config.max_loss``."""


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains word2vec as ``config`` says, in ``workdir``; returns the final metrics."""
    settings.validate(config)  # one-line ValueError before any work
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")

    if config.keep_freed_memory:
        host_memory.keep_freed_memory()
    dataset = sources.load(config)
    corpus = dataset.train
    vocab = corpus.vocab
    settings.validate_against_corpus(config, corpus)
    cfg = settings.step_config(config)
    aux = sources.make_aux(config, vocab.counts)
    state = update.init_state(
        jax.random.PRNGKey(config.seed), len(vocab), config.dim, cfg, config.loss.use_bias
    )
    position, tokens_done = input_pipeline.Position(0, 0), 0
    ckpt_path = checkpoint.path_in(workdir)
    if ckpt_path.exists():
        state, meta = checkpoint.load(ckpt_path, state)
        position = input_pipeline.Position(*meta["position"])
        tokens_done = meta["tokens"]
        logging.info("resumed from %s at step %d", ckpt_path, int(state.step))
    step = int(state.step)  # host copy; the runner may replicate the state
    last_good = step if ckpt_path.exists() else None
    log = progress.MetricsLog(workdir / "metrics.jsonl", resume_step=step)
    evaluate_params = evaluator.Evaluator(dataset, config, cfg, aux)
    runner = runners.make_runner(config, cfg, state)
    state = runner.put_state(state)
    aux = runner.put_aux(aux)

    opts = sources.batch_options(config)
    planned = config.epochs * input_pipeline.tokens_per_epoch(
        corpus.offsets,
        process_index=opts["process_index"],
        process_count=opts["process_count"],
        max_sentence_length=opts["max_sentence_length"],
    )
    batches = sources.batches(config, corpus, position)
    meter = progress.Meter(planned, tokens_done, total_epochs=config.epochs)
    pending: list = []  # (device metrics [S, ...], real steps) not yet fetched

    def flush(step_now: int) -> dict:
        """Fetches pending metrics; raises if any step's loss was not finite."""
        nonlocal last_good
        rows = [
            {k: v[i] for k, v in metrics.items()}
            for metrics, n in jax.device_get(pending)
            for i in range(n)
        ]
        pending.clear()
        first = step_now - len(rows)
        for i, m in enumerate(rows):
            finite, loss = bool(np.all(m["finite"])), float(np.max(m["loss"]))
            if finite and not (config.max_loss and loss > config.max_loss):
                continue
            what = "non-finite"
            if finite:
                what = f"{loss:.3g}, above config.max_loss={config.max_loss:g} (diverged)"
            where = "none yet"
            if last_good is not None:
                where = f"{ckpt_path} (step {last_good}), left intact"
            raise NonFiniteLossError(
                f"loss became {what} at step {first + i + 1}; last good checkpoint: {where}. "
                "Lower optimizer.alpha or check the data"
            )
        return _mean_metrics(rows)

    loop_start = time.perf_counter()
    input_wait = 0.0  # time the loop waited for the host pipeline (device idle, at most)
    items = iter(batches)
    per_call = runner.steps_per_call
    while True:
        wait_start = time.perf_counter()
        item = next(items, None)
        input_wait += time.perf_counter() - wait_start
        if item is None:
            break
        # word2vec's decay by words processed, interpolated across the call's sub-steps.
        fractions = (np.arange(per_call) / per_call) * (item.tokens - tokens_done)
        lrs = [
            update.learning_rate(
                config.optimizer.alpha, config.optimizer.min_alpha, (tokens_done + f) / planned
            )
            for f in fractions
        ]
        tokens_done = item.tokens
        state, metrics = runner.step_call(state, item.batch, aux, lrs)
        pending.append((metrics, per_call))
        before, step = step, step + per_call
        position = item.position
        meter.update(tokens_done, position.epoch)
        at_end = bool(config.max_steps) and step >= config.max_steps

        row = {}
        if _crossed(before, step, config.log_every) or at_end:
            row.update({f"train/{k}": v for k, v in flush(step).items()})
            row.update(meter.rates())
        if _crossed(before, step, config.eval_every):
            eval_start = time.perf_counter()
            row.update(evaluate_params(runner.host_params(state)))
            meter.exclude(time.perf_counter() - eval_start)
        if row:
            log.write(step, row)
            meter.report(step, row)
        if _crossed(before, step, config.checkpoint_every) and not at_end:
            flush(step)
            save_start = time.perf_counter()
            _save(ckpt_path, runner.host_state(state), position, tokens_done)
            meter.exclude(time.perf_counter() - save_start)
            last_good = step
        if at_end:
            break

    last_window = flush(step)  # waits for the last step
    loop_wall = time.perf_counter() - loop_start
    rates = meter.rates()  # before evaluation, which is not training time
    _save(ckpt_path, runner.host_state(state), position, tokens_done)
    params = runner.host_params(state)
    final_eval = evaluate_params(params)
    final = {
        **{f"train/{k}": v for k, v in last_window.items()},  # steps since the last log
        **rates,
        # The whole loop, first-step compilation included, and the share of it spent
        # waiting for input batches (the device can only be idle that long).
        "train/loop_wall_s": loop_wall,
        "train/input_wait_s": input_wait,
        "train/tokens": tokens_done,
        **final_eval,
    }
    log.write(step, final)
    meter.report(step, final, final=True)
    if config.export:
        export(workdir, vocab, params["in_embed"])
    return {"step": step, **final}


def _crossed(before: int, after: int, every: int) -> bool:
    """Whether a multiple of ``every`` lies in (before, after]."""
    return bool(every) and after // every > before // every


def _save(path, host_state, position, tokens) -> None:
    meta = {"position": list(position), "tokens": int(tokens), "step": int(host_state.step)}
    checkpoint.save(path, host_state, meta)


def _mean_metrics(rows: list[dict]) -> dict:
    if not rows:
        return {}
    keys = [k for k in rows[0] if k != "finite"]
    return {k: float(np.mean([np.mean(r[k]) for r in rows])) for k in keys}


def export(workdir, vocab, in_embed) -> None:
    """Writes ``vectors.txt``, ``vectors.bin`` (word2vec formats) and ``vocab.tsv``."""
    workdir = pathlib.Path(workdir)
    vectors = np.asarray(in_embed, dtype=np.float32)
    keyed_vectors.save_word2vec_text(workdir / "vectors.txt", vocab.words, vectors)
    keyed_vectors.save_word2vec_binary(workdir / "vectors.bin", vocab.words, vectors)
    vocab.save(workdir / "vocab.tsv")
    logging.info("exported %d x %d vectors to %s", *vectors.shape, workdir)


def read_metrics(workdir) -> list[dict]:
    """The rows of ``workdir/metrics.jsonl``."""
    path = pathlib.Path(workdir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
