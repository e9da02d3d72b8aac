"""Sweeps of `trainer.train_and_evaluate` over (loss, k, seed): resumable, fault-tolerant.

Each point trains in its own folder ``DIR/<loss>_k<k>_s<seed>/`` (the reference losses,
which have no k, once per seed as ``DIR/<loss>_s<seed>/``), alone or with the points that
share every shape in one program (``group_points``). After each point the sweep writes
``DIR/summary.csv`` and ``DIR/summary.json`` (one row per point, pending ones included),
and at the end the plots of `plots.plot_sweep`. A point whose ``result.json`` says
``"status": "ok"`` (and whose vectors exist) is skipped by a rerun; any other resumes in
its folder. A point that raises any ``Exception`` is recorded (traceback in
``error.txt``, the one-line error in ``result.json`` and the summary) and the sweep goes
on. The folder is claimed while the sweep runs (`claim`), and a rerun refuses, before
training anything, points it would keep that were made with other settings
(`open_sweep`; docs/reliability.md, "True records").

Typical use (the CLI is ``experiments/sweep_k.py``)::

  points = sweep.make_points(["neg", "softmax"], ks=[2, 5], seeds=[0])
  result = sweep.run_sweep(config, "/tmp/sweep", points)
  result.failed  # number of points that raised
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import pathlib
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import ml_collections
from absl import logging

from w2v_jax import errors, files, resume, run_folder, settings, trainer
from w2v_jax.analysis import plots, style
from w2v_jax.model import output_layers
from w2v_jax.point_groups import training
from w2v_jax.run import claim

# Layers that draw no samples: k does not apply, one point per seed.
REFERENCE_LOSSES = tuple(layer.name for layer in output_layers.LAYERS if not layer.sampled)
RESULT_FILE = "result.json"  # the point's marker: status, wall time, error
ERROR_FILE = "error.txt"  # the traceback of a failed point
SUMMARY_CSV = "summary.csv"
# Config fields that say where and how fast a point ran, not what it computed: a rerun
# may change them and keep its finished points (`changed_points`).
WHERE_FIELDS = (
    "corpus.data_dir", "corpus.cache_dir", "corpus.workers", "corpus.download", "prefetch",
    "keep_freed_memory", "resume_override", "input.device_memory_gib", "tensorboard",
)  # fmt: skip

# Summary columns, in order; eval metrics not listed here (similarity/<name>/spearman,
# log_z quantiles, truth correlations...) follow as extra columns, then ``error``.
COLUMNS = (
    "point",
    "loss",
    "k",
    "seed",
    "status",
    "steps",
    "wall_s",
    "words_per_s",
    "train_loss",
    "heldout_loss",
    "heldout_nll",
    "heldout_ppl",
    "heldout_nll_unnormalised",
    "heldout_ppl_unnormalised",
    "log_z_mean",
    "log_z_std",
    "kl_truth",
    "analogy_total",
    "analogy_semantic",
    "analogy_syntactic",
    "analogy_coverage",
)

TrainFn = Callable[[ml_collections.ConfigDict, str], dict]
Configure = Callable[[ml_collections.ConfigDict, "Point"], None]


class Point(NamedTuple):
    """One run of a sweep."""

    loss: str  # config.loss.name
    k: int | None  # config.loss.k; None for the reference losses (softmax, hs)
    seed: int  # config.seed

    @property
    def name(self) -> str:
        """The run folder's name: ``<loss>_k<k>_s<seed>`` or ``<loss>_s<seed>``."""
        if self.k is None:
            return f"{self.loss}_s{self.seed}"
        return f"{self.loss}_k{self.k}_s{self.seed}"


class SweepResult(NamedTuple):
    rows: list[dict]  # the summary rows, one per point, in sweep order
    failed: int  # points whose training raised
    trained: int  # points trained (or resumed) by this call; the rest were finished


def make_points(losses: Sequence[str], ks: Sequence[int], seeds: Sequence[int]) -> list[Point]:
    """Every (loss, k, seed); k is dropped for softmax and hs. Seed-major order, so a
    sweep cut short has every loss for the first seeds."""
    points = []
    for seed in seeds:
        for loss in losses:
            for k in [None] if loss in REFERENCE_LOSSES else ks:
                point = Point(str(loss), None if k is None else int(k), int(seed))
                if point not in points:
                    points.append(point)
    return points


def parse_points(specs: Sequence[str], seeds: Sequence[int]) -> list[Point]:
    """Points from ``loss:k`` items (``["neg:5", "neg:15", "hs", "nce:5"]``) for each seed."""
    points = []
    for seed in seeds:
        for spec in specs:
            loss, _, k = spec.strip().partition(":")
            if loss in REFERENCE_LOSSES or not k:
                if loss not in REFERENCE_LOSSES:
                    raise errors.ConfigError(f"point {spec!r} needs a k, e.g. {loss}:5")
                points.append(Point(loss, None, int(seed)))
            else:
                points.append(Point(loss, int(k), int(seed)))
    return list(dict.fromkeys(points))


def point_config(
    base: ml_collections.ConfigDict, point: Point, configure: Configure | None = None
) -> ml_collections.ConfigDict:
    """A copy of ``base`` with the point's loss, k and seed (then ``configure`` applied)."""
    config = base.copy_and_resolve_references()
    config.loss.name = point.loss
    if point.k is not None:
        config.loss.k = point.k
    config.seed = point.seed
    if configure is not None:
        configure(config, point)
    return config


def validated_configs(
    base: ml_collections.ConfigDict, points: Sequence[Point], configure: Configure | None = None
) -> dict[Point, ml_collections.ConfigDict]:
    """Every point's config, validated; raises ValueError naming the first bad point."""
    if not points:
        raise errors.ConfigError("the sweep has no points; give at least one loss, k and seed")
    configs = {point: point_config(base, point, configure) for point in points}
    for point, config in configs.items():
        try:
            settings.validate(config)
        except ValueError as e:
            raise errors.ConfigError(f"point {point.name}: {e}") from e
    return configs


def is_finished(point_dir: str | os.PathLike) -> bool:
    """Whether the point trained to the end: ``result.json`` ok and its vectors exported."""
    point_dir = pathlib.Path(point_dir)
    result = _read_json(point_dir / RESULT_FILE)
    if result.get("status") != "ok":
        return False
    return not result.get("exported", True) or (point_dir / "vectors.bin").exists()


def run_point(
    config: ml_collections.ConfigDict, point_dir: str | os.PathLike, train_fn: TrainFn
) -> dict:
    """Trains (or resumes) one point; returns and writes its ``result.json`` record.

    Never raises for a failed run (except KeyboardInterrupt/SystemExit): the error goes to
    ``error.txt`` and the record.
    """
    point_dir = pathlib.Path(point_dir)
    clear_result(point_dir)
    start, error = time.perf_counter(), None
    try:
        train_fn(config, str(point_dir))
    except Exception as e:  # any failure is recorded: one point must not stop the sweep
        error = e
        logging.error("point %s failed: %s", point_dir.name, e)
    return write_result(point_dir, config, error, time.perf_counter() - start)


def clear_result(point_dir: pathlib.Path) -> None:
    """The point's folder, without the ``result.json`` and ``error.txt`` of a last attempt."""
    point_dir.mkdir(parents=True, exist_ok=True)
    for stale in (RESULT_FILE, ERROR_FILE):
        (point_dir / stale).unlink(missing_ok=True)


def write_result(point_dir: pathlib.Path, config, error, wall_s: float, **more) -> dict:
    """Writes and returns the point's ``result.json`` (``more``: further fields) and, when
    ``error`` (the exception that stopped it) is given, its traceback as ``error.txt``."""
    record = {"status": "ok", "exported": bool(config.export), "error": None}
    if error is not None:
        record.update(status="failed", error=f"{type(error).__name__}: {error}".splitlines()[0])
        files.write_atomic(point_dir / ERROR_FILE, "".join(traceback.format_exception(error)))
    record.update(wall_s=wall_s, finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **more)
    files.write_json(point_dir / RESULT_FILE, record, indent=2)
    return record


def _kept(point_dir: pathlib.Path, retry_failed: bool) -> bool:
    """Whether the sweep keeps a point as it is: finished, or failed and not retried."""
    return is_finished(point_dir) or (status(point_dir) == "failed" and not retry_failed)


def run_sweep(
    base: ml_collections.ConfigDict,
    sweep_dir: str | os.PathLike,
    points: Sequence[Point],
    *,
    configure: Configure | None = None,
    train_fn: TrainFn | None = None,
    retry_failed: bool = True,
    make_plots: bool = True,
    group_points: bool = False,
) -> SweepResult:
    """Runs every point not yet finished, writing the summary after each and plots at the end.

    Args:
      base: the config every point starts from (loss, k and seed are set per point).
      sweep_dir: the sweep's folder; each point trains in ``sweep_dir/<point.name>``.
      points: from `make_points` or `parse_points`.
      configure: optional ``f(config, point)`` that edits a point's config in place.
      train_fn: the training function; `trainer.train_and_evaluate` by default.
      retry_failed: rerun points whose last attempt failed (False: keep their record).
      make_plots: write the PNGs of `plots.plot_sweep` at the end.
      group_points: train the points whose configs differ only in
        `point_groups.training.VMAPPED_FIELDS` (a k-sweep: the seeds of one (loss, k)) as
        one vmapped program (`training.train_group`; ``train_fn`` unused); each keeps its
        own folder, and its ``result.json`` names its ``group`` and gives the group's
        wall time as its own.

    Returns:
      A `SweepResult` with the summary rows and the number of failed points.

    Raises:
      errors.ConfigError: a point's config is invalid (checked for every point before any
        training).
      errors.RunFolderError: the folder is another sweep's or a run's, holds files w2v_jax
        did not write, or points the sweep would keep were made with other settings
        (`open_sweep`).
    """
    train_fn = train_fn or trainer.train_and_evaluate
    points = list(points)
    with open_sweep(base, sweep_dir, points, configure, retry_failed) as (sweep_dir, configs):
        todo = [p for p in points if not _kept(sweep_dir / p.name, retry_failed)]
        for point in (p for p in points if p not in todo):
            logging.info("%s kept (%s before), skipped", point.name, status(sweep_dir / point.name))
        groups = [[i] for i in range(len(todo))]
        if group_points:
            groups = training.plan([configs[p] for p in todo])
        for group in groups:
            mine = [todo[i] for i in group]
            dirs = [sweep_dir / p.name for p in mine]
            names = ", ".join(p.name for p in mine)
            if len(group) == 1:
                logging.info("[%d/%d] %s: training in %s", group[0] + 1, len(todo), names, dirs[0])
                run_point(configs[mine[0]], dirs[0], train_fn)
            else:
                logging.info("training %d points as one group: %s", len(group), names)
                _run_group([configs[p] for p in mine], dirs)
            write_summary(sweep_dir, [summary_row(p, sweep_dir / p.name) for p in points], base)
        return finish(base, sweep_dir, points, len(todo), make_plots)


def _run_group(configs: list[ml_collections.ConfigDict], dirs: list[pathlib.Path]) -> None:
    """Trains one group (`training.train_group`) and writes each point's record."""
    for point_dir in dirs:
        clear_result(point_dir)
    start = time.perf_counter()
    outcomes = training.train_group(configs, [str(d) for d in dirs])
    wall, names = time.perf_counter() - start, [d.name for d in dirs]
    for d, c, o in zip(dirs, configs, outcomes, strict=True):
        write_result(d, c, o if isinstance(o, Exception) else None, wall, group=names)


@contextlib.contextmanager
def open_sweep(
    base: ml_collections.ConfigDict,
    sweep_dir: str | os.PathLike,
    points: Sequence[Point],
    configure: Configure | None,
    retry_failed: bool,
) -> Iterator[tuple[pathlib.Path, dict[Point, ml_collections.ConfigDict]]]:
    """The sweep's folder, claimed for the block (`claim.hold`: its lock; refused in one
    line when another sweep holds it, or it is a run's folder or holds files w2v_jax did
    not write), and every point's config (`validated_configs`).

    A point the sweep would keep (finished, or failed when not ``retry_failed``) must
    have been made with its config now (`changed_points`): otherwise this raises
    `errors.RunFolderError` naming them before anything is trained or written, so a
    summary never pairs a config with rows it did not produce. Points it trains again
    resume through the trainer, whose own check refuses a checkpoint of other settings.
    """
    configs = validated_configs(base, points, configure)
    sweep_dir = run_folder.prepare(sweep_dir)
    with claim.hold(sweep_dir, claim.SWEEP):
        kept = [p for p in points if _kept(sweep_dir / p.name, retry_failed)]
        changed = changed_points(sweep_dir, {p: configs[p] for p in kept})
        if changed:
            shown = "; ".join(f"{name}: {what}" for name, what in list(changed.items())[:3])
            more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
            raise errors.RunFolderError(
                f"--workdir={sweep_dir}: {len(changed)} point(s) it keeps were made with "
                f"other settings ({shown}{more}); nothing was trained: rerun with the "
                "settings they were made with, pass a new --workdir, or delete those "
                "points' folders to train them again"
            )
        claim.mark(sweep_dir, claim.SWEEP)
        yield sweep_dir, configs


def changed_points(
    sweep_dir: pathlib.Path, configs: dict[Point, ml_collections.ConfigDict]
) -> dict[str, str]:
    """{point name: "field old -> new; ..."} of the points whose ``config.json`` differs
    from ``configs[point]`` in a field other than `WHERE_FIELDS` (fields in only one of
    them, added to the config since, are not compared)."""
    out = {}
    for point, config in configs.items():
        stored = _read_json(sweep_dir / point.name / run_folder.CONFIG)
        if not stored:
            continue
        old = resume.flatten(stored)
        new = resume.flatten(json.loads(config.to_json_best_effort()))
        differ = [
            k for k in sorted(old.keys() & new.keys()) if old[k] != new[k] and k not in WHERE_FIELDS
        ]
        if differ:
            out[point.name] = ", ".join(f"{k} {old[k]!r} -> {new[k]!r}" for k in differ[:3])
    return out


def finish(
    base: ml_collections.ConfigDict,
    sweep_dir: pathlib.Path,
    points: Sequence[Point],
    trained: int,
    make_plots: bool,
) -> SweepResult:
    """The end of a sweep that ``trained`` points now: the summary, the plots, one line."""
    rows = [summary_row(p, sweep_dir / p.name) for p in points]
    write_summary(sweep_dir, rows, base)
    failed = sum(row["status"] == "failed" for row in rows)
    if make_plots:
        try:
            plots.plot_sweep(sweep_dir)
        except Exception:  # the results are on disk; experiments/plot.py can redraw them
            logging.exception("plotting %s failed", sweep_dir)
    logging.info(
        "sweep %s: %d points, %d trained now, %d failed", sweep_dir, len(points), trained, failed
    )
    return SweepResult(rows, failed, trained)


def summary_row(point: Point, point_dir: str | os.PathLike) -> dict:
    """The summary row of one point, read from its ``result.json`` and ``metrics.jsonl``.

    Values are the last logged ones (the final evaluation for a finished point); a metric
    the run does not produce, or a non-finite one, is None.
    """
    point_dir = pathlib.Path(point_dir)
    result = _read_json(point_dir / RESULT_FILE)
    last = {}  # the last value of every key in its metrics.jsonl
    for logged in files.read_jsonl(point_dir / "metrics.jsonl"):
        last.update(logged)
    row = {column: None for column in COLUMNS}
    row.update(point=point.name, loss=point.loss, k=point.k, seed=point.seed)
    row["status"] = result.get("status", "pending")
    row["steps"] = last.get("step")
    row["wall_s"] = result.get("wall_s")
    for key, value in last.items():
        if key.startswith("eval/") or key in ("train/loss", "train/words_per_s"):
            row[style.column(key)] = value  # eval/analogy/total: analogy_total
    nll = row.get("heldout_nll_unnormalised")
    if nll is not None and math.isfinite(nll):
        row["heldout_ppl_unnormalised"] = math.exp(min(nll, 700.0))
    row["error"] = result.get("error")
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def write_summary(
    sweep_dir: str | os.PathLike, rows: list[dict], base: ml_collections.ConfigDict | None = None
) -> None:
    """Writes ``summary.csv`` (empty cells for None) and ``summary.json``, atomically."""
    sweep_dir = pathlib.Path(sweep_dir)
    extra = sorted({k for row in rows for k in row} - set(COLUMNS) - {"error"})
    columns = [*COLUMNS, *extra, "error"]
    with files.atomic_file(sweep_dir / SUMMARY_CSV, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    payload = {
        "columns": columns,
        "rows": rows,
        "failed": sum(row["status"] == "failed" for row in rows),
        "config": json.loads(base.to_json_best_effort()) if base is not None else None,
    }
    files.write_json(sweep_dir / plots.SUMMARY_JSON, payload, indent=2)


def status(point_dir: pathlib.Path) -> str | None:
    """The ``status`` in a point's ``result.json`` (None without one)."""
    return _read_json(point_dir / RESULT_FILE).get("status")


def _read_json(path: pathlib.Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
