"""Scoring a dataset: `fastbackend batch` vs one image at a time, against RunPod's local API.

    python -m benchmarks.batch [--images 200] [--concurrency 4]

One local API worker (FASTBACKEND_CONCURRENCY=4, micro-batching on) serves every variant, in
one run, on the same images (the demo's digits as PNG files):
- baseline: one `predict` job per image, each waited for (`invoke --local`, in-process: no
  process start counted), and `fastbackend invoke` as a command for a few images (with it);
- batch: `run_batch` with the given concurrency, 1, 16 and 64 (the worker's cap) images per job.
The images/s of the best variant per worker is what the 1M-image estimate starts from
(docs/tutorials/score-a-dataset.md).
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.report import save, table

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--cli-images", type=int, default=5, help="images sent by the invoke command (slow)")
    parser.add_argument("--models", default="models")
    args = parser.parse_args()

    from PIL import Image

    from exported.demo_models import load_digit_task
    from fastbackend.batch.engine import BatchOptions, run_batch
    from fastbackend.client import Mode, Target
    from fastbackend.local import build_payload, handler_env, serve_api

    images, labels = load_digit_task("digits", "all")
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    data = work / "data"
    files = []
    for i in range(args.images):
        folder = data / str(labels[i])
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:05d}.png"
        Image.fromarray(images[i]).save(path)
        files.append(path)
    env = {
        "FASTBACKEND_BASE_MODEL": f"{args.models}/base",
        "FASTBACKEND_ADAPTERS_DIR": f"{args.models}/adapters",
        "FASTBACKEND_CONCURRENCY": "4",
        "FASTBACKEND_LOG_LEVEL": "ERROR",
    }
    results: dict[str, tuple[int, float]] = {}
    with serve_api(ROOT, env=env) as api:
        for path in files[:8]:  # warm the server's paths before timing
            api.invoke(build_payload([path]), Mode.SYNC)

        start = time.perf_counter()
        for path in files:
            answer = api.invoke(build_payload([path]), Mode.SYNC)
            assert answer.ok, answer.raw
        results["one image per invoke, in-process (baseline)"] = (len(files), time.perf_counter() - start)

        start = time.perf_counter()
        for path in files[: args.cli_images]:
            command = [sys.executable, "-m", "fastbackend.cli", "invoke", str(path), "--local", api.url, "--json"]
            subprocess.run(command, cwd=ROOT, env=handler_env(), check=True, capture_output=True)
        results["`fastbackend invoke` command per image"] = (args.cli_images, time.perf_counter() - start)

        for batch_size in (1, 16, 64):
            out = work / f"results-{batch_size}.jsonl"
            options = BatchOptions(
                dataset=data,
                out=out,
                target=Target.local(api.url),
                concurrency=args.concurrency,
                batch_size=batch_size,
                progress=False,
            )
            start = time.perf_counter()
            summary = run_batch(options, io.StringIO())
            elapsed = time.perf_counter() - start
            assert summary.written_ok == len(files), summary.lines()
            name = f"batch, concurrency {args.concurrency}, {batch_size} image{'s' if batch_size > 1 else ''}/job"
            results[name] = (len(files), elapsed)

    base_rate = _rate(*results["one image per invoke, in-process (baseline)"])
    rows = [
        (name, n, f"{seconds:.2f}", f"{_rate(n, seconds):.1f}", f"{_rate(n, seconds) / base_rate:.2f}x")
        for name, (n, seconds) in results.items()
    ]
    print(
        table(
            f"Scoring {args.images} images on the local API (FASTBACKEND_CONCURRENCY=4)",
            ["how", "images", "s", "images/s", "vs one per invoke"],
            rows,
        )
    )
    record = {
        name: {"images": n, "seconds": round(s, 3), "images_per_s": round(_rate(n, s), 2)}
        for name, (n, s) in results.items()
    }
    print(f"saved {save('batch', record)}")


def _rate(images: int, seconds: float) -> float:
    return images / seconds if seconds else 0.0


if __name__ == "__main__":
    main()
