"""Many adapters, one worker: jobs/s at default settings for 1, 4, 16 and 64 adapters, round-robin
and Zipf-popular, with mixed-adapter micro-batches vs per-adapter batches, against one adapter.

    python -m benchmarks.many_adapters [--jobs 2000] [--setup-folders 10000]

In-process async handler (`handle_async`), concurrency 64 (the default), single-image jobs, at
most 64 in flight; every adapter is a copy of the demo's `inverted` with its own lora_B weights.
*Per-adapter batches* is the same worker with FASTBACKEND_MIX_ADAPTERS=false (a micro-batch then
holds one adapter, as before mixing). Each row's worker answers one unmeasured pass first (adapters
loaded), then the measured one. Ratios are against the one-adapter figure of the same run. Also:
setup time with `--setup-folders` adapter folders on the volume, against an empty folder.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.report import save, table

COUNTS = (1, 4, 8, 16, 64)
IN_FLIGHT = 64


def distinct_adapters(source: Path, folder: Path, count: int) -> list[str]:
    from safetensors.numpy import load_file, save_file

    weights = load_file(str(source / "adapter_model.safetensors"))
    key = sorted(k for k in weights if "lora_B" in k)[0]
    for i in range(count):
        shutil.copytree(source, folder / f"a{i:03d}")
        changed = {**weights, key: weights[key] + np.float32(0.05 * (i + 1))}
        save_file(changed, str(folder / f"a{i:03d}" / "adapter_model.safetensors"))
    return [f"a{i:03d}" for i in range(count)]


def popularity(kind: str, count: int, jobs: int, seed: int = 0) -> list[int]:
    if kind == "round-robin":
        return [i % count for i in range(jobs)]
    weights = 1 / np.arange(1, count + 1) ** 1.1  # Zipf, s = 1.1
    return list(np.random.default_rng(seed).choice(count, size=jobs, p=weights / weights.sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--models", default="models")
    parser.add_argument("--setup-folders", type=int, default=10_000)
    args = parser.parse_args()

    from PIL import Image

    from exported.demo_models import load_digit_task
    from exported.handler import WORKER as GENERATED
    from worker.config import WorkerConfig
    from worker.runtime import Worker

    work = Path(tempfile.mkdtemp(prefix="bench-many-adapters-"))
    names = distinct_adapters(Path(args.models) / "adapters" / "inverted", work / "adapters", max(COUNTS))
    digits, _ = load_digit_task("inverted", "test")

    def encoded(i: int) -> str:
        buffer = io.BytesIO()
        Image.fromarray(digits[i]).save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode()

    images = [encoded(i) for i in range(32)]

    def worker(mix: bool, adapters_dir: Path = work / "adapters") -> Worker:
        config = WorkerConfig(
            base_model=f"{args.models}/base", adapters_dir=str(adapters_dir), mix_adapters=mix, log_level="ERROR"
        )
        w = Worker(GENERATED.functions).setup(config)
        logging.getLogger("fastbackend").setLevel(logging.ERROR)
        return w

    async def drive(w: Worker, jobs: list[dict]) -> float:
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def one(job: dict) -> None:
            async with gate:
                answer = await w.handle_async(job)
            assert answer["status"] == "success", answer

        start = time.perf_counter()
        await asyncio.gather(*(one(j) for j in jobs))
        return len(jobs) / (time.perf_counter() - start)

    def jobs_for(picks: list[int]) -> list[dict]:
        return [{"id": str(i), "input": {"images": images[i % 32], "adapter": names[a]}} for i, a in enumerate(picks)]

    mixed, per_adapter = worker(True), worker(False)
    rates: dict[tuple, float] = {}
    for count in COUNTS:
        for kind in ("round-robin", "zipf") if count > 1 else ("round-robin",):
            jobs = jobs_for(popularity(kind, count, args.jobs))
            for mode, w in (("mixed", mixed), ("per-adapter", per_adapter)):
                asyncio.run(drive(w, jobs))  # loads every adapter the row uses
                rates[count, kind, mode] = asyncio.run(drive(w, jobs))
    one = rates[1, "round-robin", "mixed"]
    rows, record = [], {"jobs": args.jobs, "one_adapter_jobs_per_s": round(one, 1), "rows": []}
    for (count, kind, mode), rate in rates.items():
        if mode == "mixed":
            per = rates[count, kind, "per-adapter"]
            rows.append((count, kind, f"{rate:.0f}", f"{rate / one:.2f}x", f"{per:.0f}", f"{per / one:.2f}x"))
            record["rows"].append(
                {"adapters": count, "popularity": kind, "mixed": round(rate, 1), "per_adapter": round(per, 1)}
            )
    cache = mixed.host.cache_state()
    print(
        table(
            f"Many adapters: {args.jobs} single-image jobs, {IN_FLIGHT} in flight, default cache "
            f"({cache['budget_bytes'] / 2**20:.0f} MB); ratios vs one adapter ({one:.0f} jobs/s)",
            ["adapters", "popularity", "mixed jobs/s", "vs one", "per-adapter jobs/s", "vs one"],
            rows,
        )
    )
    few, crowded = work / "few", work / "crowded"
    for i in range(args.setup_folders):  # folders after the adapters by name: `*` preloads the adapters
        (crowded / f"f{i:05d}").mkdir(parents=True)
    for name in names[:4]:
        shutil.copytree(work / "adapters" / name, few / name)
        shutil.copytree(work / "adapters" / name, crowded / name)
    setups = {}
    for label, folder in (("few", few), ("crowded", crowded)):
        start = time.perf_counter()
        worker(True, folder)
        setups[label] = time.perf_counter() - start
    print(
        f"setup with 4 adapters and {args.setup_folders} other folders: {setups['crowded']:.2f} s; "
        f"with the 4 adapters alone: {setups['few']:.2f} s (+{setups['crowded'] - setups['few']:.2f} s)"
    )
    record["setup_s"] = {k: round(v, 3) for k, v in setups.items()}
    print(f"saved {save('many_adapters', record)}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
