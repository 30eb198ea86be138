"""Production mode: `python -m exported.handler` as RunPod starts it, against a RunPod-shaped queue.

One worker process serves the module (its start is most of the cost): mixed jobs answered
once with the local API's bodies, OUT_OF_MEMORY with stopPod, a job stopped inside its
micro-batch, job-take and job-done faults, and last SIGTERM with jobs in flight and a take held open.
FASTBACKEND_PRODUCTION_JOBS sets the mixed run's size (`make test-full`: 2,000).
"""

from __future__ import annotations

import io
import os
import resource
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import digit, png_b64
from fixtures.runpod_queue import RunPodQueue

from fastbackend.local import handler_env, stop_process

JOBS = int(os.environ.get("FASTBACKEND_PRODUCTION_JOBS", "60"))
VOLATILE = ("timings", "timestamp", "job_id")  # differ between two runs of the same job


def worker_env(models_dir) -> dict[str, str]:
    return {
        "FASTBACKEND_BASE_MODEL": str(models_dir / "base"),
        "FASTBACKEND_ADAPTERS_DIR": str(models_dir / "adapters"),
        # A long window, so a job stopped while its batch waits for a slow job can be seen
        # dropped; batches close as soon as no job in flight can join, so nothing else waits.
        "FASTBACKEND_MAX_BATCH_WAIT_MS": "10000",
        "FASTBACKEND_LOG_LEVEL": "WARNING",
    }


@pytest.fixture(scope="module")
def production(request, root, models_dir, tmp_path_factory):
    """(queue, worker process, the session's local API): the worker polls the queue."""
    log = tmp_path_factory.mktemp("production") / "worker.log"
    with RunPodQueue() as queue, open(log, "w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "exported.handler"],
            cwd=root,
            env=handler_env({**worker_env(models_dir), **queue.env}),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            api = request.getfixturevalue("local_api")  # starts (if not yet) while the worker starts
            first = queue.add({"op": "ping"})
            assert queue.wait_done([first], 180), f"the worker took no job; log: {log}"
            yield queue, process, api
        finally:
            stop_process(process)


def big_gradient(side: int = 4096) -> str:
    """A PNG that is small on the wire but slow to decode (16.7 M pixels)."""
    from PIL import Image

    row = np.linspace(0, 255, side, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.tile(row, (side, 1))).save(buffer, format="PNG")
    import base64

    return base64.b64encode(buffer.getvalue()).decode()


def mixed_inputs(n: int) -> list[dict]:
    good = [
        {"images": digit("digits", 0)[0], "top_k": 3},
        {"images": digit("inverted", 1)[0], "adapter": "inverted"},
        {"images": [digit("rot90", 2)[0], digit("rot90", 3)[0]], "adapter": "rot90", "return_logits": True},
        {"op": "preprocess", "images": digit("digits", 4)[0]},
        {"op": "adapters"},
        {"op": "echo", "payload": {"a": [1, 2]}},
        {"op": "ping"},
    ]
    bad = [
        {"images": "bm90IGFuIGltYWdl"},  # not an image
        {"op": "nope"},
        {"images": digit("digits", 5)[0], "adapter": "missing"},
        {"images": digit("digits", 6)[0], "colour": "red"},  # an unknown key
        {"images": [png_b64(np.zeros((8, 8), np.uint8))] * 65},  # over max_batch
    ]
    return [bad[i % len(bad)] if i % 4 == 3 else good[i % len(good)] for i in range(n)]


def comparable(output, error) -> tuple:
    """What must be equal on both surfaces: the output without run-specific fields, and the error."""
    if error:  # RunPod keeps only the error string of a FAILED job (the local API shows no output)
        return None, error
    return {k: v for k, v in (output or {}).items() if k not in VOLATILE}, error


def same(a, b, tolerance: float = 1e-4) -> bool:
    """Equal structures, floats within `tolerance`: a forward batched with other jobs (a mixed batch's
    one pass per LoRA layer included) differs from a lone one in the last bits, which the answer's
    5-decimal rounding can turn into 1e-5 either side."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= tolerance
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y, tolerance) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], tolerance) for k in a)
    return a == b


def test_mixed_jobs_answered_once_with_the_local_api_bodies(production):
    queue, _, api = production
    inputs = mixed_inputs(JOBS)
    ids = [queue.add(job_input) for job_input in inputs]
    assert queue.wait_done(ids, 60 + JOBS / 10), "jobs never answered"
    with ThreadPoolExecutor(4) as pool:
        local = list(pool.map(lambda i: api.runsync({"input": i}), inputs[:40]))
    for job_id, reference in zip(ids, local):
        (posted,) = queue.results[job_id]
        ours = comparable(posted.body.get("output"), posted.body.get("error"))
        theirs = comparable(reference.get("output"), reference.get("error"))
        assert same(ours, theirs), (job_id, ours, theirs)
    assert all(len(queue.results[i]) == 1 for i in ids), "a job answered twice"
    assert {t["kind"] for t in queue.takes} >= {"job-take-batch"}, "the batch take was never used"
    assert queue.pings and not queue.refused


def test_out_of_memory_is_posted_with_stop_pod(production):
    queue, process, _ = production
    with open(f"/proc/{process.pid}/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))
    huge = png_b64(np.zeros((4096, 4096, 4), np.uint8))
    soft, hard = resource.prlimit(process.pid, resource.RLIMIT_AS)
    resource.prlimit(process.pid, resource.RLIMIT_AS, (vm + 32 * 2**20, hard))  # a real allocation failure
    try:
        job_id = queue.add({"images": huge})
        assert queue.wait_done([job_id], 60)
    finally:
        resource.prlimit(process.pid, resource.RLIMIT_AS, (soft, hard))
    (posted,) = queue.results[job_id]
    assert posted.body["error"].startswith("OUT_OF_MEMORY: ") and posted.body["stopPod"] is True, posted.body
    after = queue.add({"images": digit("digits", 0)[0]})
    assert queue.wait_done([after], 30) and queue.results[after][0].body["output"]["status"] == "success"


# Timing-dependent (a stop must land while the job waits in its batch): passed in one clean-clone run,
# failed in the next. make test-full until the race is taken out of the test.
@pytest.mark.full
def test_a_stopped_job_is_dropped_from_its_micro_batch(production):
    queue, _, _ = production
    slow = queue.add({"images": [big_gradient()] * 3, "adapter": "inverted"})  # decodes for a while
    stopped = queue.add({"images": digit("inverted", 0)[0], "adapter": "inverted"})
    assert queue.wait_taken([slow, stopped], 30)
    time.sleep(0.3)  # the small job has submitted and waits for the slow one to join its batch
    queue.stop(stopped)
    assert queue.wait_done([slow], 60)
    metrics = queue.add({"op": "metrics"})
    assert queue.wait_done([metrics], 30)
    time.sleep(0.5)
    assert stopped not in queue.results, "a stopped job was answered"
    assert queue.results[slow][0].body["output"]["status"] == "success"
    errors = queue.results[metrics][0].body["output"]["errors"]
    assert errors.get("CANCELLED") == 1, f"the stopped job's rows were not dropped before its forward: {errors}"


def test_job_take_and_job_done_faults_lose_and_double_nothing(production):
    queue, _, _ = production
    queue.faults.take_500, queue.faults.take_drop, queue.faults.take_429 = 3, 2, 1
    queue.faults.done_500 = 2  # the SDK retries a failed post
    ids = [queue.add(job_input) for job_input in mixed_inputs(30)]
    assert queue.wait_done(ids, 90), f"lost: {[i for i in ids if not queue.results.get(i)]}"
    assert all(len(queue.results[i]) == 1 for i in ids)
    assert (queue.faults.take_500, queue.faults.take_drop, queue.faults.take_429, queue.faults.done_500) == (0,) * 4


@pytest.mark.parametrize("images_per_job", [64, pytest.param(32, marks=pytest.mark.full)])
def test_at_the_defaults_64_full_jobs_taken_at_once_all_succeed(production, images_per_job):
    """64 jobs x 64 images is 4,096 images against MAX_QUEUED_IMAGES 1,024: a job taken from the
    queue waits for room (MAX_ADMISSION_WAIT_MS) instead of failing RATE_LIMITED (issue 24, item 6)."""
    queue, _, _ = production
    images = [digit("digits", i)[0] for i in range(images_per_job)]
    ids = [queue.add({"images": images}) for _ in range(64)]
    assert queue.wait_done(ids, 240), f"unanswered: {len([i for i in ids if not queue.results.get(i)])}"
    assert all(len(queue.results[i]) == 1 for i in ids), "a job answered twice"
    outputs = [queue.results[i][0].body.get("output") or {} for i in ids]
    failed = [o.get("code") or o.get("error") for o in outputs if o.get("status") != "success"]
    assert not failed, f"{len(failed)} of 64 failed: {failed[:3]}"
    assert all(len(o["predictions"]) == images_per_job for o in outputs)


def test_sigterm_answers_every_job_taken_and_exits(production):
    """SIGTERM with jobs in flight, and with a job-take long poll held open that hands out one more
    job after the signal: the SDK alone would put that job on a queue nobody reads (worker/draining.py).
    Deterministic: the late job is added only once the held take has begun and the signal is sent."""
    queue, process, _ = production
    ids = [queue.add({"images": [big_gradient(2048)] * 2}) for _ in range(2)]
    ids += [queue.add(job_input) for job_input in mixed_inputs(20)]
    assert queue.wait_taken(ids, 60)
    queue.long_poll_s = 10.0  # the next take, with nothing pending, is held open
    takes = len(queue.takes)
    assert queue.wait_for(lambda: len(queue.takes) > takes, 10), "no take after the queue emptied"
    process.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # the signal is handled: the SDK is stopping while the take is held
    late = queue.add({"images": digit("digits", 7)[0]})
    assert process.wait(60) == 0
    assert late in queue.taken, "the held take did not hand out the late job"
    lost = [i for i in [*ids, late] if len(queue.results.get(i, [])) != 1]
    assert not lost, f"taken but not answered exactly once: {lost}"
    assert queue.results[late][0].body["output"]["status"] == "success"
