"""`analysis.sweep.run_sweep` with groups: points that may share one program train in one.

The points of a sweep whose configs differ only in `training.VMAPPED_FIELDS` (in a k-sweep:
the seeds of one (loss, k)) form a group and train together (`training.train_group`);
the others train alone, one after another, as in `analysis.sweep`. Every point keeps its
own folder, ``result.json`` and ``error.txt``, so finished points are skipped, interrupted
ones resume and the summary and plots are the same. A point of a group's ``result.json``
records its group (``"group"``: the point names) and the group's wall time as its own.

  python experiments/sweep_k.py --config=... --workdir=DIR --group_points
"""

from __future__ import annotations

import os
import pathlib
import time
from collections.abc import Sequence

import ml_collections
from absl import logging

from w2v_jax import trainer
from w2v_jax.analysis import sweep
from w2v_jax.point_groups import training


def plan(configs: Sequence[ml_collections.ConfigDict]) -> list[list[int]]:
    """Indices of ``configs`` in groups (first-appearance order); a config that cannot join
    a group, or has no partner, is a group of one."""
    groups: dict = {}
    for i, config in enumerate(configs):
        key = training.group_key(config)
        groups.setdefault(("alone", i) if key is None else key, []).append(i)
    return list(groups.values())


def run_group(
    configs: Sequence[ml_collections.ConfigDict], point_dirs: Sequence[pathlib.Path]
) -> list[dict]:
    """Trains one group and writes each point's record; returns the records."""
    for point_dir in point_dirs:
        sweep.clear_result(point_dir)
    start = time.perf_counter()
    outcomes = training.train_group(configs, [str(d) for d in point_dirs])
    wall = time.perf_counter() - start
    names = [d.name for d in point_dirs]
    return [
        sweep.write_result(d, c, o if isinstance(o, Exception) else None, wall, group=names)
        for d, c, o in zip(point_dirs, configs, outcomes, strict=True)
    ]


def run_sweep(
    base: ml_collections.ConfigDict,
    sweep_dir: str | os.PathLike,
    points: Sequence[sweep.Point],
    *,
    configure: sweep.Configure | None = None,
    retry_failed: bool = True,
    make_plots: bool = True,
) -> sweep.SweepResult:
    """`analysis.sweep.run_sweep` (same arguments, files and result) with every group of
    points that may share a program trained in one; see the module doc."""
    points = list(points)
    with sweep.open_sweep(base, sweep_dir, points, configure, retry_failed) as (
        sweep_dir,
        configs,
    ):
        todo = sweep.to_train(sweep_dir, points, retry_failed)
        for group in plan([configs[p] for p in todo]):
            group_points = [todo[i] for i in group]
            dirs = [sweep_dir / p.name for p in group_points]
            names = ", ".join(p.name for p in group_points)
            if len(group) == 1:
                logging.info("%s: training alone in %s", names, dirs[0])
                sweep.run_point(configs[group_points[0]], dirs[0], trainer.train_and_evaluate)
            else:
                logging.info("training %d points as one group: %s", len(group), names)
                run_group([configs[p] for p in group_points], dirs)
            rows = [sweep.summary_row(p, sweep_dir / p.name) for p in points]
            sweep.write_summary(sweep_dir, rows, base)
        return sweep.finish(base, sweep_dir, points, len(todo), make_plots)
