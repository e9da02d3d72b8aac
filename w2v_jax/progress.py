"""Watching a long run: words/s, ETA, a log line (or a bar on a terminal), the loss guard."""

from __future__ import annotations

import math
import sys
import time

from absl import logging


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
