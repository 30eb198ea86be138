"""nbval re-runs the committed notebooks, on a copy: models/ and notebooks/ stay exactly as they are.

nbval cannot pass parameters, and notebook 00's default `output_dir` is `models` (it deletes
`models/base` first). The notebooks resolve such paths from the project root (the folder with
pyproject.toml and notebooks/, fastbackend/paths.py), and nbval starts each kernel in the
notebook's folder: so a copy of notebooks/ beside a pyproject.toml in a temporary folder is a
project of its own, and 00 builds its models there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `folder`: (modification time in ns, size); {} when it is missing."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            stat = path.stat()
            found[path.relative_to(folder).as_posix()] = (stat.st_mtime_ns, stat.st_size if path.is_file() else 0)
    return found


def task_folders(root: Path) -> list[str]:
    """notebooks/<task>/: each task's own demo build, evaluation and training notebooks."""
    return sorted(p.name for p in (root / "notebooks").iterdir() if p.is_dir() and list(p.glob("*.ipynb")))


def nbval(project: Path, notebooks: Path, folder: str, timeout: int) -> None:
    """nbval on `project/folder` (a copy of `notebooks`, beside its own pyproject.toml); every
    notebook of `notebooks` must have run."""
    (project / "pyproject.toml").write_text('[tool.pytest.ini_options]\naddopts = "-p no:cacheprovider"\n')
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "-v", folder],
        cwd=project,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    for notebook in sorted(notebooks.glob("*.ipynb")):
        # pytest 9 writes nbval's items as `notebooks/00_demo_models::ipynb::Cell 0`
        ran = re.search(rf"{re.escape(notebook.stem)}(\.|::)ipynb::Cell 0 PASSED", done.stdout)
        assert ran, f"{notebook.name} did not run: " + done.stdout[-3000:]


def test_nbval_runs_every_notebook_on_a_copy_and_leaves_models_untouched(root: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    # The top-level notebooks (classification and embeddings, the handler's source); each task
    # folder's notebooks train demo models of their own, so they run in the `full` test below.
    shutil.copytree(
        root / "notebooks",
        project / "notebooks",
        ignore=shutil.ignore_patterns(".ipynb_checkpoints", *task_folders(root)),
    )
    before = {name: snapshot(root / name) for name in ("models", "notebooks")}
    nbval(project, root / "notebooks", "notebooks", timeout=1800)
    # notebook 00 built its models in the copy, as it would have in models/
    assert (project / "models" / "base" / "model.safetensors").is_file()
    assert {name: snapshot(root / name) for name in ("models", "notebooks")} == before


@pytest.mark.full
@pytest.mark.parametrize("folder", task_folders(Path(__file__).resolve().parents[2]))
def test_nbval_runs_each_task_folder_on_a_copy(root: Path, tmp_path: Path, folder: str) -> None:
    project = tmp_path / "project"
    shutil.copytree(root / "notebooks" / folder, project / "notebooks" / folder)
    before = snapshot(root / "models")
    nbval(project, root / "notebooks" / folder, f"notebooks/{folder}", timeout=3600)
    assert snapshot(root / "models") == before
