"""Load: RunPod's local API under a bounded burst from several client threads, on loopback.

Zero lost jobs (every request answered: COMPLETED, or FAILED with a coded error), zero
HTTP 5xx, and resident memory growing under 5% from the first 500 requests to the end.
`make test` sends 1,000 requests; FASTBACKEND_LOAD_REQUESTS raises it (`make test-full`: 3,000).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import digit

from fastbackend.local import serve_api
from worker.errors import ErrorCode

REQUESTS = max(1000, int(os.environ.get("FASTBACKEND_LOAD_REQUESTS", "1000")))
THREADS = 8
WINDOW = 500
CODES = {c.value for c in ErrorCode}


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def test_burst_through_the_local_api(root, models_dir):
    env = {"FASTBACKEND_BASE_MODEL": str(models_dir / "base"), "FASTBACKEND_ADAPTERS_DIR": str(models_dir / "adapters")}
    valid = [
        {"input": {"images": digit(task, i)[0], **({"adapter": task} if task != "digits" else {}), "top_k": 3}}
        for task in ("digits", "inverted", "rot90")
        for i in range(5)
    ]
    invalid = [
        {"input": {"images": "bm90IGFuIGltYWdl"}},
        {"input": {"op": "nope"}},
        {"input": {"images": "x", "adapter": "zz"}},
    ]
    jobs = [invalid[i % 3] if i % 5 == 4 else valid[i % len(valid)] for i in range(REQUESTS)]

    def send(job):
        started = time.perf_counter()
        status, body = api.post("/runsync", job)
        return status, body, time.perf_counter() - started

    with serve_api(root, env=env) as api:
        started = time.perf_counter()
        with ThreadPoolExecutor(THREADS) as pool:
            first = list(pool.map(send, jobs[:WINDOW]))
            rss_after_first = rss_kb(api.pid)
            rest = list(pool.map(send, jobs[WINDOW:]))
        elapsed = time.perf_counter() - started
        rss_at_end = rss_kb(api.pid)
    answers = first + rest
    assert len(answers) == REQUESTS
    assert not [s for s, _, _ in answers if s >= 500], "HTTP 5xx from the local API"
    for (status, body, _), job in zip(answers, jobs):
        assert status == 200, body
        if job in invalid:
            assert body["status"] == "FAILED" and body["error"].split(":")[0] in CODES, body
        else:
            assert body["status"] == "COMPLETED" and body["output"]["predictions"], body
    growth = (rss_at_end - rss_after_first) / rss_after_first
    latencies = sorted(t for _, _, t in answers)
    q = statistics.quantiles(latencies, n=100)
    report = {
        "requests": REQUESTS,
        "threads": THREADS,
        "requests_per_s": round(REQUESTS / elapsed, 1),
        "p50_ms": round(q[49] * 1000, 2),
        "p95_ms": round(q[94] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
        "rss_after_first_500_mb": round(rss_after_first / 1024, 1),
        "rss_at_end_mb": round(rss_at_end / 1024, 1),
        "rss_growth_percent": round(growth * 100, 2),
    }
    out = root / "test-artifacts" / "load.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nload: {report}")
    assert growth < 0.05, report
