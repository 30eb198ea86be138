"""A user changes the training augmentation where README says, runs the documented commands, and
everything still works: on a copy of the project, never in place.

The edit is the one a user makes in notebooks/01_preprocess.ipynb's first export cell: other
albumentations steps (a flip on every image, so the effect is exact to check) and the on/off
switch turned on. Then, as README's "Where to edit what" and notebook 01's intro say:
`fastbackend export` (and `--check`); training's transform from the re-exported module flips; a
job through the re-exported handler (`--test_input`) answers; and (make test-full, its kernel
costs ~10 s) nbval passes on the edited notebook 01.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from conftest import digit

from fastbackend.cli import main
from fastbackend.local import run_test_input

USER_STEPS = "A.HorizontalFlip(p=1.0)"


def edit_augmentation(notebook: Path) -> None:
    """What a user does: new steps in `training_augmentation()`, and the switch on."""
    nb = nbformat.read(notebook, as_version=4)
    cell = next(c for c in nb.cells if "def training_augmentation(" in c.source)
    assert cell.source.startswith("#| export"), "the augmentation is an export cell"
    start, end = cell.source.index("    return ["), cell.source.rindex("]")
    cell.source = cell.source[:start] + f"    return [{USER_STEPS}" + cell.source[end:]
    cell.source = cell.source.replace("AUGMENT_IN_TRAINING = False", "AUGMENT_IN_TRAINING = True")
    nbformat.write(nb, notebook)


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def edited(root, models_dir, tmp_path_factory) -> Path:
    """A copy of the project (notebooks/, exported/, models/ linked) with the augmentation edited."""
    project = tmp_path_factory.mktemp("augmentation") / "project"
    for folder in ("notebooks", "exported"):
        shutil.copytree(root / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__", ".ipynb*"))
    (project / "pyproject.toml").write_text('[tool.pytest.ini_options]\naddopts = "-p no:cacheprovider"\n')
    (project / "models").symlink_to(models_dir)
    edit_augmentation(project / "notebooks" / "01_preprocess.ipynb")
    return project


def fastbackend(args: list[str], project: Path, monkeypatch) -> int:
    """The CLI as `.venv/bin/fastbackend ARGS` runs it in the project folder (in process: no interpreter start)."""
    monkeypatch.chdir(project)
    return main(args)


def test_export_writes_the_changed_augmentation_and_check_sees_it(root, edited, monkeypatch):
    assert fastbackend(["export", "--check"], edited, monkeypatch) != 0, "the edit makes exported/ stale"
    assert fastbackend(["export"], edited, monkeypatch) == 0
    assert fastbackend(["export", "--check"], edited, monkeypatch) == 0
    assert USER_STEPS in (edited / "exported" / "preprocess.py").read_text()
    assert (edited / "exported" / "handler.py").read_text() == (root / "exported" / "handler.py").read_text()


def test_training_uses_the_changed_augmentation_and_the_worker_still_serves(edited, models_dir, monkeypatch):
    if fastbackend(["export", "--check"], edited, monkeypatch):  # run alone: export first
        assert fastbackend(["export"], edited, monkeypatch) == 0
    spec = importlib.util.spec_from_file_location("edited_preprocess", edited / "exported" / "preprocess.py")
    preprocess = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(preprocess)
    assert preprocess.AUGMENT_IN_TRAINING is True, "the switch, beside the steps"
    config = preprocess.read_preprocess_config(models_dir / "base")
    from exported.demo_models import load_digit_task

    image = load_digit_task("digits", "test")[0][0]
    trained = preprocess.to_pixel_values([image], preprocess.build_train_transform(config, seed=0), config)
    flipped = preprocess.to_pixel_values([image[:, ::-1]], preprocess.build_eval_transform(config), config)
    assert np.array_equal(trained, flipped), "training's transform is the edited augmentation, then the processor"

    env = {"FASTBACKEND_BASE_MODEL": str(models_dir / "base"), "FASTBACKEND_ADAPTERS_DIR": str(models_dir / "adapters")}
    served = run_test_input({"input": {"images": digit("digits", 3)[0]}}, edited, env)
    assert served.returncode == 0, served.log[-2000:]
    answer = served.output
    assert answer["status"] == "success" and answer["predictions"][0]["label"] in [str(n) for n in range(10)], answer


@pytest.mark.full
def test_nbval_passes_on_the_changed_notebook(edited):
    nbval = run([sys.executable, "-m", "pytest", "--nbval-lax", "-q", "notebooks/01_preprocess.ipynb"], edited)
    assert nbval.returncode == 0, (nbval.stdout + nbval.stderr)[-3000:]
