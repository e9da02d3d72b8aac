"""Sweep the loss and its number of noise samples k: ``train_and_evaluate`` per point.

  python experiments/sweep_k.py --config=w2v_jax/configs/ptb.py --workdir=/tmp/sweep_ptb \
      --losses=softmax,sampled_softmax,nce,neg,hs --ks=1,2,5,10,25,50,100 --seeds=0,1,2

Each (loss, k, seed) trains in ``DIR/<loss>_k<k>_s<seed>/`` (softmax and hs once per seed,
``DIR/<loss>_s<seed>/``); ``--points=neg:5,neg:15,hs,nce:5`` lists the points instead of
``--losses`` x ``--ks``. Any ``--config.*`` override applies to every point. Rerunning the
same command skips finished points and resumes interrupted ones. Writes ``summary.csv``,
``summary.json`` and ``plots/*.png`` (see experiments/README.md and `w2v_jax.analysis.sweep`).

Exit status: 0 when every point finished; 1-124 the number of failed points (capped at
124; see each point's ``error.txt``); 125 a bad flag or config, before any training.
"""

from __future__ import annotations

import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from w2v_jax import cli
from w2v_jax.analysis import sweep

EXIT_BAD_CONFIG = 125
MAX_FAILED_STATUS = 124

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Base config file (w2v_jax/configs/*.py, experiments/configs/*.py).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "The sweep directory (one folder per point).")
_LOSSES = flags.DEFINE_list(
    "losses", "softmax,sampled_softmax,nce,neg,hs", "Losses; k is ignored for softmax and hs."
)
_KS = flags.DEFINE_list("ks", "1,2,5,10,25,50,100", "Noise samples per example.")
_SEEDS = flags.DEFINE_list("seeds", "0,1,2", "config.seed of each repetition.")
_POINTS = flags.DEFINE_list(
    "points", None, "Explicit points loss:k (hs, softmax without k); replaces --losses/--ks."
)
_RETRY_FAILED = flags.DEFINE_boolean("retry_failed", True, "Rerun points that failed before.")
_PLOTS = flags.DEFINE_boolean("plots", True, "Write plots/*.png at the end.")
_DRY_RUN = flags.DEFINE_boolean(
    "dry_run", False, "Validate every point's config and list the points; train nothing."
)
_GROUP_POINTS = flags.DEFINE_boolean(
    "group_points",
    False,
    "Train the points that differ only in seed (and other vmappable fields) together, in one "
    "vmapped program (w2v_jax/point_groups); each still writes its own folder.",
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}", exitcode=EXIT_BAD_CONFIG)
    logging.set_verbosity(logging.INFO)
    try:
        config = _CONFIG.value
        config.lock()  # a file that failed to load is reported on first use, here
    except OSError as e:
        sys.stderr.write(f"error: cannot load --config: {e}\n")
        sys.exit(EXIT_BAD_CONFIG)
    workdir = pathlib.Path(_WORKDIR.value)
    try:
        seeds = [int(s) for s in _SEEDS.value]
        if _POINTS.value:
            points = sweep.parse_points(_POINTS.value, seeds)
        else:
            points = sweep.make_points(_LOSSES.value, [int(k) for k in _KS.value], seeds)
        if _DRY_RUN.value:
            sweep.validated_configs(config, points)
            for point in points:
                state = "finished" if sweep.is_finished(workdir / point.name) else "to run"
                print(f"{workdir / point.name}  {state}")
            return
        result = sweep.run_sweep(
            config,
            workdir,
            points,
            retry_failed=_RETRY_FAILED.value,
            make_plots=_PLOTS.value,
            group_points=_GROUP_POINTS.value,
        )
    except ValueError as e:  # bad --ks/--seeds/--points or an invalid point config
        sys.stderr.write(f"error: {e}\n")
        sys.exit(EXIT_BAD_CONFIG)
    if result.failed:
        failed = [row["point"] for row in result.rows if row["status"] == "failed"]
        sys.stderr.write(f"{result.failed} point(s) failed: {', '.join(failed)}\n")
    sys.exit(min(result.failed, MAX_FAILED_STATUS))


if __name__ == "__main__":
    cli.run(main, error_code=EXIT_BAD_CONFIG)  # one-line errors; Ctrl-C saves, 130
