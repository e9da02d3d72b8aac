"""A run's metrics on the host between log rows (`Record`), the guard that says when its
loss diverged (`LossGuard`), and watching it: words/s, ETA, the log line (`Meter`).

Each call's device metrics (a leading step axis S) are kept pending, unfetched, until a
row or a checkpoint needs them (`Record.check`): then every pending call is fetched in one
`jax.device_get`, every step's loss is checked (`NonFiniteLossError`), and the steps wait
in ``checked`` for the next row's means (`Record.flush`).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time

import jax
import numpy as np
from absl import logging

from w2v_jax import errors


class NonFiniteLossError(errors.DivergenceError):
    """Training produced a NaN or infinite loss, or one ``config.max_loss`` above the start."""


@dataclasses.dataclass
class Record:
    """The metrics of the steps since the last row: ``pending`` calls on the device
    ((metrics [S] or [P, S], n, index): the first ``n`` steps, at ``index`` when the call
    trained several points), ``checked`` ones on the host ({metric: [T, ...]}), and the
    ``guard`` that says when a loss diverged."""

    guard: LossGuard
    pending: list = dataclasses.field(default_factory=list)
    checked: list = dataclasses.field(default_factory=list)

    def check(self, step: int, last_good: str) -> None:
        """Fetches the pending metrics in one `jax.device_get` (`_pending_steps`) and raises
        if any step's loss was not finite or diverged (``step``: the run's step after the
        last call; ``last_good``: its last good checkpoint, for the message); keeps them
        for the next row."""
        if not self.pending:
            return
        steps = _pending_steps(self.pending)  # host {metric: [T, ...]}, T steps
        self.pending.clear()
        worst = np.max(steps["loss"].reshape(len(steps["loss"]), -1), axis=1)  # [T]
        finite = np.all(steps["finite"].reshape(len(worst), -1), axis=1)  # [T]
        # `guard.problem` of every step in order, as one check per step would be: the
        # first step sets the guard's reference loss; after it a step can only be a problem
        # when it is non-finite or above the reference, so only those are asked about.
        first, guard, i = step - len(worst), self.guard, 0
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
                    f"{last_good}. Lower optimizer.alpha or check the data"
                )
            i += 1
        self.checked.append(steps)

    def flush(self, step: int, last_good: str) -> dict:
        """The means of every step's metrics since the last row (`check`ed first), a
        checkpoint between them included."""
        self.check(step, last_good)
        if not self.checked:
            return {}
        steps = {k: np.concatenate([c[k] for c in self.checked]) for k in self.checked[0]}
        self.checked.clear()
        return {
            k: float(np.mean(v if v.ndim == 1 else np.array([np.mean(x) for x in v])))
            for k, v in steps.items()
            if k != "finite"
        }


def _pending_steps(pending: list) -> dict:
    """`Record.pending`'s calls as host {metric: [T, ...]} of the first ``n`` steps of
    each call, in order.

    One `jax.device_get` of them all: it starts every copy before it waits for any, so a
    log row costs one round trip, and the join is NumPy on the host (joining on the device
    compiles a program per number of pending calls: docs/performance.md)."""
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


class LossGuard:
    """Says when a run has diverged: a non-finite loss, or one ``max_loss`` above the start.

    The threshold is relative to the first step's loss (``initial``), because where a
    loss starts depends on the layer and k: negative sampling and NCE start near
    (k + 1)·ln 2 per example (1,387 nats at k = 2,000), the softmax at ln V. A diverged
    run can stay finite (an HS run reached 1e26), and must not pass as trained.
    """

    def __init__(self, max_loss: float, initial: float | None = None):
        self.max_loss = max_loss  # 0 = only non-finite losses stop the run
        self.initial = initial  # the loss at step 1; set by the first `problem` call

    def problem(self, finite: bool, loss: float) -> str | None:
        """What is wrong with a step's ``loss`` (its worst example group), or None."""
        if not finite or not math.isfinite(loss):
            return "non-finite"
        if self.initial is None:
            self.initial = loss
        if self.max_loss and loss > self.initial + self.max_loss:
            return (
                f"{loss:.3g}, more than config.max_loss={self.max_loss:g} above the first "
                f"step's {self.initial:.3g} (diverged)"
            )
        return None


class Meter:
    """Tracks corpus words processed against the plan: % done, words/s, ETA.

    Rates are measured from the end of the first step, so compilation is excluded.
    """

    def __init__(self, planned_tokens: int, tokens_done: int = 0, total_epochs: float = 1):
        self.planned = max(int(planned_tokens), 1)
        self.start_tokens = int(tokens_done)
        self.tokens = int(tokens_done)
        self.epoch = 0
        self.total_epochs = total_epochs
        self.start = time.perf_counter()
        self.started = False
        self.excluded = 0.0
        self.tty = sys.stderr.isatty()

    def update(self, tokens: int, epoch: int) -> None:
        if not self.started:  # the first step includes compilation: rates start after it
            self.started = True
            self.start, self.start_tokens = time.perf_counter(), int(tokens)
            self.excluded = 0.0
        self.tokens, self.epoch = int(tokens), int(epoch)

    def exclude(self, seconds: float) -> None:
        """Leaves ``seconds`` (evaluation, checkpointing) out of the training time."""
        self.excluded += seconds

    def rates(self) -> dict:
        elapsed = max(time.perf_counter() - self.start - self.excluded, 1e-9)
        wps = (self.tokens - self.start_tokens) / elapsed
        return {
            "train/words_per_s": wps,
            "train/progress": self.tokens / self.planned,
            "train/elapsed_s": elapsed,
        }

    def report(self, step: int, row: dict, final: bool = False) -> None:
        rates = {**self.rates(), **row}  # the row's own rate when it has one: one figure
        wps = rates["train/words_per_s"]
        left = max(self.planned - self.tokens, 0) / wps if wps > 0 else float("inf")
        eta = "?" if left == float("inf") else time.strftime("%H:%M:%S", time.gmtime(left))
        parts = [
            f"epoch {min(self.epoch + 1, math.ceil(self.total_epochs))}/{self.total_epochs:g}",
            f"{100 * rates['train/progress']:5.1f}%",
            f"step {step}",
        ]
        if "train/loss" in row:
            parts.append(f"loss {row['train/loss']:.4f}")
        if "train/lr" in row:
            parts.append(f"lr {row['train/lr']:.5f}")
        parts.append(f"{wps / 1e3:.1f}k words/s")
        parts.append("done" if final else f"ETA {eta}")
        evals = [f"{k[5:]} {v:.4g}" for k, v in row.items() if k.startswith("eval/")]
        line = "  ".join(parts + evals[:6])
        if self.tty and not final:
            sys.stderr.write("\r" + line[:160].ljust(160))
            sys.stderr.flush()
        else:
            if self.tty:
                sys.stderr.write("\n")
            logging.info("%s", line)
