"""Batch 1 on the embedded model: the worker's handler vs the plain hand-written one.

    python -m benchmarks.embedded [--repeats 300]

The same predict job (one held-out inverted digit as a base64 PNG, adapter `inverted`) through
`Worker.handle` at default settings and through benchmarks/plain_handler.py's `handler`, in
this process, interleaved. The plain handler validates nothing and logs nothing: the ratio is
the price of the worker's validation, limits, metrics and logging on the smallest job.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib
import io
import os
import sys
import time

from benchmarks.report import median_ms, save, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--models", default="models")
    args = parser.parse_args()

    from PIL import Image

    from exported.demo_models import load_digit_task
    from exported.handler import WORKER as GENERATED
    from worker.config import WorkerConfig
    from worker.runtime import Worker

    os.environ["PLAIN_MODEL"] = f"{args.models}/base"
    os.environ["PLAIN_ADAPTER"] = f"{args.models}/adapters/inverted"
    plain = importlib.import_module("benchmarks.plain_handler")
    # The worker logs each job at its default level, as when served; set up with stdout pointed at
    # stderr, its log handler writes there, and stdout holds only the table (make bench reads it).
    with contextlib.redirect_stdout(sys.stderr):
        worker = Worker(GENERATED.functions).setup(
            WorkerConfig(base_model=f"{args.models}/base", adapters_dir=f"{args.models}/adapters")
        )
    images, _ = load_digit_task("inverted", "test")
    buffer = io.BytesIO()
    Image.fromarray(images[0]).save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    ours_job = {"id": "bench", "input": {"images": encoded, "adapter": "inverted"}}
    plain_job = {"id": "bench", "input": {"images": encoded}}
    assert worker.handle(ours_job)["predictions"][0]["label"] == plain.handler(plain_job)["predictions"][0]["label"]
    ours_s, plain_s = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        worker.handle(ours_job)
        ours_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        plain.handler(plain_job)
        plain_s.append(time.perf_counter() - start)
    o, p = median_ms(ours_s), median_ms(plain_s)
    print(
        table(
            f"Batch 1, embedded model + adapter, median of {args.repeats}",
            ["what", "ms", "vs hand-written"],
            [("worker handler (default settings)", o, f"{o / p:.2f}x"), ("hand-written handler", p, "1.00x")],
        )
    )
    print(f"saved {save('embedded', {'worker_ms': o, 'plain_ms': p, 'ratio': round(o / p, 3)})}")


if __name__ == "__main__":
    main()
