"""Nothing silent about adapters: every folder found is served or listed with its reason.

Stand-in notebook functions (tests/unit/stub_notebooks.py); the runtime's scan, preload and the
`adapters` op are real. peft's named layout (`<dir>/<name>/<adapter name>/adapter_config.json`) is
found; a folder breaking the name rule, a folder with no adapter, and an adapter whose
`base_model_name_or_path` is another hub id are skipped with reasons; with `*` an adapter the
loader refuses is listed and the others serve; named explicitly, it stops setup.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from worker.config import WorkerConfig
from worker.errors import AdapterIncompatible, WorkerError
from worker.runtime import Worker

from .stub_notebooks import stub_functions, write_stub_adapter


def adapter(folder: Path, base: str = "") -> None:
    write_stub_adapter(folder, {"base_model_name_or_path": base, "stub_name": folder.name})


@pytest.fixture
def adapters_dir(tmp_path: Path) -> Path:
    root = tmp_path / "adapters"
    adapter(root / "flat")
    adapter(root / "nested" / "my_adapter")  # peft's save_pretrained with a non-default adapter name
    adapter(root / "-bad-name")
    (root / "empty").mkdir()
    adapter(root / "other-base", base="someone/another-model")
    adapter(root / "broken")
    return root


def set_up(adapters_dir: Path, functions=None, **overrides) -> Worker:
    values = {"base_model": "org/served-model", "adapters_dir": str(adapters_dir), "log_level": "ERROR", **overrides}
    config = WorkerConfig(device="cpu", **values)
    return Worker(functions or stub_functions()).setup(config)


def refusing(name: str):
    """Stand-ins whose loader refuses one adapter, as attach_adapter does on a key mismatch. The loader
    sees a staged copy under a key of the runtime's, so the adapter is recognised by its files."""
    stub = stub_functions()

    def attach(model, path, adapter_name, base_fingerprint):
        if json.loads((Path(path) / "adapter_config.json").read_text()).get("stub_name") == name:
            raise AdapterIncompatible(f"{path}/adapter_model.safetensors: 2 of 2 tensors do not match the base")
        return stub.attach_adapter(model, path, adapter_name, base_fingerprint)

    return replace(stub, attach_adapter=attach)


def listing(worker: Worker) -> dict:
    return worker.handle({"id": "a", "input": {"op": "adapters"}})


@pytest.fixture(autouse=True)
def no_hub(monkeypatch):
    # The served base is a hub id here; the stand-ins never read it, so skip the cache lookup.
    monkeypatch.setattr("worker.models.local_model_dir", lambda model: Path(model))


def test_every_folder_is_served_or_listed_with_its_reason(adapters_dir):
    answer = listing(set_up(adapters_dir, functions=refusing("broken")))
    served = {a["name"] for a in answer["adapters"]}
    reasons = {s["name"]: s["reason"] for s in answer["skipped"]}
    assert served == {"flat", "nested"}
    assert set(reasons) == {"-bad-name", "empty", "other-base", "broken"}
    assert "adapter-name rule" in reasons["-bad-name"]
    assert "no adapter_config.json" in reasons["empty"]
    assert "someone/another-model" in reasons["other-base"] and "org/served-model" in reasons["other-base"]
    assert "do not match the base" in reasons["broken"]


def test_named_adapter_that_fails_stops_setup(adapters_dir):
    with pytest.raises(WorkerError, match="do not match the base"):
        set_up(adapters_dir, functions=refusing("broken"), preload_adapters=("flat", "broken"))


def test_missing_adapters_folder_serves_the_base_and_says_so(tmp_path, caplog, capfd):
    worker = set_up(tmp_path / "mistyped", log_level="INFO")
    assert listing(worker)["adapters"] == []
    logged = capfd.readouterr()
    said = [f"{r.getMessage()} {r.__dict__}" for r in caplog.records] + (logged.out + logged.err).splitlines()
    assert any("adapters.no_folder" in line and "mistyped" in line for line in said), said
