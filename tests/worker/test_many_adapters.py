"""Many adapters, one worker: concurrent jobs spread over many adapters, mixed in shared forwards,
through a cache sized by bytes. Every job succeeds and answers its own adapter's logits (each
adapter's weights differ, so a job answered by another adapter would show).

The references are one forward per adapter (a worker with concurrency 1: no batching, no mixing).
`make test` runs 300 jobs over 60 adapters with a cache of about 8 (loads, evictions and reloads
while jobs pin what they use); `make test-full` runs the issue's 1,000 jobs over 200 adapters with a
50 MB cache.
"""

from __future__ import annotations

import asyncio
import random
import shutil

import numpy as np
import pytest
from conftest import digit

TOLERANCE = 1e-5


def distinct_adapters(source, folder, count: int) -> list[str]:
    """`count` copies of the demo adapter, each with its own lora_B weights."""
    from safetensors.numpy import load_file, save_file

    weights = load_file(str(source / "adapter_model.safetensors"))
    key = sorted(k for k in weights if "lora_B" in k)[0]
    names = []
    for i in range(count):
        name = f"a{i:03d}"
        shutil.copytree(source, folder / name)
        changed = dict(weights)
        changed[key] = weights[key] + np.float32(0.05 * (i + 1))
        save_file(changed, str(folder / name / "adapter_model.safetensors"))
        names.append(name)
    return names


@pytest.mark.parametrize(
    ("jobs", "adapters", "cache_adapters"),
    [(200, 24, 6), pytest.param(1000, 200, None, marks=pytest.mark.full)],
    ids=["small-cache", "issue-size"],
)
def test_jobs_over_many_adapters_all_answer_their_own_adapter(
    make_worker, models_dir, tmp_path, jobs, adapters, cache_adapters
):
    folder = tmp_path / "adapters"
    folder.mkdir()
    names = distinct_adapters(models_dir / "adapters" / "inverted", folder, adapters)
    size = (folder / names[0] / "adapter_model.safetensors").stat().st_size
    cache_mb = cache_adapters * size / 2**20 if cache_adapters else 50
    served = make_worker(adapters_dir=str(folder), adapter_cache_mb=cache_mb, preload_adapters=(), concurrency=64)
    reference = make_worker(adapters_dir=str(folder), preload_adapters=(), concurrency=1)
    rng = random.Random(0)
    images = [digit("inverted", i)[0] for i in range(8)]
    work = [(rng.choice([*names, None]), rng.randrange(len(images))) for _ in range(jobs)]
    requests = [
        {"id": str(i), "input": {"images": images[im], "adapter": a, "return_logits": True}}
        for i, (a, im) in enumerate(work)
    ]

    async def all_at_once():
        return await asyncio.gather(*(served.handle_async(r) for r in requests))

    answers = asyncio.run(all_at_once())
    failed = [a for a in answers if a["status"] != "success"]
    assert not failed, failed[:3]
    expected: dict = {}
    mixed_up = 0
    for (adapter, image), answer in zip(work, answers):
        if (adapter, image) not in expected:
            one = reference.handle({"input": {"images": images[image], "adapter": adapter, "return_logits": True}})
            expected[adapter, image] = np.array(one["predictions"][0]["logits"])
        got = np.array(answer["predictions"][0]["logits"])
        mixed_up += int(np.abs(got - expected[adapter, image]).max() > TOLERANCE)
    assert mixed_up == 0
    cache = served.handle({"input": {"op": "metrics"}})["adapter_cache"]
    histogram = served.batcher.stats()["batch_size_histogram"]
    assert max(int(k) for k in histogram) > 1, "jobs shared forwards"
    assert cache["bytes"] <= cache["budget_bytes"], "over budget once no job pins an adapter"
    if cache_adapters:
        assert cache["evictions"] > 0 and cache["loads"] > adapters, cache
