"""The notebooks' `base_model` parameter is found as the worker finds FASTBACKEND_BASE_MODEL: a folder
(a relative one from the project root, wherever the kernel starts) or a hub id in the local cache."""

from __future__ import annotations

import pytest

from fastbackend.paths import base_model_dir, project_root
from worker.errors import ModelLoadFailed


def test_folders_relative_to_the_project_root_or_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(project_root() / "notebooks")  # where JupyterLab and nbval start a kernel
    # A folder every clone has (models/ exists only once built): "a/b" that exists is a folder, not a hub id.
    assert base_model_dir("tests/fixtures") == project_root() / "tests" / "fixtures"
    assert base_model_dir(tmp_path) == tmp_path


def test_a_hub_id_missing_from_the_cache_is_named():
    with pytest.raises(ModelLoadFailed, match="fastbackend-test/not-cached: no such folder, and not in the hub cache"):
        base_model_dir("fastbackend-test/not-cached")
