"""Progress of long jobs as a client sees it: `fastbackend invoke --async --endpoint` shows the
worker's `{"done", "total"}` while the job is IN_PROGRESS (against the fake RunPod API)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import png_bytes
from fixtures.fake_runpod import API_KEY, ENDPOINT, FakeRunPod, serve

from fastbackend.cli import main


@pytest.fixture
def fake(monkeypatch):
    fake = FakeRunPod(
        polls=["IN_PROGRESS", "IN_PROGRESS", "COMPLETED"],  # the first poll is immediate, then 0.5 s, 0.75 s
        progress=[{"done": 16, "total": 64, "stage": "fetch"}, {"done": 40, "total": 64, "stage": "decode"}],
    )
    server = serve(fake)
    monkeypatch.setenv("RUNPOD_API_KEY", API_KEY)
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", fake.url)
    yield fake
    server.shutdown()


def test_invoke_async_shows_the_workers_progress(fake, tmp_path, capsys):
    image = tmp_path / "digit.png"
    image.write_bytes(png_bytes(np.zeros((8, 8), dtype=np.uint8)))
    assert main(["invoke", str(image), "--endpoint", ENDPOINT, "--async"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "IN_PROGRESS" in line]
    assert len(lines) == 2, err
    assert "IN_PROGRESS 16/64 images (fetch)" in lines[0] and "IN_PROGRESS 40/64 images (decode)" in lines[1]
    assert "COMPLETED" in err
