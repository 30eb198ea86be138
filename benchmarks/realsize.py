"""Real sizes: phone photos through ViT-base and ConvNeXt-tiny, handler vs forward-only vs naive.

    python -m benchmarks.realsize [--repeats 3] [--quick]

Per job, in this process, on the same JPEGs (benchmarks/realdata.py), interleaved so machine
noise hits all alike:
- handler: the worker's `handle` on a predict job (base64 JPEGs, as a client sends them);
- forward-only: the model's forward on the already-preprocessed batch (the floor of any worker);
- naive: what one writes by hand, one thread, image by image: base64 -> PIL full decode ->
  convert -> the model's AutoImageProcessor (PIL backend, the reference of "exact") -> forward.
Then decode + preprocess alone (the worker's `preprocess` op, exact and with
FASTBACKEND_FAST_DECODE=on, vs the naive loop) per megapixel class, with the largest pixel
difference to the reference processor (normalised units) and whether fast decode keeps the exact
path's top-1 on the two photographs.

64 photos of 1 MP or more are over RunPod's 20 MB body limit as base64; in process there is no
HTTP body, so the benchmark's worker has that one check lifted, and its per-job pixel and
decode-time budgets raised to hold 64 12 MP photos (everything else at the defaults).
"""

from __future__ import annotations

import argparse
import base64
import io
import logging
import time
from dataclasses import replace
from typing import Any

import numpy as np

from benchmarks.realdata import MODELS, encoded_photos, model_dir
from benchmarks.report import median_ms, save, table

# The columns of a predict-job table: here on the CPU, and in benchmarks/gpu.py per GPU setting.
PREDICT_COLUMNS = [
    "model",
    "photos",
    "batch",
    "handler ms",
    "images/s",
    "forward ms",
    "naive ms",
    "handler / forward",
    "handler / naive",
]


def make_worker(model: str, **settings: Any) -> Any:
    from exported.handler import WORKER as GENERATED  # the notebook functions export wired in
    from worker.config import WorkerConfig
    from worker.runtime import Worker

    folder = model_dir(model)
    config = WorkerConfig(base_model=str(folder), adapters_dir=str(folder / "no-adapters"), log_level="ERROR")
    # 64 photos of 12 MP are 768 M pixels and several seconds of decoding: over the default per-job
    # budgets, which an operator serving such jobs raises the same way (FASTBACKEND_MAX_JOB_PIXELS, ...).
    big = {"max_job_pixels": 2**30, "max_worker_pixels": 2**30, "max_decode_ms": 600_000}
    config = replace(config, **{**big, **settings})
    object.__setattr__(config, "max_payload_bytes", 10**10)  # no HTTP body in process (module docstring)
    worker = Worker(GENERATED.functions).setup(config)
    logging.getLogger("fastbackend").setLevel(logging.ERROR)  # measure the work, not the terminal
    return worker


def naive_pixels(processor: Any, encoded: list[str]) -> np.ndarray:
    from PIL import Image

    rows = [
        processor(Image.open(io.BytesIO(base64.b64decode(e))).convert("RGB"), return_tensors="np")["pixel_values"]
        for e in encoded
    ]
    return np.concatenate(rows).astype(np.float32)


def timed(fn: Any, *args: Any) -> float:
    start = time.perf_counter()
    result = fn(*args)
    elapsed = time.perf_counter() - start
    assert not isinstance(result, dict) or result.get("status") == "success", result
    return elapsed


def predict_rows(
    model: str,
    megapixels: int,
    batches: list[int],
    repeats: int,
    variants: dict[str, dict[str, Any]] | None = None,
    **settings: Any,
) -> tuple[list, dict]:
    """Handler vs forward-only vs naive per batch; `variants` (label: settings) share the two baselines."""
    from transformers import AutoImageProcessor

    variants = variants or {"": {}}
    workers = {label: make_worker(model, **settings, **extra) for label, extra in variants.items()}
    host = next(iter(workers.values())).host
    processor = AutoImageProcessor.from_pretrained(model_dir(model), backend="pil")
    rows, record = [], {}
    for batch in batches:
        encoded = encoded_photos(megapixels, batch)
        job = {"id": "bench", "input": {"images": encoded}}
        pixels = naive_pixels(processor, encoded)
        samples: dict[str, list[float]] = {"forward": [], "naive": [], **{label: [] for label in workers}}
        for _ in range(repeats):
            for label, worker in workers.items():
                samples[label].append(timed(worker.handle, job))
            samples["forward"].append(timed(host.run_batch, {"pixel_values": pixels}, None))
            samples["naive"].append(
                timed(lambda e: host.run_batch({"pixel_values": naive_pixels(processor, e)}, None), encoded)
            )
        f, n = median_ms(samples["forward"]), median_ms(samples["naive"])
        for label in workers:
            h = median_ms(samples[label])
            photos = f"{megapixels} MP" + (f", {label}" if label else "")
            rows.append((model, photos, batch, h, round(batch / h * 1000, 1), f, n, f"{h / f:.2f}x", f"{h / n:.2f}x"))
            record[f"{model}/{megapixels}mp/batch_{batch}" + (f"/{label}" if label else "")] = {
                "handler_ms": h,
                "forward_ms": f,
                "naive_ms": n,
                "handler_over_forward": round(h / f, 3),
                "handler_over_naive": round(h / n, 3),
            }
    return rows, record


def decode_rows(model: str, megapixel_classes: list[int], count: int, repeats: int) -> tuple[list, dict]:
    """Decode + preprocess alone: the worker exact and with fast decode, vs the naive loop, per size."""
    from transformers import AutoImageProcessor

    workers = {"exact": make_worker(model), "fast": make_worker(model, fast_decode="on")}
    processor = AutoImageProcessor.from_pretrained(model_dir(model), backend="pil")
    rows, record = [], {}
    for mp in megapixel_classes:
        encoded = encoded_photos(mp, count)
        job = {"id": "bench", "input": {"op": "preprocess", "images": encoded}}
        samples: dict[str, list[float]] = {"exact": [], "fast": [], "naive": []}
        for _ in range(repeats):
            for name, worker in workers.items():
                samples[name].append(timed(worker.handle, job))
            samples["naive"].append(timed(naive_pixels, processor, encoded))
        e, f, n = (median_ms(samples[k]) for k in ("exact", "fast", "naive"))
        two = encoded[:2]  # the two photographs
        reference = naive_pixels(processor, two)
        worst, labels = {}, {}
        for name, worker in workers.items():
            answer = worker.handle({"id": "p", "input": {"op": "preprocess", "images": two, "return_pixels": True}})
            worst[name] = float(np.abs(np.array(answer["pixels"], dtype=np.float32) - reference).max())
            predictions = worker.handle({"id": "p", "input": {"images": two}})["predictions"]
            labels[name] = [p["label"] for p in predictions]
        same = sum(a == b for a, b in zip(labels["exact"], labels["fast"]))
        rows.append(
            (
                f"{mp} MP",
                count,
                n,
                e,
                f"{n / e:.2f}x",
                f"{worst['exact']:.1e}",
                f,
                f"{n / f:.2f}x",
                f"{worst['fast']:.3f}",
                f"{same}/{len(two)}",
            )
        )
        record[f"{model}/{mp}mp/decode_preprocess_{count}"] = {
            "naive_ms": n,
            "exact_ms": e,
            "fast_ms": f,
            "exact_speedup": round(n / e, 3),
            "fast_speedup": round(n / f, 3),
            "exact_max_abs_diff": worst["exact"],
            "fast_max_abs_diff": worst["fast"],
            "fast_same_top1": same,
        }
    return rows, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="batches 1 and 8, 8 images per decode run, one repeat")
    args = parser.parse_args()
    batches, count, repeats = ([1, 8], 8, 1) if args.quick else ([1, 8, 64], 64, args.repeats)
    rows, record = [], {}
    for model in MODELS:
        r, rec = predict_rows(model, 1, batches, repeats)
        rows += r
        record.update(rec)
    decodes = {"exact decode": {}, "fast decode": {"fast_decode": "on"}}  # one forward and one naive for both
    r, rec = predict_rows("vit-base", 12, batches[-1:], repeats, decodes)
    rows += r
    record.update(rec)
    decode, rec = decode_rows("vit-base", [1, 3, 12], count, repeats)
    record.update(rec)
    print(
        table(
            f"Real-size predict jobs (JPEG photos), median of {repeats}",
            PREDICT_COLUMNS,
            rows,
        )
    )
    print()
    print(
        table(
            f"Decode + preprocess to ViT-base's 224x224, median of {repeats}",
            [
                "photos",
                "images",
                "naive ms",
                "exact ms",
                "exact speed-up",
                "exact max |diff|",
                "fast ms",
                "fast speed-up",
                "fast max |diff|",
                "fast top-1 = exact",
            ],
            decode,
        )
    )
    print(f"saved {save('realsize', record)}")


if __name__ == "__main__":
    main()
