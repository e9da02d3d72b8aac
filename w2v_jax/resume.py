"""A run's checkpoint: what it holds (its manifest), when to save it, and resuming from it.

The manifest says what a checkpoint's arrays mean: every config field that changes the
arrays, the objective or the order of the data (the saved position counts batches), plus
the vocabulary (its size and a hash of its words and counts) and the corpus size. It is
saved in the checkpoint's metadata, and a run that finds a checkpoint compares it with
its own before it writes anything (`Checkpoints.resume`): a difference stops the run with
one line naming the fields. Only the learning-rate schedule (``epochs``, ``alpha``,
``min_alpha``) may change, and only with ``config.resume_override=True``; the message
says how the rate jumps.

The checkpoints themselves are `w2v_jax.checkpoint`'s. Each also records its layout
(processes, mesh, each array's partition), only to say so when a run resumes it on
another one. All processes agree before training on the newest step every one of them
can read (`Checkpoints.resume`; docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import NamedTuple

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from w2v_jax import errors, interrupt
from w2v_jax.checkpoint import schedule, store, writer
from w2v_jax.data import vocab
from w2v_jax.parallel import distributed
from w2v_jax.step import update

# Config fields a resumed run may change freely: what is logged, evaluated, saved and
# exported, guards, and how the step is laid out on the hardware (the same maths).
# ``deterministic`` only picks XLA:GPU's kernels (the same sums in a fixed order), so a
# run may resume with it flipped; ``matmul_precision`` changes the maths: it defines the run.
FREE_FIELDS = (
    "log_every", "eval_every", "checkpoint_every", "checkpoint_every_secs", "prefetch",
    "export", "vectors", "tensorboard", "keep_freed_memory", "max_loss", "max_steps",
    "resume_override", "corpus.data_dir", "corpus.download", "corpus.cache_dir", "corpus.workers",
    "loss.chunk_size", "parallel.", "eval.", "input.device_memory_gib", "deterministic",
)  # fmt: skip
# The learning-rate schedule: changeable on resume only with config.resume_override=True.
SCHEDULE_FIELDS = ("epochs", "optimizer.alpha", "optimizer.min_alpha")
# Several processes: steps between checks of the wall-clock checkpoint schedule and of
# a stop request (a signal to any process), in one all-gather of two flags.
AGREE_EVERY = 10
# Every other field (and the vocabulary and corpus size) defines the run.


class ResumeMismatch(errors.RunFolderError):
    """The run folder holds a run with other settings than the ones given."""


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a.b.c": value} of a nested dict (a ConfigDict's ``to_dict()``)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _is_free(field: str) -> bool:
    return any(field == f or (f.endswith(".") and field.startswith(f)) for f in FREE_FIELDS)


def manifest(config: dict, train_vocab: vocab.Vocab, train_tokens: int) -> dict:
    """What a checkpoint's arrays mean (see the module doc), as flat JSON-ready fields.

    Args:
      config: the config as a nested dict (``config.to_dict()``).
      train_vocab: the training vocabulary.
      train_tokens: tokens in the training corpus.
    """
    fields = {k: v for k, v in flatten(config).items() if not _is_free(k)}
    fields["vocab.size"] = len(train_vocab)
    fields["vocab.sha256"] = train_vocab.digest()
    fields["corpus.train_tokens"] = int(train_tokens)
    return json.loads(json.dumps(fields))  # as it reads back from the checkpoint


def check(where, stored: dict, current: dict, override: bool, lr_note: str) -> None:
    """Raises ResumeMismatch (one line) unless ``current`` may resume ``stored``.

    Fields in only one of them (added to the config since) are not compared. A schedule
    field may differ when ``override``; ``lr_note`` says what that does to the rate.
    """
    differ = [k for k in sorted(stored.keys() & current.keys()) if stored[k] != current[k]]
    show = lambda x: f"{x:g}" if isinstance(x, float) else repr(x)  # noqa: E731  (5.0: 5)
    what = "; ".join(f"{k} {show(stored[k])} -> {show(current[k])}" for k in differ)
    if any(k not in SCHEDULE_FIELDS for k in differ):
        raise ResumeMismatch(
            f"{where} holds a run with other settings ({what}); its checkpoint cannot "
            "continue with these: use a new --workdir, or the settings it was started with"
        )
    if differ and not override:
        raise ResumeMismatch(
            f"{where} holds a run with another learning-rate schedule ({what}); pass "
            f"--config.resume_override=True to continue with the new one ({lr_note}), "
            "or use a new --workdir"
        )
    if differ:
        logging.warning("resuming with a new schedule (%s): %s", what, lr_note)


def _lr_note(stored: dict, current: dict, tokens: int, stored_planned: int, planned: int) -> str:
    """How the learning rate changes at the resume point when the schedule changes."""

    def rate(fields, plan) -> float:
        alpha, min_alpha = fields.get("optimizer.alpha"), fields.get("optimizer.min_alpha")
        if alpha is None or min_alpha is None:  # a manifest without them (tests)
            return float("nan")
        return float(update.learning_rate(alpha, min_alpha, tokens / max(plan, 1)))

    return (
        f"the learning rate goes from {rate(stored, stored_planned):.6g} to "
        f"{rate(current, planned):.6g} at the resume point, then decays to the new plan"
    )


class Resumed(NamedTuple):
    """What a run continues from."""

    state: object  # the train state: host arrays, or global arrays laid out as asked
    position: tuple[int, ...]  # input_pipeline.Position: the next batch (process 0's)
    tokens: int  # corpus tokens consumed
    initial_loss: float | None  # the first step's loss (the divergence guard's reference)
    meta: dict = {}  # everything the checkpoint was committed with (with `save`'s extra)
    processes: int = 1  # how many processes wrote it


class Checkpoints:
    """The run's checkpoints (``checkpoint/``): resume from the newest, save by steps or
    wall time while training goes on.

    Every process of a run creates it at the same point and saves at the same steps.
    After `save` returns the state's buffers may be donated; `wait` (or leaving
    `waiting`) blocks until the save in flight is committed.
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        manifest: dict,
        planned: int,
        every_steps: int,
        every_secs: float,
        shardings=None,
    ):
        """``shardings``: the state's NamedShardings on a mesh (a resumed state comes back
        as global arrays laid out so); None: host arrays (one device, pmap, point groups)."""
        self.shardings = shardings
        self.layout = layout(shardings)
        self.processes = jax.process_count()
        self.path = store.folder_in(workdir)
        self.manifest, self.planned = manifest, int(planned)
        self.schedule = schedule.Schedule(every_steps, every_secs)
        self.writer = writer.Writer(self.path)  # a broadcast when several processes
        self.last_good: int | None = None  # the step of the newest finite save
        self.damaged: list = []  # step folders `resume` set aside (pathlib.Path)

    def resume(self, template, override: bool) -> Resumed | None:
        """The state saved in the newest committed checkpoint that every process can read
        (None if there is none) in this run's layout.

        Each process reads its pieces of the newest committed step (present, whole, their
        CRC-32) and all share the outcome (one small all-gather): if a piece is damaged
        for any of them, every process says so in one line, process 0 sets the step
        folder aside (`store.set_aside`: renamed, not deleted) and all try the step
        before (kept, `store.KEEP`); when none is left, the run starts from step 0 after
        one line. Raises ResumeMismatch or ValueError (one line, the same on every
        process) before anything is written."""
        old = self.path.parent / store.OLD_FILE
        if old.exists():
            raise ResumeMismatch(
                f"{old} was written by an older w2v_jax (one .npz file); this version keeps "
                f"step folders in {self.path}: finish that run with the version that "
                "started it, or use a new --workdir"
            )
        fell = []  # (step, why) of each newest step some process could not read
        for found in reversed(store.committed(self.path)):  # newest first
            aside = store.aside_path(found)  # named before process 0 renames it
            got, why = _agreed(lambda found=found: self._read(found, template, override))
            if why is None:
                meta, state = got
                self.last_good = int(meta["step"])
                logging.info("resumed from %s at step %d", found, self.last_good)
                return Resumed(
                    state, tuple(meta["position"]), int(meta["tokens"]),
                    meta.get("initial_loss"), meta, int(meta["processes"]),
                )  # fmt: skip
            if jax.process_index() == 0:  # every process is done with it (the all-gather)
                store.set_aside(found, aside)
            self.damaged.append(aside)
            fell.append((store.step_of(found), why))
            logging.warning(
                "step %d cannot be resumed (%s): its folder is kept aside as %s; trying the "
                "committed step before it", fell[-1][0], why, aside.name,
            )  # fmt: skip
        if fell:
            logging.warning(
                "no committed step in %s can be read by every process (%s): training starts "
                "from step 0", self.path, ", ".join(f"step {n} damaged" for n, _ in fell),
            )  # fmt: skip
        return None

    def _read(self, found, template, override: bool):
        """``(meta, state)`` of the step folder ``found``, once its manifest is checked."""
        meta = store.read_meta(found)
        stored = meta["manifest"]  # format 2 always holds it, the plan and the layout
        note = _lr_note(stored, self.manifest, meta["tokens"], meta["planned"], self.planned)
        check(self.path.parent, stored, self.manifest, override, note)
        if meta["layout"] != self.layout:
            logging.info(
                "resharding step %d: written by %s, read by %s",
                meta["step"], describe(meta["layout"]), describe(self.layout),
            )  # fmt: skip
        return meta, store.read(found, meta, template, self.shardings)

    def agree(self, before: int, step: int, stop: bool) -> tuple[bool, bool]:
        """``(save, stop)`` after the call that took the run from ``before`` to ``step``,
        ``stop`` saying whether this process was asked to stop (a signal).

        Several processes must all save, and all stop, at the same step or none: there
        they share (one all-gather of two flags) process 0's clock and every process's
        stop request, only when the step crosses a multiple of `AGREE_EVERY`; a stop
        request anywhere stops every process there, with a checkpoint.
        """
        if self.processes == 1:
            return stop or self.schedule.due(before, step), stop
        by_steps = schedule.crossed(before, step, self.schedule.every_steps)
        if step // AGREE_EVERY == before // AGREE_EVERY:
            return by_steps, False
        mine = np.asarray([self.schedule.due_by_time(), stop], np.int32)
        every = np.asarray(multihost_utils.process_allgather(mine)).reshape(-1, 2)
        stop = bool(every[:, 1].any())
        return by_steps or bool(every[0, 0]) or stop, stop

    def save(self, state, position, tokens: int, initial_loss: float | None, extra=None) -> None:
        """Starts saving ``state`` (device arrays, global ones, or host arrays) at
        ``position`` (process 0's) and returns once it is copied to host memory: the
        write and the commit go on in the background (`checkpoint.writer`). ``extra``:
        further JSON-ready metadata (e.g. every process's input position), returned
        in `Resumed.meta`.

        Raises FloatingPointError (on every process, nothing written) when the state
        holds NaN or inf, and the previous save's error if it failed.
        """
        step = _step(state.step)
        meta = {
            **(extra or {}),
            "position": list(position),
            "tokens": int(tokens),
            "step": step,
            "planned": self.planned,
            "initial_loss": initial_loss,
            "manifest": self.manifest,
            "layout": self.layout,
        }
        self.writer.save(state, step, meta)
        self.schedule.saved()
        self.last_good = step

    def wait(self) -> None:
        """Blocks until the save in flight is committed; raises its error."""
        self.writer.wait()

    def close(self) -> None:
        """`wait`, then frees the host copy of the state kept between saves."""
        self.writer.close()

    @contextlib.contextmanager
    def waiting(self):
        """A block (the training loop) on whose every way out, an error or an interrupt
        included, the save in flight is committed before anything else happens; a
        failed save is raised, or logged when the block itself raised."""
        try:
            yield self
        except BaseException as error:
            lost = interrupt.peer_lost(error) is not None
            if lost:  # its part of the save in flight never comes: process 0 stops waiting
                store.ABANDON.set()
            try:
                self.writer.wait()
            except Exception as e:  # noqa: BLE001  (the block's error is the one to raise)
                if not lost:
                    logging.error("the checkpoint in flight failed too: %s", e)
            raise
        self.writer.wait()

    def where(self) -> str:
        """The last good checkpoint, for error messages."""
        if self.last_good is None:
            return "none yet"
        return f"{self.path} (step {self.last_good}), left intact"


def _step(x) -> int:
    """The step counter of a saved state as an int (a global array: this process's copy)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        x = x.addressable_data(0)
    return int(np.asarray(x))


def _agreed(read):
    """``(read(), None)`` when ``read()`` succeeded on every process; ``(None, why)`` when
    it raised CorruptCheckpointError on some process (``why``: the first such process and
    its message, the same on every process). Any other error is raised on every process
    as the same one line (a RunFolderError naming the process that met it; on that
    process, its own error) before any of them resumes."""
    error: BaseException | None = None
    try:
        result = read()
    except Exception as e:  # noqa: BLE001  (shared below, then raised)
        error, result = e, None
    if jax.process_count() == 1:
        if isinstance(error, store.CorruptCheckpointError):
            return None, str(error)
        if error is not None:
            raise error
        return result, None
    kind = "C" if isinstance(error, store.CorruptCheckpointError) else "E"
    failed = distributed.gather_lines("" if error is None else kind + str(error))
    other = next((m for m in failed if m.startswith("E")), None)
    if other is not None:
        if error is not None and kind == "E":
            raise error
        raise errors.RunFolderError(f"process {failed.index(other)} could not restore: {other[1:]}")
    damaged = next((m for m in failed if m), None)
    if damaged is None:
        return result, None
    return None, f"process {failed.index(damaged)}: {damaged[1:]}"


def layout(shardings) -> dict:
    """How a checkpoint's arrays were held: the processes, the mesh and how each array is
    partitioned (JSON-ready; mesh and specs None for host arrays)."""
    if shardings is None:
        return {"processes": jax.process_count(), "mesh": None, "specs": None}
    leaves = jax.tree_util.tree_leaves(shardings)
    mesh = leaves[0].mesh
    return {
        "processes": jax.process_count(),
        "mesh": {name: int(size) for name, size in mesh.shape.items()},
        "specs": [str(s.spec) for s in leaves],
    }


def describe(layout: dict) -> str:
    """``layout`` in words, for log lines and errors."""
    processes = f"{layout['processes']} process{'es' if layout['processes'] > 1 else ''}"
    if not layout.get("mesh"):
        return f"{processes} holding whole arrays"
    mesh = " x ".join(f"{k}={v}" for k, v in layout["mesh"].items())
    sharded = any("model" in s for s in layout["specs"])
    return (
        f"{processes} on a {mesh} mesh with the tables "
        f"{'sharded along V' if sharded else 'replicated'}"
    )
