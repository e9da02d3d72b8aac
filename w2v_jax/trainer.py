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
evaluation, exports). A signal to any of them stops all at the next step they agree on,
each with its part of one checkpoint.

The pieces of a run that do not depend on how its steps run (`open_run`, `Run`: resume,
learning rates, metrics, checkpoints, the final evaluation and exports) are shared with
`point_groups.training`, which trains several runs as one vmapped program.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import pathlib
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from w2v_jax import (
    errors,
    evaluator,
    interrupt,
    progress,
    resume,
    run_folder,
    settings,
)
from w2v_jax.data import input_pipeline, on_device, sources
from w2v_jax.model import output_layers, word2vec
from w2v_jax.parallel import budget, distributed, host_memory, placement
from w2v_jax.run import claim
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


class NonFiniteLossError(errors.DivergenceError):
    """Training produced a NaN or infinite loss, or one ``config.max_loss`` above the start."""


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains word2vec as ``config`` says, in ``workdir``; returns the final metrics."""
    distributed.initialize(distributed.options(config))  # before JAX starts
    try:
        run = open_run(config, workdir)
        with run.owner:  # the folder is this run's until it returns or raises
            return run.done if run.done is not None else _train(run)
    except BaseException as e:
        if jax.process_count() > 1 and not isinstance(e, interrupt.Interrupted):
            interrupt.exit_without_peers()  # the peers learn at once: no 300 s barrier
        lost = interrupt.peer_lost(e)  # a peer gone: one line (its own is above)
        if lost is None:
            raise
        raise lost from None


def _train(run: Run) -> dict:
    """`train_and_evaluate`'s loop, from where ``run`` stands to its end."""
    state, run.state = run.state, None  # already in the runner's layout; the loop owns it
    (result,) = train_points([run], _Alone(run), state)
    return result


class _Alone:
    """`train_points`' calls for one run through its runner (`Run.runner`): a failure
    raises, and the state is the runner's (one device's, replicated or sharded)."""

    isolated = False  # a failure raises

    def __init__(self, run: Run):
        self.runner = run.runner
        self.aux = self.runner.put_aux(run.aux)
        self.calls = iter(run.calls(self.runner.steps_per_call))  # (item, steps of the call)

    def next_calls(self, active: set) -> dict:
        return {0: next(self.calls, (None, 0))}

    def step(self, state, calls: dict, lrs: dict):
        return self.runner.step_call(state, calls[0][0].batch, self.aux, lrs[0])

    def index(self, s: int) -> None:
        return None  # the metrics are the run's own

    def host_state(self, state, s: int) -> update.TrainState:
        return self.runner.host_state(state)

    def state_to_save(self, state, s: int):
        return self.runner.state_to_save(state)


def train_points(runs: Sequence[Run], points, state) -> list[dict | Exception]:
    """The training loop: every run of ``runs`` from where it stands to its end, one call
    of ``points`` per iteration for all runs still training; returns each run's final
    metrics, or the exception that stopped it.

    ``points`` says how the runs' ``state`` steps: `_Alone` (one run, its runner) or
    `point_groups.training`'s group (several runs stacked, one vmapped call). It gives
    each iteration's (item, steps) per run (``next_calls(active)``; item None: that run's
    input ended), runs the call (``step(state, calls, lrs)``, learning rates per run), says
    where a run's metrics are in the call's (``index(s)``), and takes a run's state out
    (``host_state``, ``state_to_save``). With ``points.isolated`` a run that fails (a
    diverged loss, a failed save) stops alone, its exception in the result; otherwise the
    failure raises.

    Ctrl-C, SIGTERM: finish the call, save, raise `interrupt.Interrupted` (several
    processes: all at the step they agree on, `resume.Checkpoints.agree`). On every way
    out the saves in flight are committed (`resume.Checkpoints.waiting`).
    """
    results: list = [None] * len(runs)
    active = set(range(len(runs)))
    loop_start = time.perf_counter()
    input_wait = 0.0  # time the loop waited for the host pipeline (device idle, at most)

    @contextlib.contextmanager
    def alone(s: int):  # a failure of run s stops only run s, when isolated
        try:
            yield
        except Exception as e:
            if not points.isolated:
                raise
            logging.error("point %s failed: %s", runs[s].workdir, e)
            results[s] = e
            active.discard(s)

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
        for run in runs:
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
                    before = run.record(*calls[s], metrics, index=points.index(s))
                    run.log_call(before, lambda s=s, x=state: points.host_state(x, s).params)
                    if run.at_end:
                        end(s)
                        continue
                    save, stop_here = run.checkpoints.agree(before, run.step, stop.requested)
                    if save:
                        run.save(points.state_to_save(state, s))
                    stopping |= stop_here
            if stopping:  # a peer's signal, when not this process's
                raise interrupt.Interrupted(stop.signum or signal.SIGTERM, _stopped(runs, active))
    return results


def _stopped(runs: Sequence[Run], active: set) -> str:
    """`interrupt.Interrupted`'s message: where the checkpoints were saved."""
    if len(runs) == 1:
        run = runs[0]
        where = f"stopped at step {run.step}: checkpoint saved to {run.checkpoints.path}"
    else:
        folders = ", ".join(str(runs[s].workdir) for s in sorted(active))
        where = f"stopped: checkpoints saved for {len(active)} points still training ({folders})"
    return f"{where}; rerun the same command to resume"


@dataclasses.dataclass(kw_only=True)
class Run:
    """One run's host side: its settings, data, checkpoints and metrics log, and where it
    stands (step, data position, tokens). `open_run` builds it.

    A training loop (`train_and_evaluate`'s, or `point_groups.training`'s, which drives
    several runs in one program) iterates over `calls`, calls `learning_rates` before each
    call of ``n`` steps, `record` and `log_call` after it, `save` when `checkpoints` says
    so, and at the end `flush`, `save` and `finish`. ``state`` is the host state to start
    from (step 0 or resumed).
    """

    config: ml_collections.ConfigDict
    settings: settings.Settings
    workdir: pathlib.Path
    dataset: sources.Data
    aux: output_layers.Constants  # host arrays
    state: update.TrainState  # the state to start from
    runner: runners.Runner | None  # None: the caller steps the state (point groups)
    device_spec: on_device.Spec | None
    planned: int  # tokens over all epochs
    checkpoints: resume.Checkpoints
    guard: progress.LossGuard
    evaluate: Callable[[dict], dict]  # host params -> eval/* metrics
    step: int
    position: input_pipeline.Position
    tokens_done: int
    chief: bool
    many: bool  # several processes
    done: dict | None = None  # the result of a run that was finished before: nothing to do
    metrics_log: Any = None
    meter: progress.Meter | None = None
    pending: list = dataclasses.field(default_factory=list)  # (metrics [S], n, index)
    checked: list = dataclasses.field(default_factory=list)  # host {metric: [T, ...]}
    owner: claim.Claim = claim.NOT_HELD  # the folder's lock, held until the run ends
    # A resumed run writes config.json only once a checkpoint under its settings commits:
    # until then the folder's config is the one its checkpoint was made with.
    config_pending: bool = False

    @property
    def corpus(self):
        return self.dataset.train

    @property
    def vocab(self):
        return self.dataset.train.vocab

    @property
    def at_end(self) -> bool:
        """Whether ``max_steps`` is reached (the loop stops after this call)."""
        loop = self.settings.loop
        return bool(loop.max_steps) and self.step >= loop.max_steps

    def calls(self, steps_per_call: int) -> Iterator[tuple[input_pipeline.Item, int]]:
        """(item, steps) of every call from where the run stands to its end: host batches
        of ``steps_per_call`` steps' rows, or (input.mode='device') `on_device.Feed`s."""
        if self.device_spec is None:
            corpus = self.corpus
            batches = input_pipeline.batches(
                self.settings.pipeline, corpus.ids, corpus.offsets, corpus.vocab.counts,
                self.position,
            )  # fmt: skip
            if self.settings.loop.epochs != settings.passes(self.settings.loop.epochs):
                batches = _until(batches, self.planned)  # the last pass ends part way
            return ((item, steps_per_call) for item in batches)
        return _device_calls(
            self.settings, self.corpus, self.device_spec, self.step, steps_per_call
        )

    def learning_rates(self, item: input_pipeline.Item, n: int) -> np.ndarray:
        """word2vec's decay by words processed, interpolated across the call's sub-steps:
        float32 [n], `update.learning_rate` of every sub-step at once."""
        loop = self.settings.loop
        fractions = (np.arange(n) / n) * (item.tokens - self.tokens_done)
        progress = (self.tokens_done + fractions) / self.planned  # float64 [n]
        return update.learning_rate(loop.alpha, loop.min_alpha, progress)

    def record(self, item: input_pipeline.Item, n: int, metrics: dict, index=None) -> int:
        """After a call of ``n`` steps on ``item`` whose device ``metrics`` have a leading
        step axis (``metrics[k][index]`` has it when ``index`` is given); returns the step
        before the call."""
        self.tokens_done = item.tokens
        self.pending.append((metrics, n, index))
        before, self.step = self.step, self.step + n
        self.position = item.position
        self.meter.update(self.tokens_done, self.position.epoch)
        return before

    def log_call(self, before: int, host_params: Callable[[], dict]) -> None:
        """Logs (and evaluates ``host_params()``) when the last call crossed a multiple of
        ``log_every`` (or ``eval_every``), or reached ``max_steps``."""
        loop, row = self.settings.loop, {}
        if _crossed(before, self.step, loop.log_every) or self.at_end:
            row.update({f"train/{k}": v for k, v in self.flush().items()})
            row.update(self.meter.rates())
        if _crossed(before, self.step, loop.eval_every):
            eval_start = time.perf_counter()
            row.update(self.evaluate(host_params()))
            self.meter.exclude(time.perf_counter() - eval_start)
        if row:
            self.metrics_log.write(self.step, row)
            self.meter.report(self.step, row)

    def check(self) -> None:
        """Fetches the pending metrics in one `jax.device_get` (`_pending_steps`) and raises
        if any step's loss was not finite or diverged; keeps them for the next row."""
        if not self.pending:
            return
        steps = _pending_steps(self.pending)  # host {metric: [T, ...]}, T steps
        self.pending.clear()
        worst = np.max(steps["loss"].reshape(len(steps["loss"]), -1), axis=1)  # [T]
        finite = np.all(steps["finite"].reshape(len(worst), -1), axis=1)  # [T]
        # `guard.problem` of every step in order, as one check per step would be: the
        # first step sets the guard's reference loss; after it a step can only be a problem
        # when it is non-finite or above the reference, so only those are asked about.
        first, guard, i = self.step - len(worst), self.guard, 0
        while i < len(worst):
            if i > 0:  # skip to the next step that can be a problem
                suspect = ~finite[i:] | ~np.isfinite(worst[i:])
                if guard.max_loss and guard.initial is not None:
                    limit = guard.initial + guard.max_loss  # float64, as the guard compares
                    suspect |= worst[i:].astype(np.float64) > limit
                if not suspect.any():
                    break
                i += int(np.argmax(suspect))
            problem = guard.problem(bool(finite[i]), float(worst[i]))
            if problem:
                raise NonFiniteLossError(
                    f"loss became {problem} at step {first + i + 1}; last good checkpoint: "
                    f"{self.checkpoints.where()}. Lower optimizer.alpha or check the data"
                )
            i += 1
        self.checked.append(steps)

    def flush(self) -> dict:
        """The means of every step's metrics since the last row (`check`ed first), a
        checkpoint between them included."""
        self.check()
        if not self.checked:
            return {}
        steps = {k: np.concatenate([c[k] for c in self.checked]) for k in self.checked[0]}
        self.checked.clear()
        return {
            k: float(np.mean(v if v.ndim == 1 else np.array([np.mean(x) for x in v])))
            for k, v in steps.items()
            if k != "finite"
        }

    def save(self, state_to_save) -> None:
        """Starts saving ``state_to_save`` (`runners.Runner.state_to_save`: device arrays,
        or host ones) at the current position, after checking the pending losses: a
        diverged state is never saved. Returns once the state is copied to the host (the
        write goes on in the background, `resume.Checkpoints.save`); the meter excludes
        only that. The checked metrics stay for the next row."""
        self.check()
        save_start = time.perf_counter()
        extra = _input_record(self.settings.pipeline, self.position)
        self.checkpoints.save(
            state_to_save, self.position, self.tokens_done, self.guard.initial, extra
        )
        if self.config_pending:  # once: the first checkpoint under these settings commits
            self.checkpoints.wait()
            _write_config(self.workdir, self.config)
            self.config_pending = False
        self.meter.exclude(time.perf_counter() - save_start)

    def finish(self, params, last_window, rates, loop_wall, input_wait) -> dict:
        """Evaluates the final ``params``, writes the final row and the exports; returns
        the final metrics."""
        final = {
            **{f"train/{k}": v for k, v in last_window.items()},  # steps since the last log
            **rates,
            # The whole loop, first-step compilation included, and the share of it spent
            # waiting for input batches (the device can only be idle that long).
            "train/loop_wall_s": loop_wall,
            "train/input_wait_s": input_wait,
            "train/tokens": self.tokens_done,
            **self.evaluate(params),
        }
        self.checkpoints.close()  # the final checkpoint is committed before the last row
        self.metrics_log.write(self.step, final)
        self.metrics_log.close()
        self.meter.report(self.step, final, final=True)
        if self.settings.loop.export and self.chief:
            run_folder.export(self.workdir, self.vocab, params["in_embed"])
        return {"step": self.step, **final}


def open_run(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    with_runner: bool = True,
    dataset: sources.Data | None = None,
) -> Run:
    """Everything before the first step: validates ``config``, loads the data (or takes
    ``dataset``, the one it would load), builds the state, its runner (unless
    ``with_runner=False``: the caller runs the steps) and the checkpoints, and resumes.

    The folder is claimed first (`claim.for_run`: its lock, held by process 0 until
    ``Run.owner`` is released; refused in one line when another run holds it, or it holds
    files w2v_jax did not write or a sweep). A run found finished has ``done`` set (its
    final metrics) and writes nothing more; a new run writes ``config.json`` (every check
    passed) and a resumed one once its first checkpoint commits (`Run.save`), so a resume
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


def _open(config, run: settings.Settings, workdir: pathlib.Path, with_runner, dataset) -> Run:
    """`open_run` in a claimed folder."""
    chief, many = distributed.is_chief(), jax.process_count() > 1
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
    guard = progress.LossGuard(loop.max_loss)
    resumed = checkpoints.resume(abstract, loop.resume_override)
    if resumed is not None:
        state = resumed.state
        position, tokens_done = _resume_position(run, corpus, resumed)
        guard = progress.LossGuard(loop.max_loss, resumed.initial_loss)
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
    out = Run(
        config=config, settings=run, workdir=workdir, dataset=dataset, aux=aux, state=state,
        runner=runner, device_spec=device_spec, planned=planned, checkpoints=checkpoints,
        guard=guard, evaluate=evaluate_params, step=step, position=position,
        tokens_done=tokens_done, chief=chief, many=many,
    )  # fmt: skip
    if resumed is not None and _finished(loop, position, step, tokens_done, planned):
        host = runners.gather(state)  # every process: a collective when several
        out.done = {"step": step}
        if chief:
            out.done = _finished_before(workdir, loop, vocab, host, step, evaluate_params)
        return out
    if chief and resumed is None:
        _write_config(workdir, config)  # only now: the checks above passed
    out.config_pending = chief and resumed is not None
    out.metrics_log = (
        run_folder.MetricsLog(workdir, resume_step=step, events=loop.tensorboard)
        if chief
        else _NoLog()
    )
    out.meter = progress.Meter(planned, tokens_done, total_epochs=loop.epochs)
    return out


def _write_config(workdir, config) -> None:
    """``config.json``, with the folder's marker (`claim.mark`) the first time."""
    claim.mark(workdir, claim.RUN)
    run_folder.write_config(workdir, config)


class _NoLog:
    """The metrics log of a process other than 0: writes nothing."""

    def write(self, step: int, row: dict) -> None:
        pass

    def close(self) -> None:
        pass


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
    logging.info(
        "input: share %d of %d reads tokens %s; %d batches of %d rows per epoch on every "
        "process (this share fills ~%d)",
        pipeline.process_index, pipeline.process_count,
        _share_range(pipeline, corpus.offsets), agreed, pipeline.rows_per_call, mine,
    )  # fmt: skip
    return pipeline._replace(batches_per_epoch=agreed, epoch_tokens=len(corpus.ids))


def _share_range(pipeline: input_pipeline.PipelineOptions, offsets) -> str:
    """ "[lo, hi) of N": the tokens this process's input share reads."""
    lo, hi = input_pipeline.share_range(
        offsets, process_index=pipeline.process_index, process_count=pipeline.process_count
    )
    return f"[{lo}, {hi}) of {int(offsets[-1])}"


def _input_record(pipeline: input_pipeline.PipelineOptions, position) -> dict:
    """What a checkpoint records of the input besides ``position`` (process 0's): with
    several shares, every process's position (a small all-gather; every process calls
    this at the same step)."""
    if pipeline.process_count == 1:
        return {}
    every = multihost_utils.process_allgather(np.asarray(position, np.int64))  # [P, 4]
    return {
        "input": {
            "shares": pipeline.process_count,
            "processes": jax.process_count(),
            "batches_per_epoch": pipeline.batches_per_epoch,
            "positions": np.asarray(every).reshape(jax.process_count(), -1).tolist(),
        }
    }


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
    )
    key = on_device.data_key(run.loop.seed)
    t_epoch, num_tokens = spec.steps_per_epoch, len(corpus.ids)
    stop = math.ceil(run.loop.epochs * t_epoch)  # a fraction of an epoch: part of the last
    for call in on_device.calls(
        device_corpus, key, spec, start=start, stop=stop, steps_per_call=per_call
    ):
        end = call.first_step + call.num_steps
        tokens = on_device.tokens_done(end, num_tokens, spec)
        position = input_pipeline.Position(*divmod(end, t_epoch))
        yield input_pipeline.Item(call.feed, position, tokens), call.num_steps


def _until(items: Iterator[input_pipeline.Item], planned: int) -> Iterator[input_pipeline.Item]:
    """``items`` up to the first whose tokens reach ``planned`` (a fractional epoch's end)."""
    for item in items:
        yield item
        if item.tokens >= planned:
            return


def _crossed(before: int, after: int, every: int) -> bool:
    """Whether a multiple of ``every`` lies in (before, after]."""
    return bool(every) and after // every > before // every


def _pending_steps(pending: list) -> dict:
    """`Run.pending`'s calls, (metrics [S] or [G, S] taken at ``index``, n, index) each, as
    host {metric: [T, ...]} of the first ``n`` steps of each call, in order.

    One `jax.device_get` of them all: it starts every copy before it waits for any, so a
    log row costs one round trip, and the join is NumPy on the host. (Joining on the device
    first needs a program per number of pending calls: 2.1 s to compile and run for the
    1,447 calls of a text8-head epoch, against 0.15 s for this fetch.)"""
    fetched = jax.device_get([jax.tree_util.tree_map(_local_copy, m) for m, _, _ in pending])
    parts = [
        {k: (v if index is None else v[index])[:n] for k, v in metrics.items()}
        for metrics, (_, n, index) in zip(fetched, pending, strict=True)
    ]
    return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}


def _local_copy(x):
    """A metric replicated over several processes' devices: this process's copy."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return x.addressable_data(0)
    return x


def _finished(loop: settings.LoopSettings, position, step: int, tokens: int, planned: int) -> bool:
    """Whether a run at ``position`` / ``step`` / ``tokens`` has nothing left to train."""
    passes = settings.passes(loop.epochs)
    end = position.epoch >= passes or (loop.epochs != passes and tokens >= planned)
    return end or (bool(loop.max_steps) and step >= loop.max_steps)


def _finished_before(workdir, loop, vocab, state, step: int, evaluate_params) -> dict:
    """A rerun of a finished run: completes a final row or export a crash left undone
    (from the checkpoint), else changes nothing. Returns the final metrics."""
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
        run_folder.export(workdir, vocab, state.params["in_embed"])
        done.append("its export")
    logging.info(
        "%s was already finished at step %d: %s (a new --workdir trains again)",
        workdir, step, "wrote " + " and ".join(done) if done else "nothing to do",
    )  # fmt: skip
    return {"step": step, **{k: v for k, v in final.items() if k != "step"}}
