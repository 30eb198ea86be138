"""Concurrent jobs in one worker, micro-batched into one forward pass."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
from conftest import digit

from fastbackend.local import serve_api


def functions_recording_forwards(calls: list):
    from exported.handler import WORKER

    functions = WORKER.functions

    def recording(model, pixels, adapter=None):
        calls.append((adapter, len(pixels)))
        return functions.predict_logits(model, pixels, adapter)

    return replace(functions, predict_logits=recording)


def job(task: str, index: int, adapter: str | None, **extra) -> dict:
    return {"id": f"{task}-{index}", "input": {"images": digit(task, index)[0], "adapter": adapter, **extra}}


async def gather(worker, jobs):
    return await asyncio.gather(*(worker.handle_async(j) for j in jobs))


def test_same_batch_gives_bit_identical_logits_to_one_direct_forward(make_worker):
    from exported.inference import predict_logits

    batched = make_worker(concurrency=4, max_batch=4, max_batch_wait_ms=2000, warmup=False)
    jobs = [job("inverted", i, "inverted", return_logits=True) for i in range(4)]
    answers = asyncio.run(gather(batched, jobs))
    assert batched.batcher.stats()["batch_size_histogram"] == {"4": 1}, "the four jobs met in one forward"
    host = batched.host
    from worker.decoding import decode_base64, decode_image

    def decoded(job):
        return np.asarray(decode_image(decode_base64(job["input"]["images"]), channels=1, limits=batched.config))

    # Rows in submission order are not guaranteed; compare each job with its own row of one direct forward.
    pixels = [host.fns.to_pixel_values([decoded(j)], host.transform, host.preprocess_config) for j in jobs]
    direct = predict_logits(host.model, np.concatenate(pixels), host.cache.entries["inverted"].key)
    got = {tuple(a["predictions"][0]["logits"]) for a in answers}
    assert got == {tuple(float(v) for v in row) for row in direct}


def test_each_job_gets_its_own_results_in_order_and_matches_sequential(make_worker, worker):
    batched = make_worker(concurrency=8, max_batch_wait_ms=20)
    jobs = [
        {
            "id": str(i),
            "input": {
                "images": [digit("rot90", i)[0], digit("rot90", i + 50)[0]],
                "adapter": "rot90",
                "return_logits": True,
            },
        }
        for i in range(16)
    ]
    answers = asyncio.run(gather(batched, jobs))
    for j, answer in zip(jobs, answers):
        sequential = worker.handle(j)
        assert [p["label"] for p in answer["predictions"]] == [p["label"] for p in sequential["predictions"]]
        assert np.allclose(
            [p["logits"] for p in answer["predictions"]], [p["logits"] for p in sequential["predictions"]], atol=1e-5
        )
    histogram = batched.handle({"id": "m", "input": {"op": "metrics"}})["batching"]["batch_size_histogram"]
    assert sum(int(size) * n for size, n in histogram.items()) == 32 and max(map(int, histogram)) > 2


def test_jobs_for_different_adapters_share_forwards_and_each_gets_its_own(make_worker, monkeypatch):
    calls: list = []
    # A mixed batch runs one forward with a key per row (worker/lora_rows.py), peft's adapter_names
    # otherwise: either way the rows' keys are what the forward was given.
    from worker import lora_rows

    per_row = lora_rows.one_adapter_per_row

    def recording_rows(model, keys):
        calls.append((list(keys), len(keys)))
        return per_row(model, keys)

    monkeypatch.setattr(lora_rows, "one_adapter_per_row", recording_rows)
    batched = make_worker(
        functions=functions_recording_forwards(calls), concurrency=8, max_batch_wait_ms=50, warmup=False
    )
    alone = make_worker(concurrency=1, warmup=False)
    adapters = ["inverted", "rot90", None]
    jobs = [job("digits", i, adapters[i % 3], return_logits=True) for i in range(24)]
    answers = asyncio.run(gather(batched, jobs))
    assert all(a["status"] == "success" and a["adapter"] == j["input"]["adapter"] for a, j in zip(answers, jobs))
    for j, answer in zip(jobs, answers):
        expected = alone.handle(j)["predictions"][0]["logits"]
        assert np.abs(np.array(answer["predictions"][0]["logits"]) - expected).max() <= 1e-5
    served = [c for c in calls if isinstance(c[0], list)]  # the probe's forward is not a job's
    mixed = [c for c in served if len(set(c[0])) > 1 and len(c[0]) > 2]
    assert mixed, "jobs for different adapters (and the base) met in one forward"
    forwards = [c for c in calls if not isinstance(c[0], list)] if batched.host.mix_path == lora_rows.PATH else calls
    assert len(forwards) < 24, "concurrent jobs shared forwards"


def test_without_mixing_every_forward_serves_one_adapter(make_worker):
    calls: list = []
    batched = make_worker(
        functions=functions_recording_forwards(calls), concurrency=8, max_batch_wait_ms=50, mix_adapters=False
    )
    calls.clear()  # warm-up forwards
    keys = {e.key: name for name, e in batched.host.cache.entries.items()}
    adapters = ["inverted", "rot90", None]
    jobs = [job("digits", i, adapters[i % 3]) for i in range(24)]
    answers = asyncio.run(gather(batched, jobs))
    assert all(a["status"] == "success" and a["adapter"] == j["input"]["adapter"] for a, j in zip(answers, jobs))
    assert not any(isinstance(a, list) for a, _ in calls)
    per_adapter = {a: sum(n for (b, n) in calls if keys.get(b) == a) for a in adapters}
    assert per_adapter == {"inverted": 8, "rot90": 8, None: 8}
    assert len(calls) < 24, "concurrent jobs shared forwards"
    mixing = batched.handle({"input": {"op": "health"}})["adapter_mixing"]
    assert mixing["enabled"] is False and "FASTBACKEND_MIX_ADAPTERS" in mixing["reason"]


def test_a_bad_job_among_good_ones_fails_alone(make_worker):
    batched = make_worker(concurrency=8, max_batch_wait_ms=20)
    jobs = [job("inverted", i, "inverted") for i in range(7)]
    jobs.insert(3, {"id": "bad", "input": {"images": "iVBORw0KGgo=broken", "adapter": "inverted"}})
    answers = asyncio.run(gather(batched, jobs))
    assert [a["status"] for a in answers].count("error") == 1
    assert answers[3]["code"] == "IMAGE_DECODE_FAILED" and answers[3]["job_id"] == "bad"
    assert all(
        a["status"] == "success" and len(a["predictions"]) == 1 for j, a in zip(jobs, answers) if j["id"] != "bad"
    )


def test_cancellation_leaves_no_stuck_batch(make_worker):
    batched = make_worker(concurrency=8, max_batch_wait_ms=30)

    async def scenario():
        tasks = [asyncio.create_task(batched.handle_async(job("digits", i, None))) for i in range(8)]
        await asyncio.sleep(0)
        for task in tasks[:3]:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert sum(isinstance(r, asyncio.CancelledError) for r in results) == 3
        assert all(r["status"] == "success" for r in results[3:])
        after = await asyncio.wait_for(gather(batched, [job("digits", i, "rot90") for i in range(4)]), timeout=10)
        assert all(a["status"] == "success" for a in after)

    asyncio.run(scenario())
    for _ in range(100):  # the cancelled jobs' threads finish on their own
        if batched.admission.jobs == 0:
            break
        threading.Event().wait(0.05)
    assert batched.admission.jobs == 0 and batched.admission.images == 0


def test_a_lone_job_runs_its_forward_in_its_own_thread(make_worker, worker):
    # Nothing queued and no other job in flight: no hand-off to the batcher thread and back.
    calls: list = []
    threads: list[str] = []
    functions = functions_recording_forwards(calls)
    recording = functions.predict_logits

    def where(model, pixels, adapter=None):
        threads.append(threading.current_thread().name)
        return recording(model, pixels, adapter)

    batched = make_worker(concurrency=4, functions=replace(functions, predict_logits=where), warmup=False)
    alone = asyncio.run(gather(batched, [job("inverted", 3, "inverted", return_logits=True)]))[0]
    assert threads and not threads[-1].startswith("fastbackend-batcher"), threads
    assert batched.batcher.stats()["batch_size_histogram"] == {"1": 1}
    serial = worker.handle(job("inverted", 3, "inverted", return_logits=True))
    assert alone["predictions"] == serial["predictions"]


def test_health_shows_the_batching_settings(make_worker):
    batched = make_worker(concurrency=4, max_batch=16, max_batch_wait_ms=7, warmup=False)
    health = batched.handle({"id": "h", "input": {"op": "health"}})
    assert health["batching"] == {"enabled": True, "max_batch_images": 16, "max_batch_wait_ms": 7}
    assert batched.start_options()["concurrency_modifier"](1) == 4


def test_concurrent_requests_through_the_real_local_api(root, models_dir, worker, n_jobs=16):
    env = {
        "FASTBACKEND_BASE_MODEL": str(models_dir / "base"),
        "FASTBACKEND_ADAPTERS_DIR": str(models_dir / "adapters"),
        "FASTBACKEND_CONCURRENCY": "8",
        "FASTBACKEND_MAX_BATCH_WAIT_MS": "20",
    }
    adapters = ["inverted", "rot90"]
    jobs = [
        {"input": {"images": digit(adapters[i % 2], i)[0], "adapter": adapters[i % 2], "top_k": 2}}
        for i in range(n_jobs)
    ]
    with serve_api(root, env=env) as api:
        assert api.runsync({"input": {"op": "health"}})["output"]["batching"]["enabled"] is True
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(api.runsync, jobs))
        metrics = api.runsync({"input": {"op": "metrics"}})["output"]
    for j, answer in zip(jobs, answers):
        assert answer["status"] == "COMPLETED", answer
        sequential = worker.handle({"id": "s", **j})
        assert answer["output"]["predictions"][0]["label"] == sequential["predictions"][0]["label"]
    histogram = metrics["batching"]["batch_size_histogram"]
    assert sum(int(k) * v for k, v in histogram.items()) >= n_jobs
    assert max(map(int, histogram)) > 1, f"requests through the local API never shared a forward: {histogram}"
