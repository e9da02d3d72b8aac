"""Point groups: a vmapped group of runs equals its points trained one by one: bit for bit
on XLA:CPU (`cpu_bitwise`), to GROUP_TOLERANCE on any backend."""

import functools
import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from absl import logging
from conftest import assert_same, cpu_bitwise, tiny_config

from w2v_jax import run_folder, trainer
from w2v_jax.analysis import plots, sweep
from w2v_jax.checkpoint import store
from w2v_jax.evaluation import keyed_vectors
from w2v_jax.point_groups import training
from w2v_jax.run import record

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMING = ("words_per_s", "elapsed_s", "loop_wall_s", "input_wait_s")
DIAGNOSTICS = ("train/loss", "train/grad_norm_in", "train/grad_norm_out")


_config = functools.partial(tiny_config, epochs=1)


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


# Group against alone: each case trains once per module (fixtures); its equality is asserted
# bit for bit (an XLA:CPU property: `cpu_bitwise`) and, by its twin, to GROUP_TOLERANCE on
# any backend. Elsewhere the vmapped kernels may add duplicate rows' scatters and the
# batch's sums in another order than the point's own program: float32 rounding per step,
# far below the tolerance over the tiny run's steps (the reruns' tolerance, test_trainer).
GROUP_TOLERANCE = dict(rtol=1e-4, atol=1e-5)


def _assert_same_vectors(in_group, alone, exact: bool):
    """vectors.bin byte for byte when ``exact``, else the same words, vectors in tolerance."""
    if exact:
        assert (in_group / "vectors.bin").read_bytes() == (alone / "vectors.bin").read_bytes()
        return
    got, want = (keyed_vectors.load_word2vec(d / "vectors.bin") for d in (in_group, alone))
    assert got.words == want.words
    np.testing.assert_allclose(got.vectors, want.vectors, **GROUP_TOLERANCE)


def _assert_same_run(in_group, alone, exact: bool):
    """Same vectors, checkpoint, config and logged rows, bit for bit when ``exact``, except
    timings and the step's own diagnostics (mean loss, gradient norms): their sums over the
    batch are reduced by the vmapped kernel in another order, so they agree to float32
    rounding. Not ``exact``: every float within GROUP_TOLERANCE; steps, data positions,
    counts and the config still equal."""
    _assert_same_vectors(in_group, alone, exact)
    for a, b in zip(_state(in_group), _state(alone), strict=True):
        assert_same(a, b, exact, **GROUP_TOLERANCE)
    assert (
        store.read_meta(store.latest(store.folder_in(in_group)))["position"]
        == store.read_meta(store.latest(store.folder_in(alone)))["position"]
    )
    rows_g, rows_a = run_folder.read_metrics(in_group), run_folder.read_metrics(alone)
    assert [r["step"] for r in rows_g] == [r["step"] for r in rows_a]
    for row_g, row_a in zip(rows_g, rows_a, strict=True):
        assert set(row_g) == set(row_a)
        for key, value in row_a.items():
            if key.endswith(TIMING):
                continue
            if key in DIAGNOSTICS:
                tolerance = dict(rtol=1e-6, atol=0) if exact else GROUP_TOLERANCE
                np.testing.assert_allclose(row_g[key], value, **tolerance, err_msg=key)
            elif exact or not isinstance(value, float):
                assert row_g[key] == value, key
            else:
                np.testing.assert_allclose(row_g[key], value, **GROUP_TOLERANCE, err_msg=key)
    assert json.loads((in_group / "config.json").read_text()) == json.loads(
        (alone / "config.json").read_text()
    )


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """``alone(overrides) -> (run folder, final metrics)``: ``_config(**overrides)`` trained
    by itself, once per module. A point's run alone does not depend on the group it is
    compared with, so the fixtures below share the runs of equal configs."""
    root = tmp_path_factory.mktemp("alone")
    runs = {}

    def train(overrides: dict) -> tuple[pathlib.Path, dict]:
        key = json.dumps(overrides, sort_keys=True)
        if key not in runs:
            workdir = root / f"run{len(runs)}"
            runs[key] = workdir, trainer.train_and_evaluate(_config(**overrides), str(workdir))
        return runs[key]

    return train


@pytest.fixture(
    scope="module",
    params=[
        {},  # word2vec's sparse SGD, negative sampling, one step per call
        {"optimizer.name": "adagrad", "optimizer.alpha": 0.3, "steps_per_call": 4},
        # Subsampling: every seed's epoch has its own number of batches.
        {"sample": 1e-3, "loss.name": "hs"},
        # Batches drawn on the device, from each point's own feed; the last call is shorter.
        {"input.mode": "device", "sample": 1e-3, "steps_per_call": 8},
    ],
    ids=["sgd-neg", "adagrad-scan", "subsampled-hs", "device-input"],
)
def group_and_alone(request, tmp_path_factory, alone):
    """The three points trained as one group (root / group{i}) and one by one: ``alone``'s
    (folder, final metrics) of each."""
    root = tmp_path_factory.mktemp("group")
    overrides = request.param
    configs = [_config(**{**overrides, **point}) for point in POINTS]
    in_group = training.train_group(configs, [str(root / f"group{i}") for i in range(3)])
    return root, overrides, in_group, [alone({**overrides, **point}) for point in POINTS]


@cpu_bitwise
@pytest.mark.slow
def test_group_equals_its_points_trained_alone(group_and_alone):
    root, _, _, alone = group_and_alone  # bit equality: XLA:CPU (see GROUP_TOLERANCE)
    for i, (workdir, _) in enumerate(alone):
        _assert_same_run(root / f"group{i}", workdir, exact=True)


@pytest.mark.slow
def test_group_equals_its_points_trained_alone_within_tolerance(group_and_alone):
    root, overrides, in_group, alone = group_and_alone
    assert [r["step"] for r in in_group] == [r["step"] for _, r in alone]
    for i, (workdir, _) in enumerate(alone):
        _assert_same_run(root / f"group{i}", workdir, exact=False)
    steps = {r["step"] for r in in_group}
    if overrides.get("sample") and overrides.get("input.mode") != "device":
        assert len(steps) > 1  # the points really had epochs of different lengths


@pytest.fixture(scope="module")
def resumed_points(tmp_path_factory, alone):
    """One point stopped at step 23, one fresh, one finished: the group resumes each; the
    first two also trained alone (``alone``'s folder and final metrics)."""
    root = tmp_path_factory.mktemp("resumed")
    configs = [_config(**point) for point in POINTS]
    dirs = [root / f"group{i}" for i in range(3)]
    trainer.train_and_evaluate(_config(**POINTS[0], max_steps=23), str(dirs[0]))
    trainer.train_and_evaluate(configs[2], str(dirs[2]))
    finished = (dirs[2] / "vectors.bin").stat().st_mtime_ns
    in_group = training.train_group(configs, [str(d) for d in dirs])
    untouched = (dirs[2] / "vectors.bin").stat().st_mtime_ns == finished
    return root, in_group, [alone(point) for point in POINTS[:2]], untouched


@cpu_bitwise
@pytest.mark.slow
def test_points_resume_from_different_steps(resumed_points):
    root, _, alone, _ = resumed_points  # bit equality: XLA:CPU (see GROUP_TOLERANCE)
    for i, (workdir, _) in enumerate(alone):
        _assert_same_vectors(root / f"group{i}", workdir, exact=True)


@pytest.mark.slow
def test_points_resume_from_different_steps_within_tolerance(resumed_points):
    root, in_group, alone, untouched = resumed_points
    assert untouched  # the finished point: nothing to do
    for i, (workdir, final) in enumerate(alone):
        assert in_group[i]["step"] == final["step"]
        _assert_same_vectors(root / f"group{i}", workdir, exact=False)


@pytest.fixture(scope="module")
def diverging_point(tmp_path_factory, alone):
    """A group of a sound point and one at alpha 1e30, and the sound point alone (its
    folder)."""
    root = tmp_path_factory.mktemp("diverging")
    configs = [_config(seed=0), _config(seed=1, **{"optimizer.alpha": 1e30})]
    results = training.train_group(configs, [str(root / "ok"), str(root / "nan")])
    return root, results, alone({"seed": 0})[0]


@cpu_bitwise
def test_a_diverging_point_fails_alone(diverging_point):
    root, _, sound = diverging_point  # bit equality: XLA:CPU (see GROUP_TOLERANCE)
    _assert_same_vectors(root / "ok", sound, exact=True)


def test_a_diverging_point_fails_alone_within_tolerance(diverging_point):
    root, results, sound = diverging_point
    assert isinstance(results[1], record.NonFiniteLossError)
    assert not (root / "nan" / "vectors.bin").exists()
    _assert_same_vectors(root / "ok", sound, exact=False)


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
    assert training.plan(configs) == [[0, 1], [2, 3], [4]]


@pytest.fixture(scope="module")
def cli_sweep(tmp_path_factory):
    """experiments/sweep_k.py --group_points over (neg:2, hs) x seeds (0, 1), and the point
    neg_k2_s1 trained alone (tmp/alone)."""
    root = tmp_path_factory.mktemp("cli")
    flags = [
        sys.executable,
        "experiments/sweep_k.py",
        "--config=w2v_jax/configs/tiny.py",
        "--config.epochs=1",
        f"--workdir={root}",
        "--points=neg:2,hs",
        "--seeds=0,1",
        "--plots=false",
        "--group_points",
    ]
    proc = subprocess.run(flags, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    config = sweep.point_config(_config(), sweep.Point("neg", 2, 1))
    trainer.train_and_evaluate(config, str(root / "alone"))
    return root, proc.stderr


@cpu_bitwise
@pytest.mark.slow
def test_sweep_cli_group_equals_the_point_alone(cli_sweep):
    # bit equality: XLA:CPU (see GROUP_TOLERANCE)
    _assert_same_vectors(cli_sweep[0] / "neg_k2_s1", cli_sweep[0] / "alone", exact=True)


@pytest.mark.slow
def test_sweep_cli_groups_the_seeds(cli_sweep):
    """--group_points: each (loss, k) trains its seeds as one group; the summary and the
    folders are those of the sweep without it (vectors within GROUP_TOLERANCE of the
    point alone; bit for bit on XLA:CPU, the test above); it counts what it trained (no
    "skipped" line for the points it has just trained); a rerun trains nothing."""
    cli_sweep, log = cli_sweep
    assert "4 points, 4 trained now, 0 failed" in log and "skipped" not in log, log
    summary = json.loads((cli_sweep / plots.SUMMARY_JSON).read_text())
    assert [r["point"] for r in summary["rows"]] == ["neg_k2_s0", "hs_s0", "neg_k2_s1", "hs_s1"]
    assert {r["status"] for r in summary["rows"]} == {"ok"}
    record = json.loads((cli_sweep / "hs_s1" / sweep.RESULT_FILE).read_text())
    assert record["group"] == ["hs_s0", "hs_s1"]
    _assert_same_vectors(cli_sweep / "neg_k2_s1", cli_sweep / "alone", exact=False)
    before = (cli_sweep / "hs_s0/vectors.bin").stat().st_mtime_ns
    points = sweep.parse_points(["neg:2", "hs"], [0, 1])
    result = sweep.run_sweep(_config(), cli_sweep, points, make_plots=False, group_points=True)
    assert result.trained == 0 and result.failed == 0
    assert (cli_sweep / "hs_s0/vectors.bin").stat().st_mtime_ns == before


@pytest.fixture(scope="module")
def device_input_in_parts(tmp_path_factory, alone):
    """Two device-input points (group_and_alone's "device-input" settings, so their runs
    alone are shared), one stopped at step 16, trained on as a group; and alone."""
    root = tmp_path_factory.mktemp("parts")
    overrides = {"input.mode": "device", "sample": 1e-3, "steps_per_call": 8}
    configs = [_config(**overrides, **point) for point in POINTS[:2]]
    dirs = [root / "group0", root / "group1"]
    trainer.train_and_evaluate(_config(**overrides, **POINTS[0], max_steps=16), str(dirs[0]))
    in_group = training.train_group(configs, [str(d) for d in dirs])
    return root, in_group, [alone({**overrides, **point}) for point in POINTS[:2]]


def _assert_parts_equal(root, alone, exact: bool):
    for i, (workdir, _) in enumerate(alone):
        _assert_same_vectors(root / f"group{i}", workdir, exact)
        for a, b in zip(_state(root / f"group{i}"), _state(workdir), strict=True):
            assert_same(a, b, exact, **GROUP_TOLERANCE)


@cpu_bitwise
@pytest.mark.slow
def test_device_input_points_at_different_steps_train_in_parts(device_input_in_parts):
    root, _, alone = device_input_in_parts  # bit equality: XLA:CPU (see GROUP_TOLERANCE)
    _assert_parts_equal(root, alone, exact=True)


@pytest.mark.slow
def test_device_input_points_at_different_steps_train_in_parts_within_tolerance(
    device_input_in_parts,
):
    root, in_group, alone = device_input_in_parts
    assert [r["step"] for r in in_group] == [r["step"] for _, r in alone]
    _assert_parts_equal(root, alone, exact=False)


def test_a_diverged_group_reports_its_points_as_failed_now(tmp_path, caplog):
    """A group whose point diverges: that point is "failed" (not "failed before, skipped")
    and both count as trained now."""

    def diverge_seed_1(config, point):
        if point.seed == 1:
            config.optimizer.alpha = 1e30

    points = sweep.parse_points(["neg:2"], [0, 1])
    with caplog.at_level(logging.INFO):
        result = sweep.run_sweep(
            _config(),
            tmp_path,
            points,
            configure=diverge_seed_1,
            make_plots=False,
            group_points=True,
        )
    assert (result.trained, result.failed) == (2, 1)
    assert [r["status"] for r in result.rows] == ["ok", "failed"]
    assert "skipped" not in caplog.text and "2 points, 2 trained now, 1 failed" in caplog.text
