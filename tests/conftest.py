"""Shared fixtures: the repository root and the embedded default models; the `full` marker.

Layers: tests/unit (no model, no subprocess, no network: `make test-fast`), tests/worker (the
runtime with the demo models, in-process and through RunPod's local tooling), tests/tools (CLI,
export, check, pipelines, client, notebooks under nbval), tests/deploy (image, hub files, docs).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from worker.environment import quiet_environment

ROOT = Path(__file__).resolve().parents[1]

# Fixture notebooks and handlers are inputs to tests, not tests: nbval must not run them.
collect_ignore_glob = ["fixtures/*"]

quiet_environment()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--full", action="store_true", help="also run the heavy variants marked `full` (make test-full)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `full` are heavy variants of ones that always run: only `make test-full` runs them."""
    if config.getoption("--full"):
        return
    skip = pytest.mark.skip(reason="heavy variant: make test-full (pytest --full)")
    for item in items:
        if item.get_closest_marker("full"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


def _demo_models_key() -> str:
    """What the demo models depend on: notebook 00, the exported code, the runtime's pixel steps,
    the ML stack's versions."""
    import hashlib
    from importlib.metadata import version

    from fastbackend.mainjob import DEMO_NOTEBOOK

    digest = hashlib.sha256((ROOT / DEMO_NOTEBOOK).read_bytes())
    for path in [*sorted((ROOT / "exported").glob("*.py")), ROOT / "worker/processors.py", ROOT / "worker/pixels.py"]:
        digest.update(path.name.encode() + path.read_bytes())
    digest.update(" ".join(version(p) for p in ("torch", "transformers", "peft", "safetensors")).encode())
    return digest.hexdigest()[:16]


def demo_models(work: Path) -> Path:
    """The embedded default models, never models/ (a user's own models may live there).

    Built by notebook 00 into a cache outside the repository, keyed by what they depend on, so
    a second `make test` does not train them again; a build goes to a temporary folder (`work`)
    first and is renamed into place whole, so concurrent sessions never see half a model.
    """
    from fastbackend.mainjob import DEMO_NOTEBOOK, models_present
    from fastbackend.notebooks import execute

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fastbackend-tests"
    models = cache / f"demo-models-{_demo_models_key()}"
    if not models_present(models):
        execute(ROOT / DEMO_NOTEBOOK, work / "00_demo_models.ipynb", {"output_dir": str(work / "models")}, cwd=ROOT)
        cache.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(work / "models", models)
        except OSError:  # another session put the same build there first
            if not models_present(models):
                raise
    return models


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under pytest-xdist (`make test`), build the demo models once in the controlling process
    before the workers start: each worker building its own would train them twice at once."""
    config = session.config
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="fastbackend-demo-models-") as work:
            demo_models(Path(work))


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """The embedded default models (demo_models), built on first use when not cached."""
    return demo_models(tmp_path_factory.mktemp("demo-models"))


@pytest.fixture(scope="session")
def local_api(root, models_dir, tmp_path_factory):
    """The exported handler under RunPod's local API with the default config, one for the session:
    a server start costs a process and the ML stack's imports, so tests that do not change the
    config share it."""
    from fastbackend.local import serve_api

    env = {"FASTBACKEND_BASE_MODEL": str(models_dir / "base"), "FASTBACKEND_ADAPTERS_DIR": str(models_dir / "adapters")}
    with serve_api(root, env=env, log_file=tmp_path_factory.mktemp("local-api") / "api.log") as api:
        yield api


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


# Held-out inverted digits (a 5 and a 2) that the demo base gets wrong and the inverted adapter
# right: what the adapter tests and .runpod/tests.json send. The demo build is deterministic.
ADAPTER_EXAMPLES = (4, 8)


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
