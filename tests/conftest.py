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
    from fastbackend.mainjob import DEMO_NOTEBOOK, models_present
    from fastbackend.notebooks import execute

    if not models_present(MODELS):
        out = ROOT / "test-artifacts" / "build-models.ipynb"
        execute(ROOT / DEMO_NOTEBOOK, out, {"output_dir": str(MODELS)}, cwd=ROOT)
    return MODELS


# -- images and jobs -----------------------------------------------------------
def png_bytes(array) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def png_b64(array) -> str:
    import base64

    return base64.b64encode(png_bytes(array)).decode("ascii")


def png_header_only(width: int, height: int) -> bytes:
    from fixtures.images import png_header_only as make

    return make(width, height)


def digit(task: str, index: int):
    """(base64 PNG, true label) of a held-out digit of a task."""
    from exported.demo_models import load_digit_task

    images, labels = load_digit_task(task, "test")
    return png_b64(images[index]), int(labels[index])


@pytest.fixture(scope="session")
def make_worker(models_dir):
    """Build a set-up Worker as the generated handler does, with config overrides."""
    from exported import inference, preprocess
    from worker.config import WorkerConfig
    from worker.contract import NotebookFunctions
    from worker.runtime import Worker

    def make(functions=None, **overrides):
        values = {"base_model": str(models_dir / "base"), "adapters_dir": str(models_dir / "adapters"), **overrides}
        worker = Worker(functions or NotebookFunctions.from_modules(preprocess, inference))
        worker.setup(WorkerConfig(**values))
        return worker

    return make


@pytest.fixture(scope="session")
def worker(make_worker):
    """One worker with the default config, shared by tests that do not change it."""
    return make_worker()
