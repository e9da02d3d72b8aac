"""Test configuration: float32, strict rank promotion, and the real-data directory."""

import importlib.util
import os
import pathlib

import jax
import numpy as np
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

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
