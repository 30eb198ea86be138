"""Committed notebooks: outputs kept, volatile metadata stripped, one parameters cell each."""

from __future__ import annotations

import nbformat
import pytest

from fastbackend.notebooks import volatile_metadata

NOTEBOOKS = ["00_demo_models", "01_preprocess", "02_inference", "03_train_adapter"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_clean_and_executed(root, name):
    nb = nbformat.read(root / "notebooks" / f"{name}.ipynb", as_version=4)
    assert volatile_metadata(nb) == []
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "commit notebooks executed (fastbackend refresh)"
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1


@pytest.mark.parametrize("name", ["01_preprocess", "02_inference", "03_train_adapter"])
def test_plots_are_committed(root, name):
    nb = nbformat.read(root / "notebooks" / f"{name}.ipynb", as_version=4)
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
