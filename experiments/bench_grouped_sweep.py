r"""Wall time of N seeds trained one after another against the same N as one vmapped group.

  python experiments/bench_grouped_sweep.py --config=w2v_jax/configs/synthetic.py \
      --config.epochs=1 --points=4,8

For each N in ``--points``: seeds 0..N-1 of ``--config`` trained with
`trainer.train_and_evaluate` one after another (as `experiments/sweep_k.py` does), then the
same N points with `point_groups.training.train_group` (``--group_points``), each in a
fresh folder. Reported per N: the whole wall time of both ways (data, compilation,
evaluation and exports included: what a sweep waits for), the training loops alone (the
sum of the separate runs' ``train/loop_wall_s`` against the group's loop), the speed-up,
and whether every point's vectors are bit-identical between the two. The last stdout line
is one JSON object; ``--out`` writes it to a file too.
"""

from __future__ import annotations

import json
import pathlib
import tempfile
import time

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from w2v_jax import cli, trainer
from w2v_jax.point_groups import training

_CONFIG = config_flags.DEFINE_config_file("config", "w2v_jax/configs/synthetic.py")
_POINTS = flags.DEFINE_list("points", ["4", "8"], "Group sizes N (seeds 0..N-1).")
_OUT = flags.DEFINE_string("out", "", "Also write the JSON result here.")


def _configs(n: int) -> list:
    configs = []
    for seed in range(n):
        config = _CONFIG.value.copy_and_resolve_references()
        config.seed = seed
        configs.append(config)
    return configs


def measure(n: int, folder: pathlib.Path) -> dict:
    """One row: N points alone, then as one group."""
    configs = _configs(n)
    alone_dirs = [folder / f"alone_{n}_{i}" for i in range(n)]
    group_dirs = [folder / f"group_{n}_{i}" for i in range(n)]
    start = time.perf_counter()
    alone = [
        trainer.train_and_evaluate(c, str(d)) for c, d in zip(configs, alone_dirs, strict=True)
    ]
    alone_wall = time.perf_counter() - start
    start = time.perf_counter()
    grouped = training.train_group(configs, [str(d) for d in group_dirs])
    group_wall = time.perf_counter() - start
    failed = [r for r in grouped if isinstance(r, Exception)]
    if failed:
        raise failed[0]
    identical = all(
        (a / "vectors.bin").read_bytes() == (g / "vectors.bin").read_bytes()
        for a, g in zip(alone_dirs, group_dirs, strict=True)
    )
    alone_loop = sum(r["train/loop_wall_s"] for r in alone)
    group_loop = max(r["train/loop_wall_s"] for r in grouped)
    return {
        "points": n,
        "steps_per_point": alone[0]["step"],
        "alone_wall_s": round(alone_wall, 2),
        "group_wall_s": round(group_wall, 2),
        "speedup_wall": round(alone_wall / group_wall, 2),
        "alone_loop_s": round(alone_loop, 2),
        "group_loop_s": round(group_loop, 2),
        "speedup_loop": round(alone_loop / group_loop, 2),
        "vectors_identical": identical,
    }


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(p) for p in _POINTS.value):
            rows.append(measure(n, pathlib.Path(tmp)))
            logging.warning("%s", rows[-1])
    result = {
        "device": str(jax.devices()[0]),
        "backend": jax.default_backend(),
        "config": json.loads(_CONFIG.value.to_json_best_effort()),
        "rows": rows,
    }
    line = json.dumps(result)
    if _OUT.value:
        pathlib.Path(_OUT.value).write_text(json.dumps(result, indent=1) + "\n")
    print(line)


if __name__ == "__main__":
    cli.run(main)  # one-line errors, tracebacks with --verbose
