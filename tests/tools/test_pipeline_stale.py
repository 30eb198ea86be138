"""A pipeline runs the exported code: with a notebook edited and not exported it refuses, naming
the notebook, before a run folder exists or a kernel starts (issue 31.4)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat

from fastbackend.cli import main
from fastbackend.export import export

FIXTURES = Path(__file__).parents[1] / "fixtures" / "pipelines"


def project(tmp_path: Path) -> Path:
    """A project with one notebook that exports a cell, exported/ in sync, and a pipeline."""
    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    nb = nbformat.read(FIXTURES / "good.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("#| export\nGREETING = 'hello'", id="x-greeting"))
    nbformat.write(nb, root / "notebooks" / "01_greet.ipynb")
    shutil.copy(FIXTURES / "good.ipynb", root / "notebooks" / "02_good.ipynb")
    (root / "pipelines.yaml").write_text("pipelines:\n  greet:\n    steps: [notebooks/01_greet.ipynb]\n")
    export(root)
    return root


def run(root: Path, capsys) -> tuple[int, str]:
    args = ["--pipelines", str(root / "pipelines.yaml"), "--runs-dir", str(root / "runs"), "--no-progress"]
    code = main(["pipeline", "run", "greet", *args])
    return code, capsys.readouterr().err


def test_an_edited_notebook_not_exported_is_refused_naming_it(tmp_path, capsys):
    root = project(tmp_path)
    path = root / "notebooks" / "01_greet.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[-1].source = "#| export\nGREETING = 'changed'"
    nbformat.write(nb, path)
    code, err = run(root, capsys)
    assert code == 2, err
    assert "exported/ is stale: notebooks/01_greet.ipynb" in err and "fastbackend export" in err
    assert not (root / "runs").exists() or not list((root / "runs").iterdir())


def test_in_sync_the_check_passes_and_the_pipeline_runs(tmp_path, capsys):
    code, err = run(project(tmp_path), capsys)
    assert code == 0, err
