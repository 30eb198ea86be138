"""Production mode: jobs/s and job latency of a worker pulling from a RunPod-shaped queue.

    python -m benchmarks.production [--jobs 2000]

Each setting starts its worker process as RunPod does (`python -m exported.handler`, the
RUNPOD_WEBHOOK_* variables at tests/fixtures/runpod_queue.py on loopback), warms it with one
job, then queues a backlog of jobs at once and waits for every answer. jobs/s = jobs /
(last answer - first queued); latency = job taken -> result posted (the time the worker
holds a job; waiting in the backlog is the queue's, not the worker's). Every job must be
answered exactly once. The baseline is benchmarks/plain_handler.py (sync, one job at a
time); it answers about one job a second, so it gets fewer jobs.
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.report import save, table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from fixtures.runpod_queue import RunPodQueue  # noqa: E402

from fastbackend.local import handler_env, stop_process  # noqa: E402
from worker.config import WorkerConfig  # noqa: E402

DEFAULT = WorkerConfig().concurrency


def encoded_digits(n: int) -> list[str]:
    from PIL import Image

    from exported.demo_models import load_digit_task

    images, _ = load_digit_task("inverted", "test")
    out = []
    for image in images[:n]:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        out.append(base64.b64encode(buffer.getvalue()).decode())
    return out


def run(module: str, env: dict[str, str], phases: list[tuple[int, int]], digits: list[str]) -> list[dict]:
    """Start the worker once; per phase (images per job, jobs) queue the backlog and measure."""
    results = []
    with RunPodQueue() as queue:
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=ROOT,
            env=handler_env({**env, **queue.env}),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            warm = queue.add({"images": digits[0], "adapter": "inverted"})
            if not queue.wait_done([warm], 300):
                raise RuntimeError(f"{module} answered no job")
            for images, jobs in phases:
                start = time.perf_counter()
                ids = [
                    queue.add({"images": [digits[(i + k) % len(digits)] for k in range(images)], "adapter": "inverted"})
                    for i in range(jobs)
                ]
                done = queue.wait_done(ids, 60 + jobs * 2)
                answered = [i for i in ids if queue.results.get(i)]
                end = max(queue.results[i][0].at for i in answered)
                held = sorted((queue.results[i][0].at - queue.taken[i]) * 1000 for i in answered)
                q = statistics.quantiles(held, n=100) if len(held) > 1 else [held[0]] * 99
                ok = sum(queue.results[i][0].body.get("output", {}).get("status") == "success" for i in answered)
                results.append(
                    {
                        "images_per_job": images,
                        "jobs": jobs,
                        "jobs_per_s": round(len(answered) / (end - start), 1),
                        "p50_ms": round(q[49], 1),
                        "p95_ms": round(q[94], 1),
                        "lost": jobs - len(answered),
                        "doubled": sum(len(queue.results[i]) > 1 for i in answered),
                        "failed": len(answered) - ok,
                        "complete": done,
                    }
                )
        finally:
            stop_process(process)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000, help="single-image jobs for the default settings")
    parser.add_argument("--models", default="models")
    parser.add_argument("--best", type=int, default=128, help="the concurrency shown as the best setting")
    args = parser.parse_args()
    digits = encoded_digits(64)
    models = {"FASTBACKEND_BASE_MODEL": f"{args.models}/base", "FASTBACKEND_ADAPTERS_DIR": f"{args.models}/adapters"}
    eight = max(50, args.jobs // 4)
    settings = [  # name, module, env, phases (images per job, jobs)
        ("plain sync handler", "benchmarks.plain_handler", {"PLAIN_MODEL": f"{args.models}/base"}, [(1, 20), (8, 10)]),
        ("FASTBACKEND_CONCURRENCY=16", "exported.handler", {**models, "FASTBACKEND_CONCURRENCY": "16"}, [(1, 200)]),
        (f"defaults (concurrency {DEFAULT})", "exported.handler", models, [(1, args.jobs), (8, eight)]),
        (
            f"best (concurrency {args.best})",
            "exported.handler",
            {**models, "FASTBACKEND_CONCURRENCY": str(args.best)},
            [(1, args.jobs), (8, eight)],
        ),
    ]
    rows, record = [], {}
    baseline: dict[int, float] = {}
    for name, module, env, phases in settings:
        record[name] = run(module, env, phases, digits)
        for r in record[name]:
            baseline.setdefault(r["images_per_job"], r["jobs_per_s"])
            ratio = f"{r['jobs_per_s'] / baseline[r['images_per_job']]:.0f}x"
            rows.append(
                [name, r["images_per_job"], r["jobs"], r["jobs_per_s"], ratio, r["p50_ms"], r["p95_ms"]]
                + [f"{r['lost']}/{r['doubled']}/{r['failed']}"]
            )
    header = ["worker", "images/job", "jobs", "jobs/s", "vs plain", "p50 ms", "p95 ms", "lost/doubled/failed"]
    print(table("Production mode through a RunPod-shaped queue, backlog of jobs", header, rows))
    print(f"saved {save('production', {'jobs': args.jobs, 'results': record})}")


if __name__ == "__main__":
    main()
