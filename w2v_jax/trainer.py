"""`train_and_evaluate(config, workdir)`: the one function the CLI, sweeps, notebooks and
tests call. It loads the data, resumes from ``workdir`` if a checkpoint is there, trains
with the configured step (jit, pmap or mesh), logs progress, evaluates, checkpoints
atomically and exports the vectors.

The run folder's files are `run_folder`'s (``config.json``, ``metrics.jsonl``, the
exports); the checkpoint, its manifest and resuming are `resume`'s. Nothing is written
before the config, the corpus, the evaluation files and (on resume) the checkpoint's
manifest have been checked. A finished run rerun with the same settings changes nothing.
Ctrl-C or SIGTERM finishes the current call, saves a checkpoint and raises
`interrupt.Interrupted`.

Several processes (``config.parallel.coordinator``, `distributed`) run this same function:
each builds the global batches and feeds its devices' rows, all save their checkpoint
shards, and only process 0 writes the run folder's shared files (config, metrics,
evaluation, exports). A signal there stops a process at once; the run resumes from its
last checkpoint.
"""

from __future__ import annotations

import contextlib
import pathlib
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from w2v_jax import (
    distributed,
    evaluator,
    host_memory,
    interrupt,
    progress,
    resume,
    run_folder,
    settings,
)
from w2v_jax.data import input_pipeline, on_device, sources
from w2v_jax.model import output_layers, word2vec
from w2v_jax.step import runners, update

# Thin names kept for notebooks and tests: the run folder owns these files.
export = run_folder.export
read_metrics = run_folder.read_metrics


def _lbl_init(loop, pipeline, counts) -> dict:
    """`update.init_state`'s ``ctx_matrices`` and ``bias_init`` for the log-bilinear model
    (one C_i per context slot, identity), nothing for the other models."""
    if not loop.context_matrices:
        return {}
    slots = pipeline.window if pipeline.left_only else 2 * pipeline.window
    out = {"ctx_matrices": word2vec.context_matrices(slots, loop.dim, loop.context_matrices)}
    if loop.use_bias and loop.bias_init == "unigram":
        counts = np.asarray(counts, np.float64)
        out["bias_init"] = np.log(counts / counts.sum()).astype(np.float32)
    return out


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss, or one ``config.max_loss`` above the start."""


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains word2vec as ``config`` says, in ``workdir``; returns the final metrics."""
    distributed.initialize(distributed.options(config))  # before JAX starts
    run = settings.resolve(config)  # one-line ValueError before any work
    chief, many = distributed.is_chief(), jax.process_count() > 1
    loop, step_cfg, pipeline = run.loop, run.step, run.pipeline
    workdir = run_folder.prepare(workdir)
    if loop.keep_freed_memory:
        host_memory.keep_freed_memory()
    dataset = sources.load(run.corpus)
    corpus = dataset.train
    vocab = corpus.vocab
    settings.check_against_corpus(run, corpus)
    aux = output_layers.constants_for(step_cfg.loss, vocab.counts, loop.ns_exponent)
    state = update.init_state(
        jax.random.PRNGKey(loop.seed), len(vocab), loop.dim, step_cfg, loop.use_bias,
        **_lbl_init(loop, pipeline, vocab.counts),
    )  # fmt: skip
    device_spec = _device_spec(run, corpus, state) if loop.input_mode == "device" else None
    runner = runners.make_runner(run.parallel, step_cfg, state, device_spec)  # checks the layout
    planned = loop.epochs * input_pipeline.tokens_per_epoch(
        corpus.offsets,
        process_index=pipeline.process_index,
        process_count=pipeline.process_count,
        max_sentence_length=pipeline.max_sentence_length,
    )
    manifest = resume.manifest(config.to_dict(), vocab, len(corpus.ids))
    checkpoints = resume.Checkpoints(
        workdir, manifest, planned, loop.checkpoint_every, loop.checkpoint_every_secs,
        shardings=runner.shardings if many else None,
    )  # fmt: skip
    position, tokens_done = input_pipeline.Position(0, 0), 0
    guard = progress.LossGuard(loop.max_loss)
    resumed = checkpoints.resume(state, loop.resume_override)
    if resumed is not None:
        state, tokens_done = resumed.state, resumed.tokens
        position = input_pipeline.Position(*resumed.position)
        guard = progress.LossGuard(loop.max_loss, resumed.initial_loss)
    step = int(state.step)  # host copy; the runner may replicate the state
    evaluate_params = evaluator.Evaluator(dataset, run.evaluation, pipeline, step_cfg, aux)
    if not chief:  # process 0 evaluates and writes the shared files
        evaluate_params = lambda params: {}  # noqa: E731
    if resumed is not None and _finished(loop, position, step):
        host = runners.gather(state)  # every process: a collective when several
        if not chief:
            return {"step": step}
        return _finished_before(workdir, loop, vocab, host, step, evaluate_params)
    if chief:
        run_folder.write_config(workdir, config)  # only now: the checks above passed
    log = run_folder.MetricsLog(workdir, resume_step=step) if chief else _NoLog()
    state = runner.put_state(state)
    aux = runner.put_aux(aux)

    per_call = runner.steps_per_call
    if device_spec is None:
        batches = input_pipeline.batches(
            pipeline, corpus.ids, corpus.offsets, vocab.counts, position
        )
        calls = ((item, per_call) for item in batches)
    else:
        calls = _device_calls(run, corpus, device_spec, step, per_call)
    meter = progress.Meter(planned, tokens_done, total_epochs=loop.epochs)
    pending: list = []  # (device metrics [S, ...], real steps) not yet fetched

    def flush(step_now: int) -> dict:
        """Fetches pending metrics; raises if any step's loss was not finite or diverged."""
        rows = [
            {k: v[i] for k, v in metrics.items()}
            for metrics, n in jax.device_get(pending)
            for i in range(n)
        ]
        pending.clear()
        first = step_now - len(rows)
        for i, m in enumerate(rows):
            problem = guard.problem(bool(np.all(m["finite"])), float(np.max(m["loss"])))
            if problem:
                raise NonFiniteLossError(
                    f"loss became {problem} at step {first + i + 1}; last good checkpoint: "
                    f"{checkpoints.where()}. Lower optimizer.alpha or check the data"
                )
        return _mean_metrics(rows)

    def save() -> None:
        flush(step)  # a diverged state is never saved
        save_start = time.perf_counter()
        checkpoints.save(runner.state_to_save(state), position, tokens_done, guard.initial)
        meter.exclude(time.perf_counter() - save_start)

    loop_start = time.perf_counter()
    input_wait = 0.0  # time the loop waited for the host pipeline (device idle, at most)
    items = iter(calls)  # (item, steps of the call)
    # Ctrl-C, SIGTERM: finish the call, save, stop (one process; several would have to
    # agree on the step first, so there a signal stops the process as usual).
    catcher = _NoCatcher() if many else interrupt.Catcher()
    with catcher as stop:
        while True:
            wait_start = time.perf_counter()
            item, n = next(items, (None, 0))
            input_wait += time.perf_counter() - wait_start
            if item is None:
                break
            # word2vec's decay by words processed, interpolated across the call's sub-steps.
            fractions = (np.arange(n) / n) * (item.tokens - tokens_done)
            lrs = [
                update.learning_rate(loop.alpha, loop.min_alpha, (tokens_done + f) / planned)
                for f in fractions
            ]
            tokens_done = item.tokens
            state, metrics = runner.step_call(state, item.batch, aux, lrs)
            pending.append((metrics, n))
            before, step = step, step + n
            position = item.position
            meter.update(tokens_done, position.epoch)
            at_end = bool(loop.max_steps) and step >= loop.max_steps

            row = {}
            if _crossed(before, step, loop.log_every) or at_end:
                row.update({f"train/{k}": v for k, v in flush(step).items()})
                row.update(meter.rates())
            if _crossed(before, step, loop.eval_every):
                eval_start = time.perf_counter()
                row.update(evaluate_params(runner.host_params(state)))
                meter.exclude(time.perf_counter() - eval_start)
            if row:
                log.write(step, row)
                meter.report(step, row)
            if at_end:
                break
            if stop.requested or checkpoints.due(before, step):
                save()
            if stop.requested:
                raise interrupt.Interrupted(
                    stop.signum,
                    f"stopped at step {step}: checkpoint saved to {checkpoints.path}; rerun "
                    "the same command to resume",
                )

    last_window = flush(step)  # waits for the last step
    loop_wall = time.perf_counter() - loop_start
    rates = meter.rates()  # before evaluation, which is not training time
    save()
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
    if loop.export and chief:
        run_folder.export(workdir, vocab, params["in_embed"])
    return {"step": step, **final}


class _NoLog:
    """The metrics log of a process other than 0: writes nothing."""

    def write(self, step: int, row: dict) -> None:
        pass


class _NoCatcher(contextlib.nullcontext):
    """Several processes: signals are not caught (see the module doc)."""

    requested = False

    def __init__(self):
        super().__init__(self)


def _device_spec(run: settings.Settings, corpus, state) -> on_device.Spec:
    """input.mode='device': the batches' shape, once the corpus is known to fit beside the
    state (one-line ValueError naming input.mode='host' otherwise)."""
    state_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(state))
    gib = run.loop.device_memory_gib
    on_device.check_fits(
        len(corpus.ids), len(corpus.vocab), reserved_bytes=state_bytes, cap_bytes=int(gib * 2**30)
    )
    p = run.pipeline
    return on_device.make_spec(
        corpus.ids,
        corpus.vocab.counts,
        sample=p.sample,
        batch_size=p.rows_per_call // run.parallel.steps_per_call,
        window=p.window,
        dynamic_window=p.dynamic_window,
        left_only=p.left_only,
    )


def _device_calls(run: settings.Settings, corpus, spec: on_device.Spec, start: int, per_call):
    """input.mode='device': (`input_pipeline.Item` whose batch is the call's
    `on_device.Feed`, steps of the call) from step ``start`` to the end of the last epoch.

    Tokens are `on_device.tokens_done` (step·N // T) and the position is (epoch, step within
    the epoch), both functions of the step, so a resumed run continues exactly.
    """
    device_corpus = on_device.make_corpus(
        corpus.ids,
        corpus.offsets,
        corpus.vocab.counts,
        sample=run.pipeline.sample,
        max_sentence_length=run.pipeline.max_sentence_length,
    )
    key = on_device.data_key(run.loop.seed)
    t_epoch, num_tokens = spec.steps_per_epoch, len(corpus.ids)
    stop = run.loop.epochs * t_epoch
    for call in on_device.calls(
        device_corpus, key, spec, start=start, stop=stop, steps_per_call=per_call
    ):
        end = call.first_step + call.num_steps
        tokens = on_device.tokens_done(end, num_tokens, spec)
        position = input_pipeline.Position(*divmod(end, t_epoch))
        yield input_pipeline.Item(call.feed, position, tokens), call.num_steps


def _crossed(before: int, after: int, every: int) -> bool:
    """Whether a multiple of ``every`` lies in (before, after]."""
    return bool(every) and after // every > before // every


def _mean_metrics(rows: list[dict]) -> dict:
    if not rows:
        return {}
    keys = [k for k in rows[0] if k != "finite"]
    return {k: float(np.mean([np.mean(r[k]) for r in rows])) for k in keys}


def _finished(loop: settings.LoopSettings, position, step: int) -> bool:
    """Whether a run at ``position`` / ``step`` has nothing left to train."""
    return position.epoch >= loop.epochs or (bool(loop.max_steps) and step >= loop.max_steps)


def _finished_before(workdir, loop, vocab, state, step: int, evaluate_params) -> dict:
    """A rerun of a finished run: completes a final row or export a crash left undone
    (from the checkpoint), else changes nothing. Returns the final metrics."""
    rows = run_folder.read_metrics(workdir)
    final = rows[-1] if rows and rows[-1].get("step") == step else None
    done = []
    if final is None or "train/tokens" not in final:
        final = {"step": step, **evaluate_params(state.params)}
        run_folder.MetricsLog(workdir, resume_step=step).write(step, final)
        done.append("its final evaluation")
    exports = [pathlib.Path(workdir) / name for name in run_folder.EXPORTS]
    if loop.export and not all(p.exists() for p in exports):
        run_folder.export(workdir, vocab, state.params["in_embed"])
        done.append("its export")
    logging.info(
        "%s was already finished at step %d: %s (a new --workdir trains again)",
        workdir, step, "wrote " + " and ".join(done) if done else "nothing to do",
    )  # fmt: skip
    return {"step": step, **{k: v for k, v in final.items() if k != "step"}}
