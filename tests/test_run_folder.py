"""Who owns a run or sweep folder (`w2v_jax.run.claim`): a lock that dies with its holder,
a marker that says what wrote the folder, and nothing the user wrote overwritten.

The lock is tried with real processes: a second run on a held folder is one line naming the
holder's pid; after the holder is killed with SIGKILL a new run takes the folder.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
from conftest import tiny_config

from w2v_jax import errors, run_folder, trainer
from w2v_jax.analysis import sweep
from w2v_jax.run import claim

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _snapshot(folder: pathlib.Path) -> dict:
    """Every file's bytes (in subfolders too, hidden ones included)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> pathlib.Path:
    """A finished tiny run of 20 steps, copied by the tests that change it."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    trainer.train_and_evaluate(tiny_config(max_steps=20), str(workdir))
    return workdir


def _copy(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    return dst


def _fake_train(config, workdir):
    """A sweep's train_fn that writes a run's config.json, as a run would."""
    pathlib.Path(workdir, run_folder.CONFIG).write_text(config.to_json_best_effort())
    return {}


# ---- the lock, with real processes ------------------------------------------------------


def _main(workdir, *flags):
    return subprocess.Popen(
        [
            sys.executable, "-m", "w2v_jax.main", "--config=w2v_jax/configs/tiny.py",
            f"--workdir={workdir}", *flags,
        ],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_a_second_run_is_refused_and_a_killed_holder_leaves_no_lock(tmp_path):
    workdir = tmp_path / "run"
    big = "--config.synthetic.num_tokens=2000000"  # trains for minutes: it is still running
    holder = _main(workdir, big, "--config.log_every=1")
    try:
        deadline = time.monotonic() + 120
        while not run_folder.read_metrics(workdir) and holder.poll() is None:
            assert time.monotonic() < deadline, "the holder never started training"
            time.sleep(0.1)
        assert holder.poll() is None, holder.communicate()[1]
        before = (workdir / run_folder.CONFIG).read_bytes()
        second = _main(workdir, "--config.dim=16")
        _, err = second.communicate(timeout=120)
        assert second.returncode == 1 and len(err.strip().splitlines()) == 1, err
        assert f"is in use by another run (pid {holder.pid})" in err, err
        assert (workdir / run_folder.CONFIG).read_bytes() == before  # the holder's, kept
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate(timeout=60)
    assert (workdir / claim.LOCK).exists()  # the file stays; its lock died with the holder
    third = _main(workdir, big, "--config.max_steps=1")
    _, err = third.communicate(timeout=120)
    assert third.returncode == 0, err
    assert "in use" not in err and not (workdir / claim.LOCK).exists()


def test_one_process_holding_a_folder_refuses_a_second_claim(tmp_path):
    with claim.hold(tmp_path, claim.RUN):
        with pytest.raises(errors.RunFolderError, match=rf"pid {os.getpid()}, this process"):
            trainer.train_and_evaluate(tiny_config(max_steps=1), str(tmp_path))
    trainer.train_and_evaluate(tiny_config(max_steps=1), str(tmp_path))  # released: taken


def test_a_stale_lock_file_is_taken(tmp_path):
    (tmp_path / claim.LOCK).write_text("999999 elsewhere\n")  # a holder killed long ago
    trainer.train_and_evaluate(tiny_config(max_steps=1), str(tmp_path))
    assert not (tmp_path / claim.LOCK).exists()


def test_a_run_marks_its_folder_and_releases_it(finished):
    marker = json.loads((finished / claim.MARKER).read_text())
    assert marker["kind"] == "run" and marker["w2v_jax"]
    assert not (finished / claim.LOCK).exists()


# ---- what is in the folder --------------------------------------------------------------


def test_the_users_files_are_refused_and_left_alone(tmp_path):
    workdir = tmp_path / "mine"
    workdir.mkdir()
    (workdir / "config.json").write_text('{"mine": 1}\n')
    (workdir / "vectors.txt").write_text("my vectors\n")
    before = _snapshot(workdir)
    with pytest.raises(errors.RunFolderError) as info:
        trainer.train_and_evaluate(tiny_config(max_steps=1), str(workdir))
    message = str(info.value)
    assert "\n" not in message
    assert (
        "holds files w2v_jax did not write (config.json (not a w2v_jax config), vectors.txt)"
        in (message)
    )
    assert _snapshot(workdir) == before  # nothing written, the lock file removed


def test_a_project_folder_is_refused(tmp_path):
    (tmp_path / "README.md").write_text("# mine\n")
    with pytest.raises(errors.RunFolderError, match=r"did not write \(README.md\)"):
        trainer.train_and_evaluate(tiny_config(max_steps=1), str(tmp_path))


def test_empty_workdir_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(errors.RunFolderError, match=r"^--workdir is empty; pass a folder"):
        trainer.train_and_evaluate(tiny_config(max_steps=1), "")
    assert list(tmp_path.iterdir()) == []


def test_empty_corpus_name_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"^--config.corpus.name is empty; pass synthetic"):
        trainer.train_and_evaluate(tiny_config(**{"corpus.name": ""}), str(tmp_path / "run"))


def test_a_run_folder_from_before_markers_is_accepted(finished, tmp_path):
    workdir = _copy(finished, tmp_path / "run")
    (workdir / claim.MARKER).unlink()  # as a run written before this change left it
    before = _snapshot(workdir)
    result = trainer.train_and_evaluate(tiny_config(max_steps=20), str(workdir))
    assert result["step"] == 20 and _snapshot(workdir) == before
    (workdir / "notes.txt").write_text("mine")  # not a run's file: the folder is not a run's
    with pytest.raises(errors.RunFolderError, match=r"did not write \(notes.txt\)"):
        trainer.train_and_evaluate(tiny_config(max_steps=20), str(workdir))


def test_a_sweep_folder_refuses_a_run_and_a_run_folder_refuses_a_sweep(finished, tmp_path):
    points = [sweep.Point("neg", 2, 0)]
    sweep_dir = tmp_path / "sweep"
    sweep.run_sweep(tiny_config(), sweep_dir, points, train_fn=_fake_train, make_plots=False)
    assert json.loads((sweep_dir / claim.MARKER).read_text())["kind"] == "sweep"
    with pytest.raises(errors.RunFolderError, match=r"is a sweep's folder.*point folders"):
        trainer.train_and_evaluate(tiny_config(max_steps=1), str(sweep_dir))
    with pytest.raises(errors.RunFolderError, match=r"is a run's folder.*new folder"):
        sweep.run_sweep(tiny_config(), finished, points, train_fn=_fake_train, make_plots=False)
    # The same folders as versions before markers left them: told apart by their files.
    (sweep_dir / claim.MARKER).unlink()
    run_dir = _copy(finished, tmp_path / "run")
    (run_dir / claim.MARKER).unlink()
    with pytest.raises(errors.RunFolderError, match=r"is a sweep's folder \(neg_k2_s0, summ"):
        trainer.train_and_evaluate(tiny_config(max_steps=1), str(sweep_dir))
    with pytest.raises(errors.RunFolderError, match=r"is a run's folder \(checkpoint, conf"):
        sweep.run_sweep(tiny_config(), run_dir, points, train_fn=_fake_train, make_plots=False)
    rerun = sweep.run_sweep(
        tiny_config(), sweep_dir, points, train_fn=_fake_train, make_plots=False
    )
    assert rerun.trained == 1  # the old sweep is taken (its point had no result yet)


def test_a_sweep_holds_its_folder(tmp_path):
    with claim.hold(tmp_path, claim.SWEEP):
        with pytest.raises(errors.RunFolderError, match=r"in use by another sweep"):
            sweep.run_sweep(
                tiny_config(), tmp_path, [sweep.Point("neg", 2, 0)], train_fn=_fake_train
            )


def test_two_processes_refuse_a_held_folder_together(tmp_path):
    """A run of two processes claims its folder once (process 0); when another holds it,
    both stop with the same line before any writes, neither waits on the other."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    launch = [
        sys.executable, str(ROOT / "experiments" / "launch_local.py"), "--num_processes=2",
        "--local_devices=1", "--timeout_secs=120", "--grace_secs=5", "--",
        sys.executable, "-m", "w2v_jax.main", "--config=w2v_jax/configs/tiny.py",
        "--config.parallel.mode=mesh", f"--workdir={workdir}",
    ]  # fmt: skip
    with claim.hold(workdir, claim.RUN):
        proc = subprocess.run(
            launch, cwd=ROOT, capture_output=True, text=True, timeout=180,
            env={k: v for k, v in os.environ.items() if k != "XLA_FLAGS"},
        )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert out.count(f"is in use by another run (pid {os.getpid()})") == 2, out[-3000:]
    assert "Traceback" not in out and sorted(p.name for p in workdir.iterdir()) == []
