"""pmap and mesh-sharded steps equal the single-device step on the same global batch.

Each case runs tests/multidevice_check.py in a subprocess with 2 or 4 simulated CPU
devices (XLA_FLAGS must be set before JAX initialises, so not in this process).
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from conftest import cpu_bitwise

SCRIPT = pathlib.Path(__file__).with_name("multidevice_check.py")
CASES = [
    (2, "neg,hs,softmax", "sgd", "skipgram,cbow"),
    (2, "sampled_softmax", "adam", "skipgram"),
    (4, "nce", "sgd,adam", "skipgram"),
    (2, "neg,softmax", "adagrad,rowwise_adagrad", "skipgram"),
]


@pytest.fixture(scope="module", params=CASES, ids=lambda case: str(case))
def parallel_rows(request) -> tuple[int, list[dict]]:
    """The check script's rows for one case (devices, losses, optimizers, models)."""
    devices, losses, optimizers, models = request.param
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(devices), losses, optimizers, models],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    expected = len(losses.split(",")) * len(optimizers.split(",")) * len(models.split(","))
    assert len(rows) == expected
    return devices, rows


@cpu_bitwise
@pytest.mark.slow
def test_pmap_replicas_stay_identical(parallel_rows):
    """Replicas applying the same gathered rows in the same order stay bit-identical: an
    XLA:CPU property (on a GPU, scatter-add atomics can order the additions differently on
    each replica unless config.deterministic); the twin's tolerance holds everywhere."""
    _, rows = parallel_rows
    for row in rows:
        assert row["pmap_replicas_identical"], row


@pytest.mark.slow
def test_parallel_steps_equal_single_device(parallel_rows):
    """The tolerance twin of test_pmap_replicas_stay_identical, on every backend: each
    parallel step within 1e-5 of one device, and the pmap replicas within 1e-5 of each other."""
    devices, rows = parallel_rows
    for row in rows:
        assert row["pmap_replica_diff"] < 1e-5, row
        # Same maths, different summation order of duplicate rows: float32 rounding only.
        keys = ["pmap_diff", "mesh_diff", "mesh_vocab_diff"] + ["mesh_2d_diff"] * (devices >= 4)
        for key in keys:
            assert row[key] < 1e-5, (key, row)


# The three runs on 2 simulated devices, in one process (one start of JAX): pmap, mesh,
# and the mesh with four sub-steps per call, into sys.argv[1]/{pmap,mesh,mesh_scan}.
TWO_DEVICE_RUNS = """
import sys
from w2v_jax import trainer
from w2v_jax.configs import tiny
for name, mode, steps_per_call in (("pmap", "pmap", 1), ("mesh", "mesh", 1),
                                   ("mesh_scan", "mesh", 4)):
    config = tiny.get_config()
    config.parallel.mode = mode
    config.steps_per_call = steps_per_call
    trainer.train_and_evaluate(config, sys.argv[1] + "/" + name)
"""


@pytest.fixture(scope="module")
def two_device_runs(tmp_path_factory):
    """The tiny run under pmap, mesh and mesh with 4 steps per call on 2 devices (a child
    process), and on one device here with 1 and 4 steps per call (single, single_scan)."""
    from w2v_jax import trainer
    from w2v_jax.configs import tiny

    root = tmp_path_factory.mktemp("two_devices")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    proc = subprocess.run(
        [sys.executable, "-c", TWO_DEVICE_RUNS, str(root)],
        cwd=SCRIPT.parents[1], env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, steps_per_call in (("single", 1), ("single_scan", 4)):
        config = tiny.get_config()
        config.steps_per_call = steps_per_call
        trainer.train_and_evaluate(config, str(root / name))
    return root


def _vectors(workdir):
    from w2v_jax.evaluation import keyed_vectors

    return keyed_vectors.load_word2vec(workdir / "vectors.bin").vectors


@pytest.mark.slow
def test_full_runs_on_two_devices_match_one_device(two_device_runs):
    """train_and_evaluate under pmap and mesh ends where the single-device run ends."""
    ref = _vectors(two_device_runs / "single")
    for mode in ("pmap", "mesh"):
        got = _vectors(two_device_runs / mode)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4, err_msg=mode)


@pytest.mark.slow
def test_mesh_scan_matches_single_device_scan(two_device_runs):
    """Four sub-steps per call on a 2-device mesh end where one device ends."""
    got = _vectors(two_device_runs / "mesh_scan")
    np.testing.assert_allclose(got, _vectors(two_device_runs / "single_scan"), rtol=0, atol=1e-4)
