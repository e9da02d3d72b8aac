"""Point groups: a vmapped group of runs equals its points trained one by one."""

import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from w2v_jax import checkpoint, run_folder, trainer
from w2v_jax.analysis import sweep
from w2v_jax.configs import tiny
from w2v_jax.point_groups import sweep as point_groups
from w2v_jax.point_groups import training

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMING = ("words_per_s", "elapsed_s", "loop_wall_s", "input_wait_s")
DIAGNOSTICS = ("train/loss", "train/grad_norm_in", "train/grad_norm_out")


def _config(**overrides):
    config = tiny.get_config()
    config.epochs = 1
    config.update_from_flattened_dict(overrides)
    return config


# Three points that differ in every kind of vmapped field: seed (init, step keys and the
# data order), the learning rates, the noise exponent (a per-point noise table) and the
# initial accumulator (AdaGrad's state at step 0).
POINTS = (
    {"seed": 0},
    {"seed": 1, "optimizer.alpha": 0.05, "optimizer.min_alpha": 0.001},
    {"seed": 2, "loss.ns_exponent": 0.5, "optimizer.initial_accumulator": 0.5},
)


def _state(workdir):
    run = run_folder.load_run(workdir)
    return jax.tree_util.tree_leaves(run.state)


def _assert_same_run(grouped, alone):
    """Same vectors, checkpoint, config and logged rows, bit for bit, except timings and
    the step's own diagnostics (mean loss, gradient norms): their sums over the batch are
    reduced by the vmapped kernel in another order, so they agree to float32 rounding."""
    assert (grouped / "vectors.bin").read_bytes() == (alone / "vectors.bin").read_bytes()
    for a, b in zip(_state(grouped), _state(alone), strict=True):
        np.testing.assert_array_equal(a, b)
    assert (
        checkpoint.read_meta(checkpoint.path_in(grouped))["position"]
        == (checkpoint.read_meta(checkpoint.path_in(alone))["position"])
    )
    rows_g, rows_a = trainer.read_metrics(grouped), trainer.read_metrics(alone)
    assert [r["step"] for r in rows_g] == [r["step"] for r in rows_a]
    for row_g, row_a in zip(rows_g, rows_a, strict=True):
        assert set(row_g) == set(row_a)
        for key, value in row_a.items():
            if key.endswith(TIMING):
                continue
            if key in DIAGNOSTICS:
                np.testing.assert_allclose(row_g[key], value, rtol=1e-6, err_msg=key)
            else:
                assert row_g[key] == value, key
    assert json.loads((grouped / "config.json").read_text()) == json.loads(
        (alone / "config.json").read_text()
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # word2vec's sparse SGD, negative sampling, one step per call
        {"optimizer.name": "adagrad", "optimizer.alpha": 0.3, "steps_per_call": 4},
        # Subsampling: every seed's epoch has its own number of batches.
        {"sample": 1e-3, "loss.name": "hs"},
        # Batches drawn on the device, from each point's own feed; the last call is shorter.
        {"input.mode": "device", "sample": 1e-3, "steps_per_call": 8},
    ],
    ids=["sgd-neg", "adagrad-scan", "subsampled-hs", "device-input"],
)
def test_group_equals_its_points_trained_alone(tmp_path, overrides):
    configs = [_config(**{**overrides, **point}) for point in POINTS]
    results = training.train_group(configs, [str(tmp_path / f"group{i}") for i in range(3)])
    for i, config in enumerate(configs):
        alone = trainer.train_and_evaluate(config, str(tmp_path / f"alone{i}"))
        assert results[i]["step"] == alone["step"]
        _assert_same_run(tmp_path / f"group{i}", tmp_path / f"alone{i}")
    steps = {r["step"] for r in results}
    if overrides.get("sample") and overrides.get("input.mode") != "device":
        assert len(steps) > 1  # the points really had epochs of different lengths


def test_points_resume_from_different_steps(tmp_path):
    """One point stopped at step 23, one fresh, one finished: the group resumes each."""
    configs = [_config(**point) for point in POINTS]
    dirs = [tmp_path / f"group{i}" for i in range(3)]
    trainer.train_and_evaluate(_config(**POINTS[0], max_steps=23), str(dirs[0]))
    trainer.train_and_evaluate(configs[2], str(dirs[2]))
    finished = (dirs[2] / "vectors.bin").stat().st_mtime_ns
    results = training.train_group(configs, [str(d) for d in dirs])
    assert (dirs[2] / "vectors.bin").stat().st_mtime_ns == finished  # nothing to do
    for i, config in enumerate(configs[:2]):
        alone = trainer.train_and_evaluate(config, str(tmp_path / f"alone{i}"))
        assert results[i]["step"] == alone["step"]
        assert (dirs[i] / "vectors.bin").read_bytes() == (
            tmp_path / f"alone{i}" / "vectors.bin"
        ).read_bytes()


def test_a_diverging_point_fails_alone(tmp_path):
    configs = [_config(seed=0), _config(seed=1, **{"optimizer.alpha": 1e30})]
    results = training.train_group(configs, [str(tmp_path / "ok"), str(tmp_path / "nan")])
    assert isinstance(results[1], trainer.NonFiniteLossError)
    assert not (tmp_path / "nan" / "vectors.bin").exists()
    trainer.train_and_evaluate(configs[0], str(tmp_path / "alone"))
    assert (tmp_path / "ok/vectors.bin").read_bytes() == (
        tmp_path / "alone/vectors.bin"
    ).read_bytes()


def test_what_may_differ_in_a_group():
    with pytest.raises(ValueError, match=r"config.window differs between points 0 \(2\) and 1"):
        training.check_group([_config(), _config(window=3)])
    with pytest.raises(ValueError, match="parallel.mode='mesh'"):
        training.check_group([_config(**{"parallel.mode": "mesh"})])
    base = training.group_key(_config())
    assert base == training.group_key(_config(**POINTS[2]))
    assert base != training.group_key(_config(**{"loss.k": 7}))
    assert training.group_key(_config(**{"parallel.mode": "pmap"})) is None
    configs = [_config(seed=s, **{"loss.k": k}) for k in (2, 3) for s in (0, 1)]
    configs.append(_config(**{"parallel.mode": "mesh"}))
    assert point_groups.plan(configs) == [[0, 1], [2, 3], [4]]


def test_sweep_cli_groups_the_seeds(tmp_path):
    """--group_points: each (loss, k) trains its seeds as one group; the summary and the
    folders are those of the sweep without it; a rerun trains nothing."""
    flags = [
        sys.executable,
        "experiments/sweep_k.py",
        "--config=w2v_jax/configs/tiny.py",
        "--config.epochs=1",
        f"--workdir={tmp_path}",
        "--points=neg:2,hs",
        "--seeds=0,1",
        "--plots=false",
        "--group_points",
    ]
    subprocess.run(flags, cwd=ROOT, check=True, timeout=600)
    summary = json.loads((tmp_path / sweep.SUMMARY_JSON).read_text())
    assert [r["point"] for r in summary["rows"]] == ["neg_k2_s0", "hs_s0", "neg_k2_s1", "hs_s1"]
    assert {r["status"] for r in summary["rows"]} == {"ok"}
    record = json.loads((tmp_path / "hs_s1" / sweep.RESULT_FILE).read_text())
    assert record["group"] == ["hs_s0", "hs_s1"]
    config = sweep.point_config(_config(), sweep.Point("neg", 2, 1))
    trainer.train_and_evaluate(config, str(tmp_path / "alone"))
    assert (tmp_path / "neg_k2_s1/vectors.bin").read_bytes() == (
        tmp_path / "alone/vectors.bin"
    ).read_bytes()
    before = (tmp_path / "hs_s0/vectors.bin").stat().st_mtime_ns
    result = point_groups.run_sweep(
        _config(), tmp_path, sweep.parse_points(["neg:2", "hs"], [0, 1]), make_plots=False
    )
    assert result.trained == 0 and result.failed == 0
    assert (tmp_path / "hs_s0/vectors.bin").stat().st_mtime_ns == before


def test_device_input_points_at_different_steps_train_in_parts(tmp_path):
    overrides = {"input.mode": "device", "steps_per_call": 8}
    configs = [_config(**overrides, **point) for point in POINTS[:2]]
    dirs = [tmp_path / "group0", tmp_path / "group1"]
    trainer.train_and_evaluate(_config(**overrides, **POINTS[0], max_steps=16), str(dirs[0]))
    results = training.train_group(configs, [str(d) for d in dirs])
    for i, config in enumerate(configs):
        alone = trainer.train_and_evaluate(config, str(tmp_path / f"alone{i}"))
        assert results[i]["step"] == alone["step"]
        assert (dirs[i] / "vectors.bin").read_bytes() == (
            tmp_path / f"alone{i}" / "vectors.bin"
        ).read_bytes()
        for a, b in zip(_state(dirs[i]), _state(tmp_path / f"alone{i}"), strict=True):
            np.testing.assert_array_equal(a, b)
