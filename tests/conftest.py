"""Test configuration: float32, strict rank promotion, and the real-data directory."""

import atexit
import importlib.util
import os
import pathlib
import shutil
import tempfile

import jax
import numpy as np
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


def _share_compilations() -> None:
    """Each program compiles once per test run: JAX's persistent compilation cache in
    JAX_COMPILATION_CACHE_DIR, a fresh folder for this run unless the variable is set
    (.ci/run sets one for both of its runs), removed at exit by the process that made it.

    Most of a test's time is compiling, and a tiny run's programs compiled again in every
    test that trains one (a new run jits new functions: JAX's in-memory cache misses) and
    in every process that starts (xdist's workers, the tests' subprocesses, which inherit
    the variables). Every program is cached (minimum compile time 0); a size limit turns on
    the cache's file lock, so that no process reads an entry another is still writing. An
    entry's key hashes the program, the devices, XLA_FLAGS and the compile options: a hit is
    the executable that compiling would have produced.
    """
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        folder = tempfile.mkdtemp(prefix="w2v_jax_compilations_")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    if importlib.util.find_spec("filelock"):  # requirements.txt; JAX needs it for the lock
        os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(8 << 30))
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update(
        "jax_persistent_cache_min_compile_time_secs",
        float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
    )
    size = os.environ.get("JAX_COMPILATION_CACHE_MAX_SIZE")
    if size:
        jax.config.update("jax_compilation_cache_max_size", int(size))


_share_compilations()

_EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"


def _smoke_data():
    """experiments/smoke_data.py, loaded by path (experiments/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("smoke_data", _EXPERIMENTS / "smoke_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


jax.config.update("jax_enable_x64", False)

# Bit equality of float results (reruns, resume, a path against its reference) is a
# property of XLA:CPU: GPU scatter-adds and reductions may add in another order on each
# run (unless config.deterministic), TPUs promise nothing we know of. Every test that
# asserts it carries this marker and has a tolerance twin that runs on every backend.
BITWISE_REASON = (
    "bit equality is an XLA:CPU property (GPU scatter-adds and reductions are not "
    "deterministic unless config.deterministic); the tolerance twin runs here"
)
cpu_bitwise = pytest.mark.skipif(jax.default_backend() != "cpu", reason=BITWISE_REASON)
# Cheap checks run twice through `assert_same`: bit for bit (XLA:CPU) and within tolerance.
EXACTNESS = (
    pytest.param(True, marks=cpu_bitwise, id="bitwise"),
    pytest.param(False, id="tolerance"),
)


def assert_same(got, want, exact: bool, *, rtol: float, atol: float, err_msg: str = "") -> None:
    """Bit for bit when ``exact`` (the XLA:CPU case), else within ``rtol`` / ``atol``."""
    if exact:
        np.testing.assert_array_equal(got, want, err_msg=err_msg)
    else:
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=err_msg)


def tiny_config(**overrides):
    """The tiny config (``configs/tiny.py``) with dotted overrides, e.g.
    ``tiny_config(epochs=1, **{"loss.name": "nce"})``."""
    from w2v_jax.configs import tiny  # after the jax.config updates above

    config = tiny.get_config()
    config.update_from_flattened_dict(overrides)
    return config


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    """The directory of real corpora named by W2V_DATA_DIR.

    Missing data skips the test on a workstation, but fails it under CI=true: CI must
    never pass by skipping the real-data tests.
    """
    value = os.environ.get("W2V_DATA_DIR")
    path = pathlib.Path(value) if value else None
    if path is None or not path.is_dir():
        msg = (
            f"W2V_DATA_DIR={value!r} is not a directory; point it at shared/data "
            "(export W2V_DATA_DIR=../shared/data)"
        )
        if _in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture
def data_file(data_dir):
    """Returns a function that resolves a file under W2V_DATA_DIR, failing in CI if absent."""

    def resolve(name: str) -> pathlib.Path:
        path = data_dir / name
        if not path.is_file():
            msg = f"{path} is missing; see shared/data/SOURCES.md for the file expected"
            if _in_ci():
                pytest.fail(msg)
            pytest.skip(msg)
        return path

    return resolve


@pytest.fixture
def zipf_text_dir(tmp_path) -> pathlib.Path:
    """A data directory with a Zipf text of 200 word types (``tiny.txt``, 20k tokens) and
    analogy (one semantic, one syntactic section) and word-pair files over its words
    (experiments/smoke_data.py, which gpu_check.py's CPU smoke run uses too)."""
    root = tmp_path / "data"
    root.mkdir()
    return _smoke_data().write(root)


# The README's quick set (`-m "not slow"`) is meant to finish within 5 minutes on a 2-core
# CPU. Besides the tests marked `@pytest.mark.slow` where they are written, these are the
# slowest of the rest by `python -m pytest -q -m "not slow" --durations=100` (2026-12-07):
# end-to-end runs, real-process checks and the larger parametrised equalities, each family
# keeping a cheaper member in the quick set. CI runs them with the slow set. An entry is a
# test (every parameter) or one parametrised id; one that matches nothing is an error.
SLOW_IN_CI_ONLY = (
    "test_trainer.py::test_same_config_and_seed_give_bit_identical_vectors",
    "test_trainer.py::test_same_config_and_seed_give_the_same_vectors_within_tolerance",
    "test_trainer.py::test_stopped_run_resumes_to_identical_parameters",
    "test_trainer.py::test_stopped_run_resumes_to_the_same_parameters_within_tolerance",
    "test_trainer.py::test_every_output_layer_trains_under_the_default_optimiser",
    "test_trainer.py::test_non_finite_loss_stops_with_step_and_keeps_checkpoint",
    "test_point_groups.py::test_a_diverging_point_fails_alone",
    "test_point_groups.py::test_a_diverging_point_fails_alone_within_tolerance",
    "test_point_groups.py::test_a_diverged_group_reports_its_points_as_failed_now",
    "test_sweep.py::test_cli_exit_status_counts_failures",
    "test_sweep.py::test_interrupted_point_resumes_from_its_checkpoint",
    "test_sweep.py::test_plot_cli_regenerates_from_the_directory",
    "test_run_folder.py::test_a_second_run_is_refused_and_a_killed_holder_leaves_no_lock",
    "test_multiprocess.py::test_sigterm_to_the_launcher_saves_one_step_on_both_and_the_rerun_resumes",
    "test_multiprocess.py::test_a_damaged_only_step_starts_from_step_0_after_one_line",
    "test_penalty.py::test_gradients_match_finite_differences",
    "test_penalty.py::test_trains_under_the_default_optimiser",
    "test_penalty.py::test_tiny_run_learns_and_self_normalises",
    "test_penalty.py::test_the_configured_weight_reaches_the_step",
    "test_lbl.py::test_gradients_of_the_context_matrices_check_numerically",
    "test_lbl.py::test_every_layer_trains_and_sparse_equals_dense",
    "test_lbl.py::test_softmax_loss_matches_a_naive_numpy_reference",
    "test_plots.py::test_plot_cli_redraws_a_figure_from_its_json",
    "test_notebooks.py::test_quickstart_tpu_branch_trains_configs_tpu",
    "test_gpu_check.py::test_a_failing_part_is_recorded_and_the_next_one_runs",
    "test_evaluate_cli.py::test_cli_fails_clearly",
    "test_evaluator.py::test_train_and_evaluate_writes_the_new_keys",
    "test_faults.py::test_evaluation_refuses_non_finite_vectors_and_warns_about_zero_ones",
    "test_faults.py::test_claim1_without_its_data_is_one_line_before_training",
    "test_faults.py::test_a_rerun_without_a_checkpoint_says_it_starts_from_step_0",
    "test_on_device.py::test_same_seed_and_step_give_the_same_batch_and_restarts_continue_identically",
    "test_optimizers.py::test_untouched_rows_keep_weights_and_accumulators_through_train_step",
    *(
        f"test_optimizers.py::test_sparse_adagrad_step_equals_dense_optax_adagrad[{x}]"
        for x in (
            "skipgram-nce-pair",
            "skipgram-sampled_softmax-pair",
            "cbow-nce-pair",
            "cbow-sampled_softmax-row",
            "cbow-sampled_softmax-pair",
            "skipgram-nce-row",
            "skipgram-sampled_softmax-row",
            "cbow-nce-row",
            "skipgram-hs-pair",
            "skipgram-softmax-pair",
        )
    ),  # fmt: skip
    *(
        f"test_update.py::test_fused_kernels_equal_the_loss_library_path[{x}]"
        for x in (
            "skipgram-sampled_softmax-block-context",
            "cbow-neg-pair-centre",
            "skipgram-nce-pair-centre",
            "skipgram-neg-block-centre",
            "skipgram-hs-pair-centre",
        )
    ),  # fmt: skip
)


# The slow set's heaviest files, heaviest first (CPU seconds of their slow tests, busy,
# docs/performance.md "The test suite"). Whole files go to the workers (below), so a heavy
# file handed out last is a tail that one worker runs while the other idles: these go
# first (longest first, as for any greedy schedule), then the rest, most tests first.
HEAVIEST_FILES_FIRST = (
    "test_multiprocess.py",
    "test_multidevice.py",
    "test_target_negatives.py",
    "test_benchmarks.py",
    "test_notebooks.py",
    "test_mesh_collectives.py",
    "test_point_groups.py",
    "test_lbl.py",
    "test_optimizers.py",
    "test_trainer.py",
    "test_gpu_check.py",
    "test_update.py",
)


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """Under ``-n``, each worker runs whole test files (xdist's ``--dist loadfile``), the
    files of HEAVIEST_FILES_FIRST first, then the files with the most tests: a
    module-scoped fixture (a trained run, a launch of processes that several tests read) is
    then built once, not once per worker that gets one of its tests, as xdist's default
    (``load``) hands out runs of consecutive tests; and no heavy file is left for last."""
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadFileScheduling

    rank = {name: i for i, name in enumerate(HEAVIEST_FILES_FIRST)}

    class HeaviestFilesFirst(LoadFileScheduling):
        def _assign_work_unit(self, node):
            # xdist queued the files most tests first; min keeps that order among equals
            scope = min(self.workqueue, key=lambda s: rank.get(pathlib.PurePath(s).name, len(rank)))
            self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

    return HeaviestFilesFirst(config, log)


def pytest_configure(config):
    """A HEAVIEST_FILES_FIRST entry naming no test file is an error (a renamed file)."""
    missing = [n for n in HEAVIEST_FILES_FIRST if not pathlib.Path(__file__).with_name(n).is_file()]
    if missing:
        raise pytest.UsageError(f"conftest.HEAVIEST_FILES_FIRST names no file: {missing}")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Marks `SLOW_IN_CI_ONLY` slow, before `-m` selects; fails collection on an entry whose
    test function its collected module does not define (a renamed test must not slip back
    into the quick set unnoticed)."""
    modules = {}
    for item in items:
        name = f"{item.path.name}::{item.name}"
        modules[item.path.name] = item.module
        if name in SLOW_IN_CI_ONLY or name.split("[")[0] in SLOW_IN_CI_ONLY:
            item.add_marker(pytest.mark.slow)
    missing = [
        entry
        for entry in SLOW_IN_CI_ONLY
        if (module := modules.get(entry.split("::")[0])) is not None
        and not hasattr(module, entry.split("::")[1].split("[")[0])
    ]
    if missing:
        raise pytest.UsageError(f"conftest.SLOW_IN_CI_ONLY names no test: {missing}")
