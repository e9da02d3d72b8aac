"""Every notebook runs top to bottom (CI executes them, so none rots) and is stored with its
outputs, so a reader sees results without running it (``python notebooks/execute.py``
refreshes them), and without execution counts, so a rerun changes only the outputs."""

import pathlib
import re
import time

import nbclient
import nbformat
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300  # a cell that hangs fails instead of stalling CI
MAX_BYTES = 1_000_000  # outputs stay modest: a few small figures and printed tables


def test_notebooks_are_there_with_outputs_and_no_noise():
    names = {p.stem for p in NOTEBOOKS}
    assert {"quickstart", "convergence", "losses_explained"} <= names
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        outputs = [o for c in code for o in c.outputs]
        assert all(c.execution_count is None for c in code), path.name
        assert all(o.get("execution_count") is None for o in outputs), path.name
        assert not [o for o in outputs if o.output_type == "error"], path.name
        assert code[-1].outputs, f"{path.name}: stored without outputs (notebooks/execute.py)"
        assert any("image/png" in o.get("data", {}) for o in outputs), path.name
        assert path.stat().st_size < MAX_BYTES, path.name


def test_install_cell_is_honest_on_colab():
    """No made-up repository URL: an empty REPO_URL that the reader is told to set."""
    for path in NOTEBOOKS:
        first = nbformat.read(path, as_version=4).cells[0]
        assert first.cell_type == "code", path.name
        source = first.source
        assert '"google.colab" in sys.modules' in source and "jax.devices()" in source
        assert 'REPO_URL = ""  # set to your clone\'s git URL' in source, path.name
        assert "Set REPO_URL" in source and "pip install -e ." in source, path.name
        urls = re.findall(r"github\.com/[^\s\"']*", source)
        assert "OWNER" not in source and all(u.startswith("github.com/<you>/") for u in urls)


def test_install_cell_on_colab_without_a_clone_says_what_to_set(tmp_path):
    """Opened from GitHub in Colab (no clone around it, REPO_URL empty): one clear line."""
    source = nbformat.read(NOTEBOOKS[0], as_version=4).cells[0].source
    fake_colab = "import sys, types\nsys.modules['google.colab'] = types.ModuleType('google.colab')"
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(fake_colab), nbformat.v4.new_code_cell(source)]
    )
    (tmp_path / "empty").mkdir()  # neither it nor its parent holds a pyproject.toml
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(tmp_path / "empty")}},
    )
    client.execute()
    (error,) = [o for o in nb.cells[1].outputs if o.output_type == "error"]
    assert error.ename == "SystemExit"
    assert error.evalue == "Set REPO_URL in this cell to your w2v_jax clone's git URL, then rerun."


def test_tpu_install_pins_the_required_jax():
    """A TPU runtime installs jax[tpu] at requirements.txt's jax pin (its matching libtpu)."""
    pin = re.search(r"(?m)^jax==(\S+)", (ROOT / "requirements.txt").read_text()).group(1)
    for path in NOTEBOOKS:
        source = nbformat.read(path, as_version=4).cells[0].source
        assert re.findall(r'"jax\[tpu\][^"]*"', source) == [f'"jax[tpu]=={pin}"'], path.name


def test_quickstart_tpu_branch_trains_configs_tpu(tmp_path):
    """The quickstart's TPU branch (taken only on a TPU runtime) builds configs/tpu.py on the
    synthetic corpus; here it trains its first call on the CPU."""
    from w2v_jax import trainer

    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    (source,) = [c.source for c in nb.cells if "def tpu_config" in c.source]
    assert "tpu.get_config()" in source
    namespace = {}
    exec(source[: source.index('if jax.default_backend() == "tpu":')], namespace)
    config = namespace["tpu_config"]()
    assert (config.batch_size, config.input.mode, config.parallel.mode) == (
        16_384, "device", "single",
    )  # fmt: skip
    config.max_steps = config.steps_per_call  # one call
    final = trainer.train_and_evaluate(config, str(tmp_path))
    assert final["step"] == config.steps_per_call and np.isfinite(final["eval/heldout_nll"])


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, monkeypatch):
    monkeypatch.delenv("W2V_SWEEP_DIR", raising=False)  # convergence: run its own sweep
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT)}},  # the kernel's working directory
    )
    before = _repo_files()
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    print(f"{path.name}: {time.perf_counter() - start:.1f} s")
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert _repo_files() == before  # runs write to temporary folders, never the repository


def _repo_files() -> dict:
    """The repository's top level and notebooks/, with the notebooks' modification times."""
    top = {p.name: None for p in ROOT.iterdir()}
    return {**top, **{p.name: p.stat().st_mtime_ns for p in (ROOT / "notebooks").iterdir()}}
