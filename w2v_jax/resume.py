"""A run's checkpoint: what it holds (its manifest), when to save it, and resuming from it.

The manifest says what a checkpoint's arrays mean: every config field that changes the
arrays, the objective or the order of the data (the saved position counts batches), plus
the vocabulary (its size and a hash of its words and counts) and the corpus size. It is
saved in the checkpoint's metadata, and a run that finds a checkpoint compares it with
its own before it writes anything (`Checkpoints.resume`): a difference stops the run with
one line naming the fields. Only the learning-rate schedule (``epochs``, ``alpha``,
``min_alpha``) may change, and only with ``config.resume_override=True``; the message
says how the rate jumps.

A run of several processes saves sharded checkpoints (`checkpoint.save_shards`), which
also record their layout (processes, mesh, each array's partition); they resume only
onto the same layout, and a one-process checkpoint only in one process (and vice versa):
anything else is one line naming both layouts.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import NamedTuple

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from w2v_jax import checkpoint
from w2v_jax.data import vocab
from w2v_jax.step import update

# Config fields a resumed run may change freely: what is logged, evaluated, saved and
# exported, guards, and how the step is laid out on the hardware (the same maths).
# ``deterministic`` only picks XLA:GPU's kernels (the same sums in a fixed order), so a
# run may resume with it flipped; ``matmul_precision`` changes the maths: it defines the run.
FREE_FIELDS = (
    "log_every", "eval_every", "checkpoint_every", "checkpoint_every_secs", "prefetch",
    "export", "keep_freed_memory", "max_loss", "max_steps", "resume_override",
    "corpus.data_dir", "corpus.download", "loss.chunk_size", "parallel.", "eval.",
    "input.device_memory_gib", "deterministic",
)  # fmt: skip
# The learning-rate schedule: changeable on resume only with config.resume_override=True.
SCHEDULE_FIELDS = ("epochs", "optimizer.alpha", "optimizer.min_alpha")
# Several processes: steps between checks of the wall-clock checkpoint schedule.
AGREE_EVERY = 100
# Every other field (and the vocabulary and corpus size) defines the run.


class ResumeMismatch(ValueError):
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


def vocab_digest(v: vocab.Vocab) -> str:
    """A short hash of the vocabulary's words and counts (the corpus they came from)."""
    h = hashlib.sha256("\n".join(v.words).encode("utf-8"))
    h.update(np.asarray(v.counts, dtype="<i8").tobytes())
    return h.hexdigest()[:16]


def manifest(config: dict, train_vocab: vocab.Vocab, train_tokens: int) -> dict:
    """What a checkpoint's arrays mean (see the module doc), as flat JSON-ready fields.

    Args:
      config: the config as a nested dict (``config.to_dict()``).
      train_vocab: the training vocabulary.
      train_tokens: tokens in the training corpus.
    """
    fields = {k: v for k, v in flatten(config).items() if not _is_free(k)}
    fields["vocab.size"] = len(train_vocab)
    fields["vocab.sha256"] = vocab_digest(train_vocab)
    fields["corpus.train_tokens"] = int(train_tokens)
    return json.loads(json.dumps(fields))  # as it reads back from the checkpoint


def check(where, stored: dict | None, current: dict, override: bool, lr_note: str) -> None:
    """Raises ResumeMismatch (one line) unless ``current`` may resume ``stored``.

    Fields in only one of them (added to the config since) are not compared. A schedule
    field may differ when ``override``; ``lr_note`` says what that does to the rate.
    """
    if stored is None:
        logging.warning("%s has no manifest (an older version wrote it): not checked", where)
        return
    differ = [k for k in sorted(stored.keys() & current.keys()) if stored[k] != current[k]]
    what = "; ".join(f"{k} {stored[k]!r} -> {current[k]!r}" for k in differ)
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


def _lr_note(stored: dict, current: dict, tokens: int, stored_planned, planned: int) -> str:
    """How the learning rate changes at the resume point when the schedule changes."""
    if stored_planned is None:  # an older checkpoint: the plan scales with the epochs
        stored_planned = planned * stored.get("epochs", 1) / max(current.get("epochs", 1), 1)

    def rate(fields, plan) -> float:
        alpha, min_alpha = fields.get("optimizer.alpha"), fields.get("optimizer.min_alpha")
        if alpha is None or min_alpha is None:
            return float("nan")
        return float(update.learning_rate(alpha, min_alpha, tokens / max(plan, 1)))

    return (
        f"the learning rate goes from {rate(stored, stored_planned):.6g} to "
        f"{rate(current, planned):.6g} at the resume point, then decays to the new plan"
    )


class Resumed(NamedTuple):
    """What a run continues from."""

    state: object  # the train state, host arrays
    position: tuple[int, int]  # input_pipeline.Position: the next batch
    tokens: int  # corpus tokens consumed
    initial_loss: float | None  # the first step's loss (the divergence guard's reference)


class Checkpoints:
    """The run's ``checkpoint.npz``: resume from it, and save it by steps or wall time."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        manifest: dict,
        planned: int,
        every_steps: int,
        every_secs: float,
        shardings=None,
    ):
        """``shardings``: the state's NamedShardings when several processes hold it (sharded
        checkpoints under ``checkpoint/``); None: one process, ``checkpoint.npz``."""
        self.shardings = shardings
        self.layout = None if shardings is None else layout(shardings)
        one, many = checkpoint.path_in(workdir), checkpoint.folder_in(workdir)
        self.path, self.other = (one, many) if shardings is None else (many, one)
        self.manifest, self.planned = manifest, int(planned)
        self.schedule = checkpoint.Schedule(every_steps, every_secs)
        self.last_good: int | None = None  # the step of the checkpoint on disk

    def resume(self, template, override: bool) -> Resumed | None:
        """The state saved in the checkpoint (None if there is none); raises
        ResumeMismatch or checkpoint.CorruptCheckpointError before anything is written."""
        if self.other.exists():
            this = "one process" if self.layout is None else describe(self.layout)
            other = "one process" if self.layout is not None else "several processes"
            raise ResumeMismatch(
                f"{self.other} was written by {other}; this run is {this}: run it the way "
                "it was started (parallel.*), or use a new --workdir"
            )
        found = self.path if self.layout is None else checkpoint.latest_committed(self.path)
        if found is None or not found.exists():
            return None
        if self.layout is None:
            meta = checkpoint.read_meta(found)
        else:
            meta = checkpoint.read_shards_meta(found)
        stored = meta.get("manifest")
        note = _lr_note(
            stored or {}, self.manifest, meta["tokens"], meta.get("planned"), self.planned
        )
        check(self.path.parent, stored, self.manifest, override, note)
        if self.layout is None:
            state, meta = checkpoint.load(found, template)
        else:
            if meta.get("layout") != self.layout:
                raise ResumeMismatch(
                    f"{found} was saved by {describe(meta.get('layout'))}; this run is "
                    f"{describe(self.layout)}: resume with the parallel.* settings it was "
                    "started with, or use a new --workdir"
                )
            state, _ = checkpoint.load_shards(found, template, self.shardings)
        self.last_good = int(meta["step"])
        logging.info("resumed from %s at step %d", found, self.last_good)
        return Resumed(
            state, tuple(meta["position"]), int(meta["tokens"]), meta.get("initial_loss")
        )

    def due(self, before: int, step: int) -> bool:
        """Whether to save after the call that took the run from ``before`` to ``step``.

        Several processes must all save or none: there the clock of process 0 decides,
        asked (one small broadcast) only when the step crosses a multiple of `AGREE_EVERY`.
        """
        if self.layout is None:
            return self.schedule.due(before, step)
        if self.schedule.due_by_steps(before, step):
            return True
        if step // AGREE_EVERY == before // AGREE_EVERY:
            return False
        mine = np.asarray(self.schedule.due_by_time())
        return bool(multihost_utils.broadcast_one_to_all(mine))

    def save(self, host_state, position, tokens: int, initial_loss: float | None) -> None:
        meta = {
            "position": list(position),
            "tokens": int(tokens),
            "step": int(host_state.step),
            "planned": self.planned,
            "initial_loss": initial_loss,
            "manifest": self.manifest,
        }
        if self.layout is None:
            checkpoint.save(self.path, host_state, meta)
        else:
            checkpoint.save_shards(self.path, host_state, {**meta, "layout": self.layout})
        self.schedule.saved()
        self.last_good = int(host_state.step)

    def where(self) -> str:
        """The last good checkpoint, for error messages."""
        if self.last_good is None:
            return "none yet"
        return f"{self.path} (step {self.last_good}), left intact"


def layout(shardings) -> dict:
    """What a sharded checkpoint's files depend on: the processes, the mesh and how each
    array is partitioned (JSON-ready)."""
    leaves = jax.tree_util.tree_leaves(shardings)
    mesh = leaves[0].mesh
    return {
        "processes": jax.process_count(),
        "mesh": {name: int(size) for name, size in mesh.shape.items()},
        "specs": [str(s.spec) for s in leaves],
    }


def describe(layout: dict | None) -> str:
    """``layout`` in words, for error messages."""
    if not layout:
        return "an unknown layout"
    mesh = " x ".join(f"{k}={v}" for k, v in layout["mesh"].items())
    sharded = any("model" in s for s in layout["specs"])
    return (
        f"{layout['processes']} processes on a {mesh} mesh with the tables "
        f"{'sharded along V' if sharded else 'replicated'}"
    )
