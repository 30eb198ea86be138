"""Many adapters, one worker: jobs/s at default settings for 1 to 64 adapters, round-robin and
Zipf-popular, with mixed-adapter micro-batches vs per-adapter batches, against one adapter; on the
demo model and on a ViT-base-sized one.

    python -m benchmarks.many_adapters [--jobs 2000] [--repeats 2] [--base-jobs 32] [--base-repeats 1]
                                       [--setup-folders 10000]

In-process async handler (`handle_async`), concurrency 64 (the default), single-image jobs, at
most 64 in flight. Demo model: the digits, every adapter a copy of the demo's `inverted` with its
own lora_B weights. ViT-base-sized (benchmarks/realdata.py: ViT-base/16 at 224, random weights,
1 MP JPEG photos): LoRA r=8 on q_proj and v_proj (about 1 MB each), each adapter its own random
weights; a ViT-base forward on 2 CPU cores is slow, so that model runs `--base-jobs` jobs a row.
*Per-adapter batches* is the same worker with FASTBACKEND_MIX_ADAPTERS=false (a micro-batch then
holds one adapter, as before mixing). Every row's adapters are loaded before it is measured; the
rows run `--repeats` times, interleaved so machine noise hits all alike, and each keeps its best.
Ratios are against the one-adapter figure of the same model in the same run. Also: setup time
with `--setup-folders` adapter folders on the volume, against the adapters alone.
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
from typing import Any

import numpy as np

from benchmarks.report import save, table

COUNTS = (1, 4, 8, 16, 64)
BASE_COUNTS = (1, 4, 16, 64)
IN_FLIGHT = 64
MODES = {"mixed": True, "per-adapter": False}


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


def make_worker(base: Path, adapters_dir: Path, mix: bool) -> Any:
    from exported.handler import WORKER as GENERATED
    from worker.config import WorkerConfig
    from worker.runtime import Worker

    config = WorkerConfig(base_model=str(base), adapters_dir=str(adapters_dir), mix_adapters=mix, log_level="ERROR")
    worker = Worker(GENERATED.functions).setup(config)
    logging.getLogger("fastbackend").setLevel(logging.ERROR)
    return worker


async def drive(worker: Any, jobs: list[dict]) -> float:
    """jobs/s for `jobs`, at most IN_FLIGHT at once."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(job: dict) -> None:
        async with gate:
            answer = await worker.handle_async(job)
        assert answer["status"] == "success", answer

    start = time.perf_counter()
    await asyncio.gather(*(one(j) for j in jobs))
    return len(jobs) / (time.perf_counter() - start)


def measure(base: Path, adapters_dir: Path, names: list[str], images: list[str], counts, jobs: int, repeats: int):
    """{(count, popularity, mode): best jobs/s}, and the mixed worker."""
    workers = {mode: make_worker(base, adapters_dir, mix) for mode, mix in MODES.items()}
    rows = [(c, kind) for c in counts for kind in (("round-robin", "zipf") if c > 1 else ("round-robin",))]
    work = {
        (c, kind): [
            {"id": str(i), "input": {"images": images[i % len(images)], "adapter": names[a]}}
            for i, a in enumerate(popularity(kind, c, jobs))
        ]
        for c, kind in rows
    }
    rates: dict[tuple, float] = {}
    for _ in range(repeats):
        for (count, kind), row_jobs in work.items():
            for mode, worker in workers.items():
                for name in names[:count]:  # loaded before it is measured (a hit when already held)
                    with worker.host.serving(name):
                        pass
                asyncio.run(drive(worker, row_jobs[: max(8, len(row_jobs) // 10)]))  # warm: this row's shapes
                rate = asyncio.run(drive(worker, row_jobs))
                rates[count, kind, mode] = max(rate, rates.get((count, kind, mode), 0.0))
    return rates, workers["mixed"]


def forward_costs(worker: Any, names: list[str], sizes: tuple[int, ...], repeats: int) -> tuple[str, list]:
    """CPU ms of one forward of n rows (random pixels): one adapter for all rows, n adapters through
    the worker's batched mixed forward (`ModelHost.run_batch`), n adapters through peft's
    `adapter_names` (the notebook's `predict_logits`, which the batched path stands in for). CPU
    time, so other processes on the machine disturb it less than they disturb jobs/s."""
    host = worker.host
    keys = []
    for name in names:
        with host.serving(name) as (key, _):
            keys.append(key)
    c = host.preprocess_config

    def peft_loop(pixels: dict, mixed: list) -> None:
        with host.lock:
            host.task.forward(host.model, pixels, mixed)

    rows, record = [], []
    for n in sizes:
        pixels = {"pixel_values": np.random.default_rng(0).standard_normal((n, c.num_channels, c.height, c.width))}
        pixels["pixel_values"] = pixels["pixel_values"].astype(np.float32)
        mixed = [keys[i % len(keys)] for i in range(n)]

        runs = {"one": (host.run_batch, keys[0]), "batched": (host.run_batch, mixed), "peft": (peft_loop, mixed)}
        best = {label: float("inf") for label in runs}
        for _ in range(repeats):
            for label, (run, adapter) in runs.items():  # interleaved: machine noise hits all alike
                begin = time.process_time()
                run(pixels, adapter)
                best[label] = min(best[label], (time.process_time() - begin) * 1000)
        distinct = len(set(mixed))
        rows.append(
            (
                n,
                distinct,
                f"{best['one']:.1f}",
                f"{best['batched']:.1f}",
                f"{best['batched'] / best['one']:.2f}x",
                f"{best['peft']:.1f}",
                f"{best['peft'] / best['one']:.2f}x",
            )
        )
        record.append({"rows": n, "adapters": distinct, **{k: round(v, 2) for k, v in best.items()}})
    header = ["rows", "adapters", "one adapter ms", "batched ms", "vs one", "peft adapter_names ms", "vs one"]
    return table("CPU ms per forward, best of the repeats", header, rows), record


def report(label: str, jobs: int, rates: dict, mixed: Any) -> tuple[str, dict]:
    cache = mixed.host.cache_state()
    one = rates[1, "round-robin", "mixed"]
    rows, record = [], {"jobs": jobs, "one_adapter_jobs_per_s": round(one, 1), "rows": []}
    for (count, kind, mode), rate in rates.items():
        if mode == "mixed":
            per = rates[count, kind, "per-adapter"]
            rows.append((count, kind, f"{rate:.1f}", f"{rate / one:.2f}x", f"{per:.1f}", f"{per / one:.2f}x"))
            record["rows"].append(
                {"adapters": count, "popularity": kind, "mixed": round(rate, 2), "per_adapter": round(per, 2)}
            )
    text = table(
        f"Many adapters, {label}: {jobs} single-image jobs, {IN_FLIGHT} in flight, default cache "
        f"({cache['budget_bytes'] / 2**20:.0f} MB); ratios vs one adapter ({one:.1f} jobs/s)",
        ["adapters", "popularity", "mixed jobs/s", "vs one", "per-adapter jobs/s", "vs one"],
        rows,
    )
    return text, record


def vit_base_adapter(base: Path, folder: Path) -> Path:
    """A LoRA adapter (r=8, q_proj and v_proj, random weights) of the ViT-base-sized model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(base)
    torch.manual_seed(0)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(folder)
    return folder


def demo_images() -> list[str]:
    from PIL import Image

    from exported.demo_models import load_digit_task

    digits, _ = load_digit_task("inverted", "test")
    encoded = []
    for array in digits[:32]:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        encoded.append(base64.b64encode(buffer.getvalue()).decode())
    return encoded


def setup_times(work: Path, source: Path, names: list[str], folders: int, models: Path) -> dict[str, float]:
    few, crowded = work / "few", work / "crowded"
    for i in range(folders):  # folders after the adapters by name: `*` preloads the adapters
        (crowded / f"f{i:05d}").mkdir(parents=True)
    for name in names[:4]:
        shutil.copytree(source / name, few / name)
        shutil.copytree(source / name, crowded / name)
    setups = {}
    for label, folder in (("few", few), ("crowded", crowded)):
        start = time.perf_counter()
        make_worker(models / "base", folder, True)
        setups[label] = time.perf_counter() - start
    return setups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per demo-model row (0: skip that model)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--base-jobs", type=int, default=32, help="jobs per ViT-base row (0: skip that model)")
    parser.add_argument("--base-repeats", type=int, default=1, help="repeats of the ViT-base rows")
    parser.add_argument("--models", default="models")
    parser.add_argument("--setup-folders", type=int, default=10_000)
    args = parser.parse_args()

    models = Path(args.models)
    work = Path(tempfile.mkdtemp(prefix="bench-many-adapters-"))
    record: dict[str, Any] = {}
    try:
        names = distinct_adapters(models / "adapters" / "inverted", work / "adapters", max(COUNTS))
        if args.jobs:
            images = demo_images()
            rates, mixed = measure(models / "base", work / "adapters", names, images, COUNTS, args.jobs, args.repeats)
            text, record["demo"] = report("demo model", args.jobs, rates, mixed)
            costs, record["demo"]["forward_cpu_ms"] = forward_costs(mixed, names, (8, 32, 64), 20)
            print(f"{text}\n\n{costs.replace('forward', 'demo-model forward', 1)}\n", flush=True)
        if args.base_jobs:
            from benchmarks.realdata import encoded_photos, model_dir

            vit = model_dir("vit-base")
            source = vit_base_adapter(vit, work / "vit-source")
            vit_names = distinct_adapters(source, work / "vit-adapters", max(BASE_COUNTS))
            photos = encoded_photos(1, 8)
            rates, mixed = measure(
                vit, work / "vit-adapters", vit_names, photos, BASE_COUNTS, args.base_jobs, args.base_repeats
            )
            text, record["vit_base"] = report("ViT-base-sized (1 MP JPEGs)", args.base_jobs, rates, mixed)
            costs, record["vit_base"]["forward_cpu_ms"] = forward_costs(mixed, vit_names, (16,), 2)
            print(f"{text}\n\n{costs.replace('forward', 'ViT-base forward', 1)}\n", flush=True)
        setups = setup_times(work, work / "adapters", names, args.setup_folders, models)
        print(
            f"setup with 4 adapters and {args.setup_folders} other folders: {setups['crowded']:.2f} s; "
            f"with the 4 adapters alone: {setups['few']:.2f} s (+{setups['crowded'] - setups['few']:.2f} s)"
        )
        record["setup_s"] = {k: round(v, 3) for k, v in setups.items()}
        print(f"saved {save('many_adapters', record)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
