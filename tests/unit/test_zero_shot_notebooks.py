"""The zero-shot task's notebooks (notebooks/zero_shot/): committed clean and executed, one parameters
cell each, and each one a step of its pipeline in pipelines.yaml."""

from __future__ import annotations

import nbformat
import pytest
import yaml

from fastbackend.notebooks import volatile_metadata

NOTEBOOKS = {
    "00_demo_models": "zero-shot-demo",
    "02_evaluate": "zero-shot-evaluate",
    "03_train_adapter": "zero-shot-train",
}


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_committed_clean_executed_with_one_parameters_cell(root, name):
    nb = nbformat.read(root / "notebooks" / "zero_shot" / f"{name}.ipynb", as_version=4)
    assert volatile_metadata(nb) == []
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "commit notebooks executed (fastbackend refresh)"
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1
    assert not [o for c in code for o in c.outputs if o.get("output_type") == "error"]


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_each_notebook_is_a_pipeline_step(root, name):
    pipelines = yaml.safe_load((root / "pipelines.yaml").read_text())["pipelines"]
    steps = [s["notebook"] for s in pipelines[NOTEBOOKS[name]]["steps"]]
    assert f"notebooks/zero_shot/{name}.ipynb" in steps
