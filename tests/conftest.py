"""Shared fixtures: the repository root and the embedded default models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"

# Fixture notebooks and handlers are inputs to tests, not tests: nbval must not run them.
collect_ignore_glob = ["fixtures/*"]

for key, value in {"NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}.items():
    os.environ.setdefault(key, value)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """models/ as `make run` leaves it; built with the demo notebook if missing."""
    from worker.dev.mainjob import DEMO_NOTEBOOK, models_present
    from worker.dev.notebooks import execute

    if not models_present(MODELS):
        out = ROOT / "test-artifacts" / "build-models.ipynb"
        execute(ROOT / DEMO_NOTEBOOK, out, {"output_dir": str(MODELS)}, cwd=ROOT)
    return MODELS
