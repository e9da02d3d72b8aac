"""Checkpoints at scale: `w2v_jax.checkpoint` against Orbax on a 2-4 GB AdaGrad-shaped state.

  python experiments/bench_checkpoint.py                # V = 2M, D = 128: 4.1 GB, 2 and 4 devices
  python experiments/bench_checkpoint.py --quick        # seconds: V = 20,000, D = 16

The state is the sparse-AdaGrad train state (two [V, D] tables, two accumulators of the
same shapes, the step and the key), random. Each device count N, layout and library runs
in a child process of its own (``XLA_FLAGS=--xla_force_host_platform_device_count=N``;
each child's memory is its own: an Orbax save on the CPU doubles the state for a step),
one after the other. The layouts: ``sharded``
(data 1 x model N, the tables split along V) and ``replicated`` (data N x model 1) of
V / N rows, so that its N copies take the host memory the sharded state takes (a
simulated device's memory is the host's).

For each library (``w2v_jax``: `checkpoint.writer` / `checkpoint.store`; ``orbax``:
``CheckpointManager`` with ``StandardSave`` / ``StandardRestore``, asynchronous, its
defaults) it measures, as medians over ``--repeats`` saves:

* ``sync_s``: a save that returns once committed (what the loop waited before);
* ``blocked_s``: the loop blocked in an asynchronous save;
* ``first_step_s``: the first stand-in step after it returns, against ``step_alone_s``,
  one step with no save in flight (a step refused its buffers' donation allocates and
  writes a whole new state);
* ``lost_s``: what an asynchronous save costs the training loop: from the save's start to
  its commit, the wall time minus the stand-in steps done meanwhile times one step's time
  alone. It includes ``blocked_s`` and whatever the background write does to the steps
  (CPU time it takes from them, a buffer donation the step is refused). The target is
  ``lost_s <= 0.10 * sync_s`` (``stall_ratio``);
* ``commit_s``: an asynchronous save's start to its commit, steps running meanwhile;
* ``restore_same_s`` / ``restore_other_s``: restore onto the layout it was saved from /
  onto another mesh (replicated -> data 1 x model N, split; sharded -> one device),
  files in the page cache;
* ``disk_bytes`` and ``files`` of one committed step; ``identical``: every restore equals
  the saved arrays bit for bit.

The stand-in step gathers 4,096 random rows, scores them against each other (about
4 GFLOP: the cores are busy, as in training) and adds an update to those rows of every
table, the state donated, as a word2vec step does. Rows are written as JSON lines and a
markdown table to ``experiments/results/bench_checkpoint/<--tag>.{jsonl,md}``; the last
stdout line is the JSON of every row.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

_V = flags.DEFINE_integer("vocab", 2_000_000, "Rows V of each table.")
_D = flags.DEFINE_integer("dim", 128, "Columns D.")
_DEVICES = flags.DEFINE_list("devices", ["2", "4"], "Simulated CPU device counts.")
_LAYOUTS = flags.DEFINE_list("layouts", ["replicated", "sharded"], "Layouts saved from.")
_LIBRARIES = flags.DEFINE_list("libraries", ["w2v_jax", "orbax"], "Savers compared.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Saves timed per (library, layout).")
_QUICK = flags.DEFINE_bool("quick", False, "A tiny state (V = 20,000, D = 16), 1 repeat.")
_DIR = flags.DEFINE_string("dir", "", "Where to write checkpoints (default: a temp folder).")
_OUT = flags.DEFINE_string(
    "out", "experiments/results/bench_checkpoint", "Results folder ('' = none)."
)
_TAG = flags.DEFINE_string("tag", "cpu", "Results file name.")
_CHILD = flags.DEFINE_integer("child", 0, "Internal: measure with this many devices.")

ROWS_PER_STEP = 4096
COLUMNS = ["devices", "layout", "library", "state_gb", "sync_s", "blocked_s", "first_step_s",
           "step_alone_s", "lost_s", "stall_ratio", "commit_s", "restore_same_s",
           "restore_other_s", "disk_bytes", "files", "identical"]  # fmt: skip


# ---- the child: one device count -------------------------------------------------------


def _state(vocab: int, dim: int, shardings):
    """A random sparse-AdaGrad train state laid out as ``shardings``."""
    import jax

    from w2v_jax.step import update

    def init():
        cfg = update.StepConfig(model="skipgram", loss="neg", k=5, optimizer="adagrad", sparse=True)
        state = update.init_state(jax.random.PRNGKey(0), vocab, dim, cfg)
        keys = iter(jax.random.split(jax.random.PRNGKey(1), 8))
        noise = lambda x: x + jax.random.normal(next(keys), x.shape, x.dtype)  # noqa: E731
        return state._replace(
            params=jax.tree_util.tree_map(noise, state.params),
            opt_state=jax.tree_util.tree_map(lambda x: abs(noise(x)), state.opt_state),
        )

    return jax.jit(init, out_shardings=shardings)()


def _layout(name: str, vocab: int, dim: int):
    """(V, the state's shardings, the shardings of the other mesh it is restored onto,
    the abstract state) of layout ``name`` over every device.

    ``replicated`` (data N x model 1) holds V / N rows, so that its N copies take the
    host memory the ``sharded`` state (data 1 x model N, V rows) takes; a replicated
    state is restored onto data 1 x model N, a sharded one onto one device.
    """
    import jax

    from w2v_jax.parallel import placement
    from w2v_jax.step import update

    n = len(jax.devices())
    rows = vocab // n if name == "replicated" else vocab
    cfg = update.StepConfig(model="skipgram", loss="neg", k=5, optimizer="adagrad", sparse=True)
    abstract = jax.eval_shape(lambda: update.init_state(jax.random.PRNGKey(0), rows, dim, cfg))
    if name == "replicated":
        here = placement.state_sharding(abstract, placement.make_mesh(n, 1), False)
        other = placement.state_sharding(abstract, placement.make_mesh(n, n), True)
    else:
        here = placement.state_sharding(abstract, placement.make_mesh(n, n), True)
        other = placement.state_sharding(abstract, placement.make_mesh(1, 1), False)
    return rows, here, other, abstract


def _stand_in_step(shardings):
    """(state, rows [R]) -> state, the state donated: as a word2vec step, R rows of the
    input table gathered, scored against each other (two [R, R] x [R, D] products, about
    4 GFLOP at R = 4,096, D = 128: the cores are busy, as in training) and an update
    added to the same rows of every table."""
    import jax
    import jax.numpy as jnp

    def step(state, rows):
        e = state.params["in_embed"][rows]  # [R, D]
        update = 1e-6 * jnp.tanh(e @ e.T) @ e  # [R, D]
        bump = lambda x: x.at[rows].add(update) if x.ndim == 2 else x  # noqa: E731
        return state._replace(
            step=state.step + 1,
            params=jax.tree_util.tree_map(bump, state.params),
            opt_state=jax.tree_util.tree_map(bump, state.opt_state),
        )

    return jax.jit(step, donate_argnums=0, out_shardings=shardings)


def _w2v_jax(folder: pathlib.Path):
    """(save(state, step), saving() -> bool, wait(), restore(step, template, shardings),
    close(), step_path(step)); `_orbax` the same."""
    from w2v_jax.checkpoint import store, writer

    saver = writer.Writer(folder)

    def restore(step, template, shardings):
        found = store.step_folder(folder, step)
        return store.read(found, store.read_meta(found), template, shardings)

    return (
        lambda state, step: saver.save(state, step, {"step": step}),
        lambda: saver.in_flight,
        saver.wait,
        restore,
        saver.close,
        lambda step: store.step_folder(folder, step),
    )


def _orbax(folder: pathlib.Path):
    import jax
    import orbax.checkpoint as ocp

    manager = ocp.CheckpointManager(
        folder, options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    )

    def restore(step, template, shardings):
        target = jax.tree_util.tree_map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), template, shardings
        )
        return manager.restore(step, args=ocp.args.StandardRestore(target))

    return (
        lambda state, step: manager.save(step, args=ocp.args.StandardSave(state)),
        manager.is_saving_in_progress,
        manager.wait_until_finished,
        restore,
        manager.close,
        lambda step: folder / str(step),
    )


def _note(what: str) -> None:
    """A progress line on stderr with the child's resident memory (GB)."""
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9
    print(f"bench_checkpoint: {what} (RSS {rss:.1f} GB)", file=sys.stderr, flush=True)


def _disk(path: pathlib.Path) -> tuple[int, int]:
    found = [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in found), len(found)


def _measure(layout: str, root: pathlib.Path) -> list[dict]:
    """One row per library of ``--libraries`` on ``layout`` (several: their saves
    interleaved, repeat by repeat, so that a machine's drift hits them alike)."""
    import jax
    import numpy as np

    vocab, shardings, other, abstract = _layout(layout, _V.value, _D.value)
    state = _state(vocab, _D.value, shardings)
    step_fn = _stand_in_step(shardings)
    rng = np.random.default_rng(0)
    rows = lambda: jax.numpy.asarray(rng.integers(0, vocab, ROWS_PER_STEP), np.int32)  # noqa: E731
    for _ in range(3):  # compile, warm up
        state = jax.block_until_ready(step_fn(state, rows()))
    alone = []
    for _ in range(10):
        start = time.perf_counter()
        state = jax.block_until_ready(step_fn(state, rows()))
        alone.append(time.perf_counter() - start)
    step_s = statistics.median(alone)
    _note(f"{layout}: state of {vocab} rows placed, a step alone {step_s:.4f} s")
    savers = {
        name: (_w2v_jax if name == "w2v_jax" else _orbax)(root / f"{name}_{layout}")
        for name in _LIBRARIES.value
    }
    times = {name: {"sync": [], "blocked": [], "first": [], "lost": [], "commit": []}
             for name in savers}  # fmt: skip
    n = 0
    for _ in range(1 + _REPEATS.value):  # the first (buffers allocated, compiled) not kept
        for name, (save, saving, wait, *_) in savers.items():
            n += 1
            start = time.perf_counter()
            save(state, n)
            wait()
            times[name]["sync"].append(time.perf_counter() - start)
            n += 1
            start = time.perf_counter()
            save(state, n)
            times[name]["blocked"].append(time.perf_counter() - start)
            steps = 0
            while saving() or not steps:
                step_start = time.perf_counter()
                state = jax.block_until_ready(step_fn(state, rows()))
                if not steps:
                    times[name]["first"].append(time.perf_counter() - step_start)
                steps += 1
            wait()
            wall = time.perf_counter() - start
            times[name]["commit"].append(wall)
            times[name]["lost"].append(wall - steps * step_s)
            _note(f"{layout}: {name} saved twice")
    saved = jax.device_get(state)  # the arrays of a last, synchronous save (views: unchanged)
    out = []
    for name, (save, _, wait, restore, close, step_path) in savers.items():
        n += 1
        save(state, n)
        wait()
        close()  # frees w2v_jax's host copy before the restores
        disk_bytes, files = _disk(step_path(n))
        restores, identical = {}, True
        for which, target in (("same", shardings), ("other", other)):
            start = time.perf_counter()
            got = jax.block_until_ready(restore(n, abstract, target))
            restores[which] = time.perf_counter() - start
            _note(f"{layout}: {name} restored onto the {which} layout")
            identical &= all(
                np.array_equal(np.asarray(a), b)
                for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(saved),
                                strict=True)
            )  # fmt: skip
            del got
        t = {k: statistics.median(v[1:]) for k, v in times[name].items()}
        out.append({
            "devices": len(jax.devices()), "layout": layout, "library": name,
            "state_gb": round(sum(x.nbytes for x in jax.tree_util.tree_leaves(saved)) / 1e9, 3),
            "sync_s": round(t["sync"], 3), "blocked_s": round(t["blocked"], 3),
            "first_step_s": round(t["first"], 4), "step_alone_s": round(step_s, 4),
            "lost_s": round(t["lost"], 3), "stall_ratio": round(t["lost"] / t["sync"], 3),
            "commit_s": round(t["commit"], 3),
            "restore_same_s": round(restores["same"], 3),
            "restore_other_s": round(restores["other"], 3),
            "disk_bytes": disk_bytes, "files": files, "identical": bool(identical),
            "vocab": vocab, "repeats": _REPEATS.value,
        })  # fmt: skip
    return out


def _child(devices: int) -> None:
    import jax
    from absl import logging

    logging.set_verbosity(logging.WARNING)  # Orbax logs every step at INFO

    assert len(jax.devices()) == devices, (jax.devices(), devices)
    root = pathlib.Path(tempfile.mkdtemp(dir=_DIR.value or None, prefix="bench_checkpoint_"))
    try:
        for layout in _LAYOUTS.value:
            for row in _measure(layout, root):
                print(json.dumps(row), flush=True)
            for library in _LIBRARIES.value:
                shutil.rmtree(root / f"{library}_{layout}", ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---- the parent: a child per device count, the table ------------------------------------


def _markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(row.get(c, row.get("error", ""))) for c in COLUMNS) + " |"
              for row in rows]  # fmt: skip
    return "\n".join(lines)


def main(argv) -> None:
    del argv
    if _QUICK.value:
        flags.FLAGS.vocab, flags.FLAGS.dim, flags.FLAGS.repeats = 20_000, 16, 1
    if _CHILD.value:
        _child(_CHILD.value)
        return
    rows = []
    for devices in map(int, _DEVICES.value):
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        args = [a for a in sys.argv[1:] if not a.startswith(("--child", "--layouts", "--lib"))]
        for layout in _LAYOUTS.value:
            for library in _LIBRARIES.value:  # a process each: its memory its own
                done = subprocess.run(
                    [sys.executable, __file__, *args, f"--child={devices}",
                     f"--layouts={layout}", f"--libraries={library}", f"--vocab={_V.value}",
                     f"--dim={_D.value}", f"--repeats={_REPEATS.value}", "--noquick"],
                    env=env, stdout=subprocess.PIPE, text=True,
                )  # fmt: skip
                rows += [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
                if done.returncode:  # e.g. killed for memory: the row says so, the rest run
                    rows.append({"devices": devices, "layout": layout, "library": library,
                                 "error": f"child exit status {done.returncode}"})  # fmt: skip
    table = _markdown(rows)
    print(table)
    if _OUT.value:
        out = pathlib.Path(_OUT.value)
        out.mkdir(parents=True, exist_ok=True)
        command = "python experiments/bench_checkpoint.py " + " ".join(sys.argv[1:])
        (out / f"{_TAG.value}.md").write_text(f"`{command.strip()}`\n\n{table}\n")
        (out / f"{_TAG.value}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(json.dumps(rows))


if __name__ == "__main__":
    app.run(main)
