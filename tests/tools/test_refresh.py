"""`fastbackend refresh` replaces a notebook only when it ran to the end (issue 31.3)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat

from fastbackend.cli import main

FIXTURES = Path(__file__).parents[1] / "fixtures" / "pipelines"


def test_a_failing_notebook_is_left_untouched_and_the_failure_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "failing.ipynb"
    shutil.copy(FIXTURES / "failing_cell.ipynb", path)
    before = path.read_bytes()
    assert main(["refresh", str(path)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "failed" in err and "unchanged" in err and str(path) in err, err
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["failing.ipynb"]  # no temporary copy left


def test_a_notebook_that_runs_is_replaced_clean(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "good.ipynb"
    shutil.copy(FIXTURES / "good.ipynb", path)
    assert main(["refresh", str(path)]) == 0
    nb = nbformat.read(path, as_version=4)
    assert "papermill" not in nb.metadata
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.ipynb"]
