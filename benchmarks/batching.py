"""Micro-batching: N concurrent single-image jobs, batched (concurrency N) vs serial (concurrency 1).

    python -m benchmarks.batching [--rounds 20]

Each round submits N jobs at once (the SDK's async path: `handle_async` under asyncio) and
waits for all; a job's latency runs from the round's start to its answer. The serial worker
answers the same jobs one at a time, as RunPod runs a sync handler. Same process, same
images, rounds interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time

from benchmarks.report import save, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--models", default="models")
    args = parser.parse_args()

    import base64
    import io

    from PIL import Image

    from exported.demo_models import load_digit_task
    from exported.handler import WORKER as GENERATED  # the notebook functions export wired in
    from worker.config import WorkerConfig
    from worker.runtime import Worker

    functions = GENERATED.functions

    def worker(concurrency: int) -> Worker:
        w = Worker(functions)
        w.setup(
            WorkerConfig(
                base_model=f"{args.models}/base",
                adapters_dir=f"{args.models}/adapters",
                concurrency=concurrency,
                log_level="ERROR",
            )
        )
        return w

    images, _ = load_digit_task("inverted", "test")

    def encoded(i: int) -> str:
        buffer = io.BytesIO()
        Image.fromarray(images[i]).save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode()

    async def round_trip(w: Worker, jobs: list[dict]) -> list[float]:
        start = time.perf_counter()

        async def one(job: dict) -> float:
            answer = await w.handle_async(job)
            assert answer["status"] == "success", answer
            return time.perf_counter() - start

        return list(await asyncio.gather(*(one(j) for j in jobs)))

    rows, record = [], {}
    for n in (8, 32):
        jobs = [{"id": str(i), "input": {"images": encoded(i), "adapter": "inverted"}} for i in range(n)]
        serial, batched = worker(1), worker(n)
        logging.getLogger("fastbackend").setLevel(logging.ERROR)
        lat = {"serial": [], "batched": []}
        wall = {"serial": 0.0, "batched": 0.0}
        for _ in range(args.rounds):
            for name, w in (("serial", serial), ("batched", batched)):
                latencies = asyncio.run(round_trip(w, jobs))
                lat[name] += latencies
                wall[name] += max(latencies)
        p95 = {k: statistics.quantiles(v, n=20)[18] * 1000 for k, v in lat.items()}
        rps = {k: n * args.rounds / wall[k] for k in wall}
        rows.append(
            (
                n,
                f"{rps['serial']:.0f}",
                f"{rps['batched']:.0f}",
                f"{rps['batched'] / rps['serial']:.2f}x",
                f"{p95['serial']:.1f}",
                f"{p95['batched']:.1f}",
                f"{p95['batched'] / p95['serial']:.2f}x",
            )
        )
        record[f"jobs_{n}"] = {
            "serial_jobs_per_s": round(rps["serial"], 1),
            "batched_jobs_per_s": round(rps["batched"], 1),
            "throughput_ratio": round(rps["batched"] / rps["serial"], 3),
            "serial_p95_ms": round(p95["serial"], 2),
            "batched_p95_ms": round(p95["batched"], 2),
        }
    print(
        table(
            f"Micro-batching, {args.rounds} rounds of N concurrent single-image jobs",
            ["N", "serial jobs/s", "batched jobs/s", "throughput", "serial p95 ms", "batched p95 ms", "p95 ratio"],
            rows,
        )
    )
    print(f"saved {save('batching', record)}")


if __name__ == "__main__":
    main()
