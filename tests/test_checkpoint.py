"""Checkpoints at scale (`w2v_jax.checkpoint`): the asynchronous save equals the
synchronous one bit for bit and leaves the step free to donate its buffers; one save in
flight at a time; a run waits for its last save; a writer that fails, or a process
killed mid-save, leaves the previous step, from which the run resumes exactly; one
checkpoint restores across meshes of 1, 2 and 4 simulated devices with every block
written once; the benchmark runs.

Damaged pieces and their advice are in test_faults.py; sharded checkpoints of several
processes in test_multiprocess.py.
"""

import functools
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest
from conftest import cpu_bitwise, tiny_config

from w2v_jax import trainer
from w2v_jax.checkpoint import store, writer
from w2v_jax.evaluation import keyed_vectors
from w2v_jax.step import update

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}


def _state(vocab: int = 64, dim: int = 8):
    """A sparse-AdaGrad train state with distinct values, on the default device."""
    cfg = update.StepConfig(model="skipgram", loss="neg", k=2, optimizer="adagrad", sparse=True)
    state = update.init_state(jax.random.PRNGKey(0), vocab, dim, cfg)
    keys = iter(jax.random.split(jax.random.PRNGKey(1), 4))
    noise = lambda x: x + jax.random.normal(next(keys), x.shape)  # noqa: E731
    return state._replace(params=jax.tree_util.tree_map(noise, state.params))


def _files(folder: pathlib.Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix == ".npy"}


def test_async_save_equals_the_sync_save_bit_for_bit_and_frees_the_buffers(tmp_path):
    """The step runs (donating the state) while the save is in flight: the pieces on disk
    are the synchronous save's, byte for byte, and the donated buffers were not held."""
    state = _state()
    want = jax.tree_util.tree_map(np.array, jax.device_get(state))  # copies, not views
    step = jax.jit(
        lambda s: s._replace(step=s.step + 1, params={k: v * 2 + 1 for k, v in s.params.items()}),
        donate_argnums=0,
    )
    saver = writer.Writer(tmp_path / "async")
    saver.save(state, 3, {"note": "x"})
    old, state = state, step(state)
    assert old.params["in_embed"].is_deleted()  # donated: the save holds a copy, not it
    saver.close()
    writer.save(tmp_path / "sync", want, 3, {"note": "x"})
    got = _files(tmp_path / "async" / "step_000000003")
    assert got and got == _files(tmp_path / "sync" / "step_000000003")
    loaded, meta = store.load(tmp_path / "async", want)
    assert meta["note"] == "x" and meta["step"] == 3
    for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(want),
                    strict=True):  # fmt: skip
        assert a.dtype == b.dtype and np.array_equal(a, b)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_device_state_is_never_saved(tmp_path, bad):
    """The on-device check (max |x| is not finite) catches NaN and both infinities: the
    save raises before writing, and the step saved before stays the checkpoint."""
    saver, state = writer.Writer(tmp_path), _state()
    saver.save(state, 1, {})
    table = state.opt_state["out_embed"]
    broken = state._replace(opt_state={**state.opt_state, "out_embed": table.at[5, 3].set(bad)})
    with pytest.raises(FloatingPointError, match="hold NaN or inf"):
        saver.save(broken, 2, {})
    saver.close()
    assert [p.name for p in tmp_path.iterdir()] == ["step_000000001"]


def test_one_save_in_flight_at_a_time(tmp_path, monkeypatch):
    """A save waits for the one before: the writes never overlap, in order."""
    spans, write_part = [], store.write_part

    def slow(folder, step, *args):
        start = time.monotonic()
        time.sleep(0.2)
        write_part(folder, step, *args)
        spans.append((step, start, time.monotonic()))

    monkeypatch.setattr(store, "write_part", slow)
    saver, state = writer.Writer(tmp_path), _state()
    for step in (1, 2, 3):
        saver.save(state, step, {})
        assert saver.in_flight
    saver.close()
    assert [s for s, _, _ in spans] == [1, 2, 3]
    assert all(a[2] <= b[1] for a, b in zip(spans, spans[1:], strict=False))
    assert [p.name for p in store.committed(tmp_path)] == ["step_000000002", "step_000000003"]


_tiny = functools.partial(tiny_config, max_steps=60)


# The tiny run killed mid-save: its save of step 40 writes its pieces, then hangs before
# the commit until SIGKILL.
KILLED_MID_SAVE = """
import sys, time
from w2v_jax import trainer
from w2v_jax.checkpoint import store
from w2v_jax.configs import tiny

write_part = store.write_part
def hangs_at_40(folder, step, *args):
    write_part(folder, step, *args)
    if step == 40:
        print("MID-SAVE", flush=True)
        time.sleep(600)
store.write_part = hangs_at_40
config = tiny.get_config()
config.max_steps = 60
trainer.train_and_evaluate(config, sys.argv[1])
"""


@pytest.fixture(scope="module")
def broken_saves(tmp_path_factory) -> dict:
    """A clean 60-step tiny run (its writer slowed); one whose writer raises at its
    second save (step 40), then rerun; one SIGKILLed mid-save of step 40 (pieces written,
    no commit), then rerun. What each left, and the reruns' results."""
    root = tmp_path_factory.mktemp("broken")
    out: dict = {"root": root}
    write_npy = store._write_npy

    def slow(f, data):
        time.sleep(0.02)
        return write_npy(f, data)

    with pytest.MonkeyPatch.context() as patch:  # the clean run, with a slow writer
        patch.setattr(store, "_write_npy", slow)
        trainer.train_and_evaluate(_tiny(), str(root / "clean"))
    out["clean_left"] = [p.name for p in store.committed(root / "clean" / "checkpoint")]
    out["threads_left"] = [t.name for t in threading.enumerate() if "checkpoint" in t.name]
    write_part = store.write_part

    def fails_at_40(folder, step, *args):
        if step == 40:
            raise OSError("disk full")
        write_part(folder, step, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store, "write_part", fails_at_40)
        with pytest.raises(OSError, match="disk full") as info:
            trainer.train_and_evaluate(_tiny(), str(root / "failed"))
    out["failed_error"] = str(info.value)
    out["failed_left"] = [p.name for p in store.committed(root / "failed" / "checkpoint")]
    out["failed_rerun"] = trainer.train_and_evaluate(_tiny(), str(root / "failed"))
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_MID_SAVE, str(root / "killed")],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()  # blocks until the save hangs (or the run ends)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    out["killed_line"] = line.strip()
    folder = root / "killed" / "checkpoint"
    out["killed_left"] = [p.name for p in store.committed(folder)]
    out["killed_partial"] = sorted(p.name for p in (folder / "step_000000040").iterdir())
    out["killed_rerun"] = trainer.train_and_evaluate(_tiny(), str(root / "killed"))
    return out


def _vectors(workdir: pathlib.Path) -> np.ndarray:
    return keyed_vectors.load_word2vec(workdir / "vectors.bin").vectors


@pytest.mark.slow
def test_a_run_returns_once_its_last_checkpoint_is_committed(broken_saves):
    """A slow writer: the run still returns with its final step committed (and the one
    before kept), no save left running."""
    assert broken_saves["clean_left"] == ["step_000000040", "step_000000060"]
    assert broken_saves["threads_left"] == []


@pytest.mark.slow
def test_a_failed_or_killed_save_leaves_the_previous_step(broken_saves):
    """The writer's error stops the run (raised on the loop's thread); SIGKILL mid-save
    leaves pieces without a marker: either way step 20 is the checkpoint, and the rerun
    resumes from it and finishes."""
    out = broken_saves
    assert out["failed_error"] == "disk full"
    assert out["failed_left"] == ["step_000000020"]
    assert out["killed_line"] == "MID-SAVE"
    assert out["killed_left"] == ["step_000000020"]
    assert (
        "COMMITTED" not in out["killed_partial"] and "process_00000.json" in out["killed_partial"]
    )
    for name in ("failed", "killed"):
        assert out[f"{name}_rerun"]["step"] == 60
        np.testing.assert_allclose(
            _vectors(out["root"] / name), _vectors(out["root"] / "clean"), rtol=1e-4, atol=1e-5
        )


@cpu_bitwise
@pytest.mark.slow
def test_a_failed_or_killed_save_resumes_bit_exactly(broken_saves):
    """Bit equality of resumed training: an XLA:CPU property (the twin above: tolerance)."""
    clean = (broken_saves["root"] / "clean" / "vectors.bin").read_bytes()
    for name in ("failed", "killed"):
        assert (broken_saves["root"] / name / "vectors.bin").read_bytes() == clean


@pytest.mark.slow
def test_one_checkpoint_restores_across_meshes_each_block_written_once(tmp_path):
    """1 device -> 2 devices split along V -> data 2 x model 2 -> data 4 replicated ->
    host -> 1 device (tests/checkpoint_mesh_check.py, 4 simulated devices): every restore
    equals the saved arrays bit for bit in the new layout; a replicated array is one piece
    however many devices hold it, a split one a piece per block, never more bytes than
    the state's."""
    env = {k: v for k, v in ENV.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "checkpoint_mesh_check.py"), str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["layout"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert len(rows) == 6
    for row in rows.values():
        assert row["identical"] and row["placed"], row
        assert row["piece_bytes"] == row["state_bytes"], row  # each block written once
    # Arrays: step, in table, in accumulator, out table, out accumulator, key.
    assert rows["data 4, replicated"]["pieces_per_array"] == [1, 1, 1, 1, 1, 1]
    assert rows["data 2 x model 2, split"]["pieces_per_array"] == [1, 2, 2, 2, 2, 1]


@pytest.mark.slow
def test_the_benchmark_runs_and_restores_identical_arrays(tmp_path):
    """experiments/bench_checkpoint.py --quick on 2 devices, saved sharded: a row per
    library, every restore (sharded, replicated) identical; timings are not asserted."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "bench_checkpoint.py"), "--quick",
         "--devices=2", "--layouts=sharded", "--out=", f"--dir={tmp_path}"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    got = {(r["layout"], r["library"]) for r in rows}
    assert got == {("sharded", "w2v_jax"), ("sharded", "orbax")}
    assert all(r["identical"] and r["disk_bytes"] > 0 for r in rows)
