"""Many adapters in production mode: `python -m exported.handler` against the RunPod-shaped queue,
with jobs spread over many adapters (and the base) in one burst, through a small cache.

Every job is answered exactly once, none is lost, and each answer equals its adapter's answer alone
(an in-process worker with concurrency 1: no batching, no mixing) within 1e-5; jobs naming an adapter
that is not on the volume answer UNKNOWN_ADAPTER. The adapters differ (test_many_adapters'
`distinct_adapters`), so a job answered by another adapter would show. `make test` runs 160 jobs
over 40 adapters with a cache of about 8 (loads and evictions while jobs share forwards); `make
test-full` runs the issue's 1,000 jobs over 200 adapters with a 50 MB cache.
"""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest
from conftest import digit
from fixtures.runpod_queue import RunPodQueue
from test_many_adapters import TOLERANCE, distinct_adapters

from fastbackend.local import handler_env, stop_process

MISSING = "not-on-the-volume"


@pytest.mark.parametrize(
    ("jobs", "adapters", "cache_adapters"),
    [(160, 40, 8), pytest.param(1000, 200, None, marks=pytest.mark.full)],
    ids=["small-cache", "issue-size"],
)
def test_mixed_adapter_traffic_is_answered_once_each_by_its_own_adapter(
    root, models_dir, make_worker, tmp_path, jobs, adapters, cache_adapters
):
    folder = tmp_path / "adapters"
    folder.mkdir()
    names = distinct_adapters(models_dir / "adapters" / "inverted", folder, adapters)
    size = (folder / names[0] / "adapter_model.safetensors").stat().st_size
    cache_mb = cache_adapters * size / 2**20 if cache_adapters else 50
    env = {
        "FASTBACKEND_BASE_MODEL": str(models_dir / "base"),
        "FASTBACKEND_ADAPTERS_DIR": str(folder),
        "FASTBACKEND_ADAPTER_CACHE_MB": f"{cache_mb:.6f}",
        "FASTBACKEND_LOG_LEVEL": "WARNING",
    }
    rng = random.Random(0)
    images = [digit("inverted", i)[0] for i in range(8)]
    work = [(rng.choice([*names, None, *([MISSING] if i % 20 == 7 else [])]), rng.randrange(8)) for i in range(jobs)]
    log = tmp_path / "worker.log"
    with RunPodQueue() as queue, open(log, "w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "exported.handler"],
            cwd=root,
            env=handler_env({**env, **queue.env}),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            first = queue.add({"op": "ping"})
            assert queue.wait_done([first], 180), f"the worker took no job; log: {log}"
            ids = [
                queue.add({"images": images[image], "adapter": adapter, "return_logits": True})
                for adapter, image in work
            ]
            assert queue.wait_done(ids, 60 + jobs / 5), f"lost: {[i for i in ids if not queue.results.get(i)][:5]}"
            metrics = queue.add({"op": "metrics"})
            assert queue.wait_done([metrics], 30)
        finally:
            stop_process(process)
    assert all(len(queue.results[i]) == 1 for i in ids), "a job answered twice"
    reference = make_worker(adapters_dir=str(folder), preload_adapters=(), concurrency=1)
    expected: dict = {}
    mixed_up, failed = 0, []
    for (adapter, image), job_id in zip(work, ids):
        body = queue.results[job_id][0].body
        if adapter == MISSING:
            assert (body.get("error") or "").startswith("UNKNOWN_ADAPTER"), body
            continue
        output = body.get("output") or {}
        if output.get("status") != "success":
            failed.append(body)
            continue
        if (adapter, image) not in expected:
            one = reference.handle({"input": {"images": images[image], "adapter": adapter, "return_logits": True}})
            expected[adapter, image] = np.array(one["predictions"][0]["logits"])
        got = np.array(output["predictions"][0]["logits"])
        mixed_up += int(np.abs(got - expected[adapter, image]).max() > TOLERANCE)
    assert not failed, failed[:3]
    assert mixed_up == 0
    state = queue.results[metrics][0].body["output"]
    histogram = state["batching"]["batch_size_histogram"]
    assert max(int(k) for k in histogram) > 1, f"jobs shared forwards: {histogram}"
    if cache_adapters:
        assert state["adapter_cache"]["evictions"] > 0, state["adapter_cache"]
