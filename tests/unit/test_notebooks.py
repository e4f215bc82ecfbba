"""Notebooks are committed without outputs, and each one runs top to bottom.

The execution test is e2e + slow: CI runs every notebook with nbclient on small windows
(``KFOPS_NOTEBOOK_FAST=1``), in a fresh kernel, from the notebooks folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
EXPECTED = {"quickstart.ipynb", "continuous_retraining.ipynb", "bring_your_own_data.ipynb"}


def test_expected_notebooks_exist():
    assert {path.name for path in NOTEBOOKS} >= EXPECTED, f"missing notebooks: {EXPECTED - {p.name for p in NOTEBOOKS}}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path: Path):
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    dirty = [
        index
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, (
        f"{path.name}: code cells {dirty} have outputs or an execution count; clear them before committing "
        f"(jupyter nbconvert --clear-output --inplace {path.relative_to(REPO_ROOT)})"
    )


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path: Path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    # The kernel inherits this environment: small windows, and this virtualenv's tools first.
    monkeypatch.setenv("KFOPS_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS_DIR)}})
    client.execute()  # raises CellExecutionError naming the failing cell
