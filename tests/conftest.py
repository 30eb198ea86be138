"""Shared fixtures: the repository root and the embedded default models."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.environment import quiet_environment

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"

# Fixture notebooks and handlers are inputs to tests, not tests: nbval must not run them.
collect_ignore_glob = ["fixtures/*"]

quiet_environment()


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
    """A PNG whose header claims width x height, with one tiny IDAT: a decompression-bomb shape."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def digit(task: str, index: int):
    """(base64 PNG, true label) of a held-out digit of a task."""
    from exported.demo_models import load_digit_task

    images, labels = load_digit_task(task, "test")
    return png_b64(images[index]), int(labels[index])


@pytest.fixture(scope="session")
def make_worker(models_dir):
    """Build a set-up Worker as the generated handler does, with config overrides."""
    from exported.handler import WORKER as GENERATED  # the notebook functions export wired into the handler
    from worker.config import WorkerConfig
    from worker.runtime import Worker

    def make(functions=None, **overrides):
        values = {"base_model": str(models_dir / "base"), "adapters_dir": str(models_dir / "adapters"), **overrides}
        worker = Worker(functions or GENERATED.functions)
        worker.setup(WorkerConfig(**values))
        return worker

    return make


@pytest.fixture(scope="session")
def worker(make_worker):
    """One worker with the default config, shared by tests that do not change it."""
    return make_worker()
