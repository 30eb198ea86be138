"""The handler is filled in by export: it imports the modules that define the runtime's functions."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fastbackend.export import ExportError, export, stale_diff

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_NOTEBOOKS = ("01_preprocess.ipynb", "02_inference.ipynb")  # they define worker.contract's functions


def project(tmp_path: Path) -> Path:
    (tmp_path / "notebooks").mkdir()
    for name in RUNTIME_NOTEBOOKS:
        shutil.copy(ROOT / "notebooks" / name, tmp_path / "notebooks" / name)
    export(tmp_path)
    return tmp_path


def handler_imports(root: Path) -> str:
    text = (root / "exported" / "handler.py").read_text()
    return next(line for line in text.splitlines() if line.startswith("from exported import"))


def test_handler_imports_the_modules_export_wrote(tmp_path):
    root = project(tmp_path)
    assert handler_imports(root) == "from exported import inference, preprocess  # noqa: E402"
    assert "NotebookFunctions.from_modules(inference, preprocess)" in (root / "exported" / "handler.py").read_text()


def test_renamed_notebook_renames_the_import(tmp_path):
    root = project(tmp_path)
    (root / "notebooks" / "02_inference.ipynb").rename(root / "notebooks" / "02_predict.ipynb")
    assert "+from exported import predict, preprocess" in stale_diff(root), "--check sees the handler is stale"
    export(root)
    assert handler_imports(root) == "from exported import predict, preprocess  # noqa: E402"
    assert not (root / "exported" / "inference.py").exists()


def test_removed_notebook_fails_naming_each_missing_function_and_its_notebook(tmp_path):
    root = project(tmp_path)
    before = (root / "exported" / "handler.py").read_text()
    (root / "notebooks" / "02_inference.ipynb").unlink()
    with pytest.raises(ExportError) as caught:
        export(root)
    message = str(caught.value)
    assert "'load_base_model': notebooks/02_inference.ipynb defined it; no notebook exports it now" in message
    assert "'top_k': notebooks/02_inference.ipynb defined it" in message
    assert "read_preprocess_config" not in message, "functions still exported are not reported"
    assert (root / "exported" / "handler.py").read_text() == before, "nothing is written when export fails"
    with pytest.raises(ExportError, match="load_base_model"):
        stale_diff(root)


def test_renamed_function_fails_naming_it(tmp_path):
    import nbformat

    root = project(tmp_path)
    path = root / "notebooks" / "01_preprocess.ipynb"
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "def build_eval_transform(" in c.source)
    cell.source = cell.source.replace("def build_eval_transform(", "def build_transform(")
    nbformat.write(nb, path)
    with pytest.raises(ExportError, match=r"'build_eval_transform': notebooks/01_preprocess.ipynb defined it"):
        export(root)


def test_the_handler_docstring_lists_every_op_and_every_tasks_fields():
    import exported.handler
    from worker.schema import OPS
    from worker.tasks import TASKS

    doc = exported.handler.__doc__
    assert all(f'"op": "{op}"' in doc for op in OPS), [op for op in OPS if f'"op": "{op}"' not in doc]
    for name, task in TASKS.items():
        line = next(line for line in doc.splitlines() if line.strip().startswith(f"{name}:"))
        assert all(f'"{f}"' in line for f in task.request.model_fields if f not in ("images", "adapter", "op"))
