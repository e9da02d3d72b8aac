"""`train_and_evaluate(config, workdir)`: the one function the CLI, sweeps, notebooks and
tests call. It loads the data, resumes from ``workdir`` if a checkpoint is there, trains
with the configured step (jit, pmap or mesh), logs progress, evaluates, checkpoints and
exports the vectors. Nothing is written before the config, the corpus, the evaluation
files and (on resume) the checkpoint's manifest have been checked; a finished run rerun
with the same settings changes nothing; Ctrl-C or SIGTERM saves and raises
`interrupt.Interrupted`. Several processes run this same function, and only process 0
writes the run folder's shared files (docs/training.md, "Several processes").

`open_run` builds a run's host side (`run.host.Run`) and `train_points` is the one loop:
it trains one run through its runner, or (`point_groups.training`) several runs as one
vmapped program.
"""

from __future__ import annotations

import contextlib
import functools
import pathlib
import signal
import time
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from w2v_jax import evaluator, interrupt, resume, run_folder, settings
from w2v_jax.data import input_pipeline, on_device, sources
from w2v_jax.model import output_layers, word2vec
from w2v_jax.parallel import budget, distributed, host_memory, placement
from w2v_jax.run import claim, host, record
from w2v_jax.step import runners, update


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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains word2vec as ``config`` says, in ``workdir``; returns the final metrics."""
    distributed.initialize(distributed.options(config))  # before JAX starts
    try:
        run = open_run(config, workdir)
        with run.owner:  # the folder is this run's until it returns or raises
            if run.done is not None:
                return run.done
            state, run.state = run.state, None  # in the runner's layout; the loop owns it
            return train_points([run], _Alone(run), state)[0]
    except BaseException as e:
        if jax.process_count() > 1 and not isinstance(e, interrupt.Interrupted):
            interrupt.exit_without_peers()  # the peers learn at once: no 300 s barrier
        lost = interrupt.peer_lost(e)  # a peer gone: one line (its own is above)
        if lost is None:
            raise
        raise lost from None


class _Alone:
    """One run's calls through its runner (`host.Run.runner`, whose layout the state is
    in); a failure raises. What `train_points` asks of its ``points``: ``next_calls(active)``
    ({run: (item, steps)}, item None when that run's input ended), ``step(state, calls,
    lrs)`` (learning rates per run) and a run's state out (``host_state``,
    ``state_to_save``)."""

    group = False

    def __init__(self, run: host.Run):
        self.runner = run.runner
        self.aux = self.runner.put_aux(run.aux)
        self.calls = iter(run.calls(self.runner.steps_per_call))  # (item, steps of the call)

    def next_calls(self, active: set) -> dict:
        return {0: next(self.calls, (None, 0))}

    def step(self, state, calls: dict, lrs: dict):
        return self.runner.step_call(state, calls[0][0].batch, self.aux, lrs[0])

    def host_state(self, state, s: int) -> update.TrainState:
        return self.runner.host_state(state)

    def state_to_save(self, state, s: int):
        return self.runner.state_to_save(state)


def train_points(runs: Sequence[host.Run], points, state) -> list[dict | Exception]:
    """The training loop: every run of ``runs`` from where it stands to its end, one call
    for all runs still training per iteration; returns each run's final metrics, or the
    exception that stopped it.

    ``points`` steps the runs' ``state``: `_Alone` (one run, its runner) or
    `point_groups.training._Group` (one vmapped call, the runs' states stacked; a failure
    stops only its run, whose metrics are at its index of the call's). Ctrl-C, SIGTERM:
    finish the call, save, raise `interrupt.Interrupted` (several processes: at the step
    they agree on, `resume.Checkpoints.agree`), every save committed first.
    """
    results: list = [None] * len(runs)
    active = set(range(len(runs)))
    loop_start = time.perf_counter()
    input_wait = 0.0  # time the loop waited for the host pipeline (device idle, at most)

    @contextlib.contextmanager
    def alone(s: int):  # in a group, a failure of run s stops only run s
        try:
            yield
        except Exception as e:
            if not points.group:
                raise
            logging.error("point %s failed: %s", runs[s].workdir, e)
            results[s] = e
            active.discard(s)
            with contextlib.suppress(Exception):  # its save in flight fails only it
                runs[s].checkpoints.wait()

    def end(s: int) -> None:
        run = runs[s]
        last_window = run.flush()  # waits for the last step
        loop_wall = time.perf_counter() - loop_start
        rates = run.meter.rates()  # before evaluation, which is not training time
        run.save(points.state_to_save(state, s))
        params = points.host_state(state, s).params
        results[s] = run.finish(params, last_window, rates, loop_wall, input_wait)
        active.discard(s)

    with interrupt.Catcher() as stop, contextlib.ExitStack() as saves:
        for run in runs:  # the saves in flight commit on every way out
            saves.enter_context(run.checkpoints.waiting())
        while active:
            wait_start = time.perf_counter()
            calls = points.next_calls(active)
            input_wait += time.perf_counter() - wait_start
            for s in sorted(s for s in active if calls[s][0] is None):
                with alone(s):
                    end(s)
            if not active:
                break
            lrs = {s: runs[s].learning_rates(*calls[s]) for s in sorted(active)}
            state, metrics = points.step(state, calls, lrs)
            stopping = False
            for s in sorted(active):
                run = runs[s]
                with alone(s):
                    before = run.advance(*calls[s], metrics, index=s if points.group else None)
                    run.log_call(before, lambda s=s, x=state: points.host_state(x, s).params)
                    if run.at_end:
                        end(s)
                        continue
                    save, stop_here = run.checkpoints.agree(before, run.at.step, stop.requested)
                    if save:
                        run.save(points.state_to_save(state, s))
                    stopping |= stop_here
            if stopping:  # a peer's signal, when not this process's
                where = "; ".join(
                    f"stopped at step {runs[s].at.step}: checkpoint saved to "
                    f"{runs[s].checkpoints.path}"
                    for s in sorted(active)
                )
                message = f"{where}; rerun the same command to resume"
                raise interrupt.Interrupted(stop.signum or signal.SIGTERM, message)
    return results


def open_run(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    with_runner: bool = True,
    dataset: sources.Data | None = None,
) -> host.Run:
    """Everything before the first step: validates ``config``, loads the data (or takes
    ``dataset``, the one it would load), builds the state, its runner (unless
    ``with_runner=False``: the caller runs the steps) and the checkpoints, and resumes.

    The folder is claimed first (`claim.for_run`: its lock, held by process 0 until
    ``host.Run.owner`` is released; refused in one line when another run holds it, or it holds
    files w2v_jax did not write or a sweep). A run found finished has ``done`` set (its
    final metrics) and writes nothing more; a new run writes ``config.json`` (every check
    passed) and a resumed one once its first checkpoint commits (`host.Run.save`), so a resume
    rejected on the way (a schedule that diverges) leaves the folder's config as it was.
    """
    run = settings.resolve(config)  # one-line ValueError before any work
    budget.check_run(run)  # what the corpus does not size (windows, batches) fits
    workdir = run_folder.prepare(workdir)
    owner = claim.for_run(workdir, distributed.is_chief())
    try:
        out = _open(config, run, workdir, with_runner, dataset)
    except BaseException:
        owner.release()
        raise
    out.owner = owner
    return out


def _open(config, run: settings.Settings, workdir: pathlib.Path, with_runner, dataset) -> host.Run:
    """`open_run` in a claimed folder."""
    chief = distributed.is_chief()
    loop, step_cfg, pipeline = run.loop, run.step, run.pipeline
    if loop.keep_freed_memory:
        host_memory.keep_freed_memory()
    dataset = sources.load(run.corpus) if dataset is None else dataset
    corpus = dataset.train
    vocab = corpus.vocab
    settings.check_against_corpus(run, corpus)
    aux = output_layers.constants_for(step_cfg.loss, vocab.counts, loop.ns_exponent)
    init = functools.partial(
        update.init_state, jax.random.PRNGKey(loop.seed), len(vocab), loop.dim, step_cfg,
        loop.use_bias, **_lbl_init(loop, pipeline, vocab.counts),
    )  # fmt: skip
    abstract = jax.eval_shape(init)  # shapes only: nothing is allocated before the checks
    device_spec = runner = None
    if loop.input_mode == "device":  # one device: the whole state, then the corpus beside it
        _check_state_fits(run, abstract, None)
        device_spec = _device_spec(run, corpus, abstract)
    if with_runner:
        runner = runners.make_runner(run.parallel, step_cfg, abstract, device_spec)  # checks it
    if loop.input_mode != "device":
        _check_state_fits(run, abstract, runner)
    state_bytes = placement.bytes_per_device(abstract, runner and runner.shardings)
    budget.check_run(
        run, vocab_size=len(vocab), num_tokens=len(corpus.ids), state_bytes=state_bytes
    )
    if pipeline.process_count > 1:  # input shares: every one takes the same steps
        pipeline = _agree_on_batches(pipeline, corpus)
        run = run._replace(pipeline=pipeline)
    planned = int(loop.epochs * len(corpus.ids))  # the learning rate's tokens (whole corpus)
    manifest = resume.manifest(config.to_dict(), vocab, len(corpus.ids))
    checkpoints = resume.Checkpoints(
        workdir, manifest, planned, loop.checkpoint_every, loop.checkpoint_every_secs,
        shardings=None if runner is None else runner.shardings,
    )  # fmt: skip
    position, tokens_done = input_pipeline.Position(0, 0), 0
    guard = record.LossGuard(loop.max_loss)
    resumed = checkpoints.resume(abstract, loop.resume_override)
    if resumed is not None:
        state = resumed.state
        position, tokens_done = _resume_position(run, corpus, resumed)
        guard = record.LossGuard(loop.max_loss, resumed.initial_loss)
        state = state if runner is None else runner.put_state(state)
    else:  # born in the runner's layout: each device computes its own shard or replica
        if chief and (workdir / run_folder.CONFIG).exists() and not checkpoints.damaged:
            logging.warning(
                "%s holds no checkpoint (the run there stopped before its first): "
                "training starts from step 0", workdir,
            )  # fmt: skip
        state = jax.jit(init)() if runner is None else runner.create_state(init)
    step = int(resumed.state.step if resumed is not None else 0)
    evaluate_params = evaluator.Evaluator(dataset, run.evaluation, pipeline, step_cfg, aux)
    if not chief:  # process 0 evaluates and writes the shared files
        evaluate_params = lambda params: {}  # noqa: E731
    out = host.Run(
        config=config, settings=run, workdir=workdir, dataset=dataset, aux=aux, state=state,
        runner=runner, device_spec=device_spec, planned=planned, evaluate=evaluate_params,
        chief=chief, at=host.Stand(step, position, tokens_done), record=record.Record(guard),
        checkpoints=checkpoints,
    )  # fmt: skip
    if resumed is not None and _finished(loop, position, step, tokens_done, planned):
        gathered = runners.gather(state)  # every process: a collective when several
        out.done = {"step": step}
        if chief:
            out.done = _finished_before(workdir, run, vocab, gathered, step, evaluate_params)
        return out
    if chief and resumed is None:
        host.write_config(workdir, config)  # only now: the checks above passed
    out.config_pending = chief and resumed is not None
    out.metrics_log = (
        run_folder.MetricsLog(workdir, resume_step=step, events=loop.tensorboard)
        if chief
        else host.NoLog()
    )
    out.meter = record.Meter(planned, tokens_done, total_epochs=loop.epochs)
    return out


def _check_state_fits(run: settings.Settings, abstract, runner) -> None:
    """A one-line ValueError, before the state is allocated, when one device's share of it
    (``abstract``: `jax.eval_shape` of the init) exceeds the device's free memory."""
    need = placement.bytes_per_device(abstract, None if runner is None else runner.shardings)
    loop, p = run.loop, run.parallel
    sharded = p.mode == "mesh" and p.shard_vocab
    what = f"dim={loop.dim}, optimizer {run.step.optimizer}, parallel.mode={p.mode}"
    ways = [
        "use more devices along parallel.model_axis"
        if sharded
        else "split the tables over devices with parallel.mode=mesh + parallel.shard_vocab=True"
    ]
    if run.step.optimizer in ("adagrad", "adam"):
        ways.append("optimizer.name=rowwise_adagrad (one accumulator per row, not per element)")
    ways.append("a smaller dim or corpus.max_vocab_size")
    placement.check_fits(need, what, ways, cap_bytes=int(loop.device_memory_gib * 2**30))


def _agree_on_batches(pipeline: input_pipeline.PipelineOptions, corpus):
    """Several input shares: the batches per epoch every process takes (the least any
    share fills, `input_pipeline.batches_per_share`; a small all-gather) and the corpus's
    tokens, from which every process computes the same learning rate."""
    mine = input_pipeline.batches_per_share(
        pipeline, corpus.ids, corpus.offsets, corpus.vocab.counts
    )
    every = multihost_utils.process_allgather(np.asarray(mine, np.int64))
    agreed = int(np.min(every))
    lo, hi = input_pipeline.share_range(
        corpus.offsets, process_index=pipeline.process_index, process_count=pipeline.process_count
    )
    logging.info(
        "input: share %d of %d reads tokens [%d, %d) of %d; %d batches of %d rows per epoch "
        "on every process (this share fills ~%d)",
        pipeline.process_index, pipeline.process_count, lo, hi, len(corpus.ids), agreed,
        pipeline.rows_per_call, mine,
    )  # fmt: skip
    return pipeline._replace(batches_per_epoch=agreed, epoch_tokens=len(corpus.ids))


def _resume_position(run: settings.Settings, corpus, resumed):
    """(position, tokens done) to continue from ``resumed``: the saved position when the
    processes and their input shares are the ones that saved it (exact); on another
    number of shares, the same fraction of the epoch in the new share (the batch
    sequence then differs from the one the run would have seen)."""
    p, n = run.pipeline, len(corpus.ids)
    saved = input_pipeline.Position(*resumed.position)
    record = resumed.meta.get("input", {"shares": 1, "processes": 1})
    if record["shares"] == p.process_count and record["processes"] == jax.process_count():
        if p.process_count > 1:
            saved = input_pipeline.Position(*record["positions"][jax.process_index()])
        if len(resumed.position) == 2 and saved.batch and run.loop.input_mode == "host":
            raise resume.ResumeMismatch(
                "the checkpoint was written by an older w2v_jax whose data position lacks "
                "the chunk and row; resume it with that version, or use a new --workdir"
            )
        return saved, resumed.tokens
    fraction = min(max(resumed.tokens / n - saved.epoch, 0.0), 1.0)
    at = input_pipeline.position_at(
        p, corpus.ids, corpus.offsets, corpus.vocab.counts, saved.epoch, fraction
    )
    tokens = saved.epoch * n + (
        n * at.batch // p.batches_per_epoch if p.batches_per_epoch else int(fraction * n)
    )
    logging.warning(
        "resuming %d input share(s) saved by %d process(es) on %d share(s): each share "
        "continues %.1f%% into epoch %d at a chunk boundary (not the exact batch sequence)",
        record["shares"], record["processes"], p.process_count, 100 * fraction, saved.epoch,
    )  # fmt: skip
    return at, tokens


def _device_spec(run: settings.Settings, corpus, state) -> on_device.Spec:
    """input.mode='device': the batches' shape, once the corpus is known to fit beside the
    state (``state``: abstract or real; one-line ValueError naming input.mode='host'
    otherwise)."""
    state_bytes = placement.bytes_per_device(state)
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


def _finished(loop: settings.LoopSettings, position, step: int, tokens: int, planned: int) -> bool:
    """Whether a run at ``position`` / ``step`` / ``tokens`` has nothing left to train."""
    end = position.epoch >= settings.passes(loop.epochs)
    end = end or (settings.ends_part_way(loop.epochs) and tokens >= planned)
    return end or (bool(loop.max_steps) and step >= loop.max_steps)


def _finished_before(workdir, run, vocab, state, step: int, evaluate_params) -> dict:
    """A rerun of a finished run: completes a final row or export a crash left undone
    (from the checkpoint), else changes nothing. Returns the final metrics."""
    loop = run.loop
    rows = run_folder.read_metrics(workdir)
    final = rows[-1] if rows and rows[-1].get("step") == step else None
    done = []
    if final is None or "train/tokens" not in final:
        final = {"step": step, **evaluate_params(state.params)}
        log = run_folder.MetricsLog(workdir, resume_step=step, events=loop.tensorboard)
        log.write(step, final)
        log.close()
        done.append("its final evaluation")
    exports = [pathlib.Path(workdir) / name for name in run_folder.EXPORTS]
    if loop.export and not all(p.exists() for p in exports):
        words = output_layers.word_vectors(state.params, run.step.loss, run.evaluation.vectors)
        run_folder.export(workdir, vocab, words)
        done.append("its export")
    logging.info(
        "%s was already finished at step %d: %s (a new --workdir trains again)",
        workdir, step, "wrote " + " and ".join(done) if done else "nothing to do",
    )  # fmt: skip
    return {"step": step, **{k: v for k, v in final.items() if k != "step"}}
