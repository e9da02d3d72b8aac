"""One run's host side, `Run`: what it trains on, where it stands (`Stand`), its metrics
(`record.Record`), checkpoints and log; `trainer.open_run` builds it and
`trainer.train_points` drives it.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time
from collections.abc import Callable, Iterator

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from w2v_jax import resume, run_folder, settings
from w2v_jax.checkpoint import schedule
from w2v_jax.data import input_pipeline, on_device, sources
from w2v_jax.model import output_layers
from w2v_jax.run import claim, record
from w2v_jax.step import runners, update


@dataclasses.dataclass
class Stand:
    """Where a run stands: ``step`` steps taken, at ``position`` in its data, ``tokens`` of
    the corpus read (the learning rate's progress)."""

    step: int
    position: input_pipeline.Position
    tokens: int


@dataclasses.dataclass(kw_only=True)
class Run:
    """One run's host side: its settings, data, checkpoints and metrics log, and where it
    stands (`Stand`). `trainer.open_run` builds it.

    `trainer.train_points` iterates over `calls`, calls `learning_rates` before each call
    of ``n`` steps, `advance` and `log_call` after it, `save` when `checkpoints` says so,
    and at the end `flush`, `save` and `finish`. ``state`` is the state to start from
    (step 0 or resumed).
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
    evaluate: Callable[[dict], dict]  # host params -> eval/* metrics
    chief: bool  # process 0, which writes the folder's shared files
    at: Stand
    record: record.Record
    checkpoints: resume.Checkpoints
    metrics_log: run_folder.MetricsLog | NoLog | None = None
    meter: record.Meter | None = None
    done: dict | None = None  # the result of a run that was finished before: nothing to do
    owner: claim.Claim = claim.NOT_HELD  # the folder's lock, held until the run ends
    # A resumed run writes config.json only once a checkpoint under its settings commits:
    # until then the folder's config is the one its checkpoint was made with.
    config_pending: bool = False

    @property
    def at_end(self) -> bool:
        """Whether ``max_steps`` is reached (the loop stops after this call)."""
        loop = self.settings.loop
        return bool(loop.max_steps) and self.at.step >= loop.max_steps

    def calls(self, steps_per_call: int) -> Iterator[tuple[input_pipeline.Item, int]]:
        """(item, steps) of every call from where the run stands to its end: host batches
        of ``steps_per_call`` steps' rows, or (input.mode='device') `on_device.Feed`s."""
        if self.device_spec is None:
            corpus = self.dataset.train
            batches = input_pipeline.batches(
                self.settings.pipeline, corpus.ids, corpus.offsets, corpus.vocab.counts,
                self.at.position,
            )  # fmt: skip
            if settings.ends_part_way(self.settings.loop.epochs):
                batches = _until(batches, self.planned)  # the last pass ends part way
            return ((item, steps_per_call) for item in batches)
        return _device_calls(
            self.settings, self.dataset.train, self.device_spec, self.at.step, steps_per_call
        )

    def learning_rates(self, item: input_pipeline.Item, n: int) -> np.ndarray:
        """word2vec's decay by words processed, interpolated across the call's sub-steps:
        float32 [n], `update.learning_rate` of every sub-step at once."""
        loop, done = self.settings.loop, self.at.tokens
        fractions = (np.arange(n) / n) * (item.tokens - done)
        progress = (done + fractions) / self.planned  # float64 [n]
        return update.learning_rate(loop.alpha, loop.min_alpha, progress)

    def advance(self, item: input_pipeline.Item, n: int, metrics: dict, index=None) -> int:
        """After a call of ``n`` steps on ``item`` whose device ``metrics`` have a leading
        step axis (``metrics[k][index]`` has it when ``index`` is given); returns the step
        before the call."""
        before = self.at.step
        self.at = Stand(before + n, item.position, item.tokens)
        self.record.pending.append((metrics, n, index))
        self.meter.update(item.tokens, item.position.epoch)
        return before

    def log_call(self, before: int, host_params: Callable[[], dict]) -> None:
        """Logs (and evaluates ``host_params()``) when the last call crossed a multiple of
        ``log_every`` (or ``eval_every``), or reached ``max_steps``."""
        loop, row = self.settings.loop, {}
        if schedule.crossed(before, self.at.step, loop.log_every) or self.at_end:
            row.update({f"train/{k}": v for k, v in self.flush().items()})
            row.update(self.meter.rates())
        if schedule.crossed(before, self.at.step, loop.eval_every):
            eval_start = time.perf_counter()
            row.update(self.evaluate(host_params()))
            self.meter.exclude(time.perf_counter() - eval_start)
        if row:
            self.metrics_log.write(self.at.step, row)
            self.meter.report(self.at.step, row)

    def flush(self) -> dict:
        """`record.Record.flush`: the means since the last row, every step checked."""
        return self.record.flush(self.at.step, self.checkpoints.where())

    def save(self, state_to_save) -> None:
        """Starts saving ``state_to_save`` (`runners.Runner.state_to_save`: device arrays,
        or host ones) at the current position, after checking the pending losses: a
        diverged state is never saved. Returns once the state is copied to the host (the
        write goes on in the background, `resume.Checkpoints.save`); the meter excludes
        only that. The checked metrics stay for the next row."""
        self.record.check(self.at.step, self.checkpoints.where())
        save_start = time.perf_counter()
        extra = _input_record(self.settings.pipeline, self.at.position)
        self.checkpoints.save(
            state_to_save, self.at.position, self.at.tokens, self.record.guard.initial, extra
        )
        if self.config_pending:  # once: the first checkpoint under these settings commits
            self.checkpoints.wait()
            write_config(self.workdir, self.config)
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
            "train/tokens": self.at.tokens,
            **self.evaluate(params),
        }
        self.checkpoints.close()  # the final checkpoint is committed before the last row
        self.metrics_log.write(self.at.step, final)
        self.metrics_log.close()
        self.meter.report(self.at.step, final, final=True)
        if self.settings.loop.export and self.chief:
            words = output_layers.word_vectors(
                params, self.settings.step.loss, self.settings.evaluation.vectors
            )
            run_folder.export(self.workdir, self.dataset.train.vocab, words)
        return {"step": self.at.step, **final}


def write_config(workdir, config) -> None:
    """``config.json``, with the folder's marker (`claim.mark`) the first time."""
    claim.mark(workdir, claim.RUN)
    run_folder.write_config(workdir, config)


class NoLog:
    """The metrics log of a process other than 0: writes nothing."""

    def write(self, step: int, row: dict) -> None:
        pass

    def close(self) -> None:
        pass


def _until(items: Iterator[input_pipeline.Item], planned: int) -> Iterator[input_pipeline.Item]:
    """``items`` up to the first whose tokens reach ``planned`` (a fractional epoch's end)."""
    for item in items:
        yield item
        if item.tokens >= planned:
            return


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
