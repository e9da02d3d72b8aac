"""The k sweep: points, summary files, plots, skipping, failures, resume and the CLIs."""

import csv
import json
import pathlib
import subprocess
import sys

import pytest
from conftest import tiny_config

from w2v_jax import run_folder, trainer
from w2v_jax.analysis import plots, sweep

ROOT = pathlib.Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class CountingTrain:
    """train_and_evaluate, counting the calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, config, workdir):
        self.calls.append(pathlib.Path(workdir).name)
        return trainer.train_and_evaluate(config, workdir)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A tiny sweep run once for the module: neg at k=2,3 and softmax, seed 0."""
    sweep_dir = tmp_path_factory.mktemp("sweep")
    train = CountingTrain()
    points = sweep.make_points(["neg", "softmax"], [2, 3], [0])
    result = sweep.run_sweep(tiny_config(epochs=1).lock(), sweep_dir, points, train_fn=train)
    return sweep_dir, points, result, train.calls


def test_points_and_names():
    points = sweep.make_points(["neg", "softmax", "hs"], [2, 3], [0, 1])
    assert [p.name for p in points] == [
        "neg_k2_s0", "neg_k3_s0", "softmax_s0", "hs_s0",
        "neg_k2_s1", "neg_k3_s1", "softmax_s1", "hs_s1",
    ]  # fmt: skip
    explicit = sweep.parse_points(["neg:5", "neg:15", "hs", "nce:5", "hs"], [0])
    assert [p.name for p in explicit] == ["neg_k5_s0", "neg_k15_s0", "hs_s0", "nce_k5_s0"]
    with pytest.raises(ValueError, match="needs a k"):
        sweep.parse_points(["neg"], [0])
    config = sweep.point_config(tiny_config(epochs=1).lock(), sweep.Point("nce", 7, 3))
    assert (config.loss.name, config.loss.k, config.seed) == ("nce", 7, 3)


def test_bad_point_config_fails_before_training(tmp_path):
    train = CountingTrain()
    points = [sweep.Point("neg", 2, 0), sweep.Point("bogus", 2, 0)]
    with pytest.raises(ValueError, match="bogus_k2_s0.*loss.name"):
        sweep.run_sweep(tiny_config(epochs=1).lock(), tmp_path, points, train_fn=train)
    assert train.calls == []


def test_sweep_writes_summary_and_plots(finished):
    sweep_dir, points, result, calls = finished
    assert calls == ["neg_k2_s0", "neg_k3_s0", "softmax_s0"]
    assert (result.failed, result.trained) == (0, 3)
    with (sweep_dir / "summary.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["point"] for r in table] == [p.name for p in points]
    assert {r["status"] for r in table} == {"ok"}
    assert [r["k"] for r in table] == ["2", "3", ""]  # k does not apply to softmax
    for column in ("steps", "wall_s", "words_per_s", "train_loss", "heldout_loss"):
        assert all(float(r[column]) > 0 for r in table), column
    assert all(r["analogy_total"] == "" for r in table)  # not applicable on synthetic
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["failed"] == 0 and summary["config"]["epochs"] == 1
    assert summary["rows"] == result.rows
    for point in points:
        assert (sweep_dir / point.name / "vectors.bin").exists()
        assert sweep.is_finished(sweep_dir / point.name)
    pngs = {p.name for p in (sweep_dir / "plots").glob("*.png")}
    assert {"vs_k_heldout_loss.png", "vs_k_train_loss.png", "convergence_train_loss.png"} <= pngs
    assert all((sweep_dir / "plots" / p).read_bytes()[:8] == PNG_MAGIC for p in pngs)


def test_rerun_skips_finished_points(finished):
    sweep_dir, points, first, _ = finished
    mtimes = {p.name: (sweep_dir / p.name / "vectors.bin").stat().st_mtime_ns for p in points}
    train = CountingTrain()
    again = sweep.run_sweep(
        tiny_config(epochs=1).lock(), sweep_dir, points, train_fn=train, make_plots=False
    )
    assert train.calls == [] and again.trained == 0
    assert mtimes == {
        p.name: (sweep_dir / p.name / "vectors.bin").stat().st_mtime_ns for p in points
    }
    assert again.rows == first.rows


def test_failed_point_is_recorded_and_the_sweep_goes_on(tmp_path):
    def nan_for_neg(config, point):
        if point.loss == "neg":
            config.optimizer.alpha = 1e30  # the loss overflows within a few steps

    train = CountingTrain()
    points = sweep.make_points(["neg", "softmax"], [2], [0])
    result = sweep.run_sweep(
        tiny_config(epochs=1).lock(),
        tmp_path,
        points,
        configure=nan_for_neg,
        train_fn=train,
        make_plots=False,
    )
    assert train.calls == ["neg_k2_s0", "softmax_s0"]  # the failure did not stop the sweep
    assert result.failed == 1
    neg, softmax = result.rows
    assert neg["status"] == "failed" and neg["error"].startswith("NonFiniteLossError")
    assert "Traceback" in (tmp_path / "neg_k2_s0" / "error.txt").read_text()
    assert softmax["status"] == "ok" and (tmp_path / "softmax_s0" / "vectors.bin").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["failed"] == 1
    # Without retry_failed a rerun keeps the failure; the finished point is skipped anyway.
    again = sweep.run_sweep(
        tiny_config(epochs=1).lock(), tmp_path, points, configure=nan_for_neg, train_fn=train,
        retry_failed=False, make_plots=False,
    )  # fmt: skip
    assert len(train.calls) == 2 and again.failed == 1


def test_interrupted_point_resumes_from_its_checkpoint(tmp_path):
    point = sweep.Point("neg", 2, 0)
    point_dir = tmp_path / point.name
    partial = sweep.point_config(tiny_config(epochs=1).lock(), point)
    partial.max_steps = 30  # stands in for a run killed after its step-30 checkpoint
    trainer.train_and_evaluate(partial, str(point_dir))
    before = run_folder.read_metrics(point_dir)[:3]
    assert not sweep.is_finished(point_dir)
    result = sweep.run_sweep(tiny_config(epochs=1).lock(), tmp_path, [point], make_plots=False)
    after = run_folder.read_metrics(point_dir)
    assert after[:3] == before  # kept: the run resumed rather than restarted
    assert result.rows[0]["status"] == "ok" and result.rows[0]["steps"] > 30
    assert sweep.is_finished(point_dir)


def test_seconds_are_cumulative_across_resumes():
    logged = [
        {"step": 10, "train/elapsed_s": 1.0},
        {"step": 20, "train/elapsed_s": 2.0},
        {"step": 25, "eval/heldout_loss": 3.0},  # no elapsed: interpolated
        {"step": 30, "train/elapsed_s": 0.5},  # the meter restarted on resume
    ]
    assert [r["seconds"] for r in plots._add_seconds(logged)] == [1.0, 2.0, 2.25, 2.5]


def _run(*args):
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_cli_exit_status_counts_failures(tmp_path):
    proc = _run(
        "experiments/sweep_k.py",
        "--config=w2v_jax/configs/tiny.py",
        "--config.epochs=1",
        "--config.optimizer.alpha=1e30",
        "--losses=softmax",
        "--seeds=0",
        f"--workdir={tmp_path}",
        "--noplots",
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "1 point(s) failed: softmax_s0" in proc.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["rows"][0]["status"] == "failed"
    bad = _run(
        "experiments/sweep_k.py",
        "--config=w2v_jax/configs/tiny.py",
        "--config.bogus=1",
        f"--workdir={tmp_path}",
    )
    assert bad.returncode == 125, bad.stderr[-2000:]
    dry = _run(
        "experiments/sweep_k.py",
        "--config=w2v_jax/configs/tiny.py",
        "--losses=neg,hs",
        "--ks=1,4",
        f"--workdir={tmp_path / 'dry'}",
        "--dry_run",
    )
    assert dry.returncode == 0, dry.stderr[-2000:]
    listed = [pathlib.Path(line.split()[0]).name for line in dry.stdout.splitlines()]
    assert listed == [p.name for p in sweep.make_points(["neg", "hs"], [1, 4], [0, 1, 2])]
    assert not (tmp_path / "dry").exists()  # nothing trained, nothing written


def test_plot_cli_regenerates_from_the_directory(finished, tmp_path):
    sweep_dir = finished[0]
    proc = _run("experiments/plot.py", f"--sweep_dir={sweep_dir}", f"--out_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = {p.name for p in (sweep_dir / "plots").glob("*.png")}
    assert {p.name for p in tmp_path.glob("*.png")} == expected
    assert len(proc.stdout.split()) == len(expected)


def test_rerun_with_other_settings_is_refused_before_training(finished):
    """Finished points made with other settings are not kept under this config: one line,
    nothing trained, the summary untouched (issue 26: it used to skip them and exit 0)."""
    sweep_dir, points, _, _ = finished
    summary = (sweep_dir / "summary.json").read_bytes()
    changed = tiny_config(epochs=1).lock()
    changed.dim = 16
    train = CountingTrain()
    with pytest.raises(ValueError, match=r"3 point\(s\) it keeps were made with other") as info:
        sweep.run_sweep(changed, sweep_dir, points, train_fn=train, make_plots=False)
    assert "neg_k2_s0: dim 8 -> 16" in str(info.value) and "\n" not in str(info.value)
    assert train.calls == [] and (sweep_dir / "summary.json").read_bytes() == summary


def test_sweep_cli_rerun_with_other_settings_exits_non_zero(finished):
    sweep_dir, _, _, _ = finished
    proc = subprocess.run(
        [sys.executable, "experiments/sweep_k.py", "--config=w2v_jax/configs/tiny.py",
         "--config.epochs=1", "--config.dim=16", f"--workdir={sweep_dir}",
         "--losses=neg,softmax", "--ks=2,3", "--seeds=0", "--plots=false"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0 and "made with other settings" in proc.stderr, proc.stderr
    assert "trained now" not in proc.stderr
