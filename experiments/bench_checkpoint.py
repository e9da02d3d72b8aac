"""Save and restore cost of a sharded train state: `checkpoint.save_shards` vs Orbax.

  XLA_FLAGS=--xla_force_host_platform_device_count=2 python experiments/bench_checkpoint.py

One process, a (data 1 x model 2) mesh, the tables sharded along V: the state of a
text8-sized run (V = 71,290, d = 100, sparse AdaGrad: two tables and two accumulators,
114 MB). Prints one JSON line per library with the median of ``--repeats`` saves and
restores (restore onto the same shardings), and whether the restored arrays are identical.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import statistics
import tempfile
import time

import jax
import numpy as np
from absl import app, flags

from w2v_jax import checkpoint
from w2v_jax.parallel import placement
from w2v_jax.step import update

_V = flags.DEFINE_integer("vocab", 71_290, "Rows V of each table.")
_D = flags.DEFINE_integer("dim", 100, "Columns D.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Saves and restores timed.")


def _state():
    cfg = update.StepConfig(model="skipgram", loss="neg", k=5, optimizer="adagrad", sparse=True)
    state = update.init_state(jax.random.PRNGKey(0), _V.value, _D.value, cfg)
    state = state._replace(params={k: v + 0.01 for k, v in state.params.items()})
    n = len(jax.devices())
    mesh = placement.make_mesh(n, model_axis=n)
    shardings = placement.state_sharding(state, mesh, shard_vocab=True)
    return jax.device_put(state, shardings), shardings


def _same(a, b) -> bool:
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


def _ours(state, shardings, root: pathlib.Path):
    folder = root / "ours"

    def save(step):
        checkpoint.save_shards(folder, state._replace(step=state.step + step), {"step": step})

    def restore():
        return checkpoint.load_shards(checkpoint.latest_committed(folder), state, shardings)[0]

    return save, restore


def _orbax(state, shardings, root: pathlib.Path):
    import orbax.checkpoint as ocp

    manager = ocp.CheckpointManager(
        root / "orbax", options=ocp.CheckpointManagerOptions(max_to_keep=1)
    )
    target = jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
    )

    def save(step):
        manager.save(step, args=ocp.args.StandardSave(state._replace(step=state.step + step)))
        manager.wait_until_finished()

    def restore():
        return manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(target))

    return save, restore


def main(argv) -> None:
    del argv
    state, shardings = _state()
    nbytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(state))
    for name, make in (("w2v_jax.checkpoint", _ours), ("orbax", _orbax)):
        root = pathlib.Path(tempfile.mkdtemp())
        try:
            save, restore = make(state, shardings, root)
            saves, restores = [], []
            for i in range(_REPEATS.value):
                start = time.perf_counter()
                save(i + 1)
                saves.append(time.perf_counter() - start)
                start = time.perf_counter()
                restored = jax.block_until_ready(restore())
                restores.append(time.perf_counter() - start)
            same = _same(restored, state._replace(step=state.step + _REPEATS.value))
            row = {
                "library": name,
                "state_mb": round(nbytes / 1e6, 1),
                "devices": len(jax.devices()),
                "save_s": round(statistics.median(saves), 3),
                "restore_s": round(statistics.median(restores), 3),
                "identical": same,
            }
            print(json.dumps(row), flush=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
