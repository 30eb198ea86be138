"""The GPU settings run on CPU too: autocast, channels_last and the pinned-memory path answer as the
default worker does on the embedded model (torch.compile is left to benchmarks/gpu.py: it needs a
compiler toolchain and minutes on this machine)."""

from __future__ import annotations

import pytest
from conftest import digit


@pytest.mark.parametrize("settings", [{"autocast": "bfloat16"}, {"channels_last": "on"}], ids=["autocast", "nhwc"])
def test_a_gpu_setting_on_cpu_keeps_the_answer(make_worker, worker, settings):
    images = [digit("inverted", i)[0] for i in range(4)]
    job = {"id": "g", "input": {"images": images, "adapter": "inverted"}}
    tuned = make_worker(**settings).handle(job)
    assert tuned["status"] == "success", tuned
    expected = [p["label"] for p in worker.handle(job)["predictions"]]
    assert [p["label"] for p in tuned["predictions"]] == expected
