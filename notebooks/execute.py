"""Run notebooks top to bottom and store them with their outputs, so a reader sees results.

  python notebooks/execute.py                    # all three
  python notebooks/execute.py notebooks/quickstart.ipynb

Runs from the repository root as ``tests/test_notebooks.py`` does (same kernel, same
working directory, the convergence notebook running its own tiny sweep), then stores each
notebook with execution counts and per-cell timing metadata removed: the outputs are the
only change a rerun makes. Needs nbclient and ipykernel (``pip install -r
requirements-dev.txt``).
"""

from __future__ import annotations

import os
import pathlib
import sys

import nbclient
import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]
CELL_TIMEOUT_S = 300


def execute(path: pathlib.Path) -> nbformat.NotebookNode:
    """The notebook at ``path``, executed from the repository root (raises on a cell error)."""
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT)}},
    )
    client.execute()
    return nb


def strip_noise(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drops execution counts and timing metadata, which change at every run."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.execution_count = None
            for output in cell.outputs:
                if "execution_count" in output:
                    output.execution_count = None
    return nb


def main(argv: list[str]) -> None:
    os.environ.pop("W2V_SWEEP_DIR", None)  # convergence: run its own sweep, as CI does
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    paths = [pathlib.Path(a) for a in argv[1:]] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    for path in paths:
        nb = strip_noise(execute(path))
        nbformat.validate(nb)
        nbformat.write(nb, path)
        print(f"{path}: {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main(sys.argv)
