"""The operations a job can ask for. Each takes the set-up Worker and a validated request."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from worker import __version__
from worker.errors import ErrorCode, WorkerError
from worker.images import decode_image
from worker.schema import (
    AdaptersInput,
    EchoInput,
    HealthInput,
    MetricsInput,
    PingInput,
    PredictInput,
    PreprocessInput,
    image_list,
)
from worker.telemetry import ms_since

if TYPE_CHECKING:  # annotations only: runtime.py imports this module, never the reverse at run time
    from worker.runtime import Worker


def decode_and_preprocess(
    worker: Worker, request: PredictInput | PreprocessInput
) -> tuple[np.ndarray, dict[str, float]]:
    """Decode (caps first) and preprocess the request's images; returns pixels and timings."""
    config, host = worker.config, worker.host
    encoded = image_list(request)
    if len(encoded) > config.max_batch:
        raise WorkerError(
            ErrorCode.BATCH_TOO_LARGE,
            f"{len(encoded)} images in one job; the cap is {config.max_batch}",
            field="images",
        )
    field_name = "images" if isinstance(request.images, str) else "images[{}]"

    def one(i: int, encoded_image: str) -> tuple[np.ndarray, float, float]:
        start = time.perf_counter()
        image = decode_image(
            encoded_image, field_name.format(i), config.max_image_bytes, config.max_image_side, config.max_image_pixels
        )
        decoded = time.perf_counter()
        row = host.fns.to_pixel_values([image], host.transform, host.preprocess_config)
        return row, decoded - start, time.perf_counter() - decoded

    # Each image is decoded and preprocessed on the worker's image pool: Pillow and the resize
    # release the GIL, so a job's images use every core. One image runs inline (no thread hop).
    pool = worker.image_pool
    if pool is None or len(encoded) < 2:
        done = [one(i, e) for i, e in enumerate(encoded)]
    else:
        futures = [pool.submit(one, i, e) for i, e in enumerate(encoded)]
        try:
            done = [f.result() for f in futures]
        finally:
            for f in futures:  # a failed image fails the job: drop the work not started yet
                f.cancel()
    if not done:
        pixels = host.fns.to_pixel_values([], host.transform, host.preprocess_config)
    else:
        pixels = np.concatenate([row for row, _, _ in done]) if len(done) > 1 else done[0][0]
    # Per-image times summed (the work, not the wall time: images overlap; total_ms is the wall).
    return pixels, {
        "decode_ms": round(sum(d for _, d, _ in done) * 1000, 3),
        "preprocess_ms": round(sum(p for _, _, p in done) * 1000, 3),
    }


def predict(worker: Worker, request: PredictInput) -> dict[str, Any]:
    worker.host.validate(request.adapter)
    pixels, timings = decode_and_preprocess(worker, request)
    start = time.perf_counter()
    logits = worker.forward(pixels, request.adapter)
    timings["forward_ms"] = ms_since(start)
    predictions = worker.host.fns.top_k(logits, request.top_k, worker.host.labels)
    if request.return_logits:
        for prediction, row in zip(predictions, logits):
            prediction["logits"] = [float(v) for v in row]
    return {"adapter": request.adapter, "predictions": predictions, "timings": timings}


def preprocess(worker: Worker, request: PreprocessInput) -> dict[str, Any]:
    pixels, timings = decode_and_preprocess(worker, request)
    result: dict[str, Any] = {
        "shape": list(pixels.shape),
        "dtype": str(pixels.dtype),
        "min": float(pixels.min()),
        "max": float(pixels.max()),
        "mean": float(pixels.mean()),
        "timings": timings,
    }
    if request.return_pixels:
        result["pixels"] = pixels.tolist()
    return result


def adapters(worker: Worker, request: Any) -> dict[str, Any]:
    loaded = set(worker.host.cache_state()["loaded"])
    return {
        "adapters": [
            {"name": e.name, "task": e.task, "description": e.description, "loaded": e.name in loaded}
            for e in worker.host.registry.values()
        ],
        "merged": worker.host.merged or None,
        "skipped": [{"name": s.name, "path": s.path, "reason": s.reason} for s in worker.host.skipped],
    }


def health(worker: Worker, request: Any) -> dict[str, Any]:
    c = worker.config
    return {
        "ready": worker.ready,
        "version": __version__,
        "base_model": c.base_model,
        "base_fingerprint": worker.host.fingerprint or None,
        "device": worker.host.device() if worker.ready else c.device,
        "dtype": c.dtype,
        "startup_ms": worker.startup_ms,
        "adapter_cache": worker.host.cache_state(),
        "limits": {
            "max_payload_bytes": c.max_payload_bytes,
            "max_image_bytes": c.max_image_bytes,
            "max_image_side": c.max_image_side,
            "max_image_pixels": c.max_image_pixels,
            "max_batch": c.max_batch,
            "max_output_bytes": c.max_output_bytes,
        },
        "concurrency": {
            "concurrency": c.concurrency,
            "max_jobs_in_flight": c.jobs_in_flight_limit,
            "max_queued_images": c.max_queued_images,
        },
        "batching": {
            "enabled": worker.batcher is not None,
            "max_batch_images": c.max_batch,
            "max_batch_wait_ms": c.max_batch_wait_ms,
        },
    }


def metrics(worker: Worker, request: Any) -> dict[str, Any]:
    batching = worker.batcher.stats() if worker.batcher else None
    return {**worker.metrics.snapshot(), "adapter_cache": worker.host.cache_state(), "batching": batching}


def ping(worker: Worker, request: Any) -> dict[str, Any]:
    return {"pong": True, "ready": worker.ready}


def echo(worker: Worker, request: EchoInput) -> dict[str, Any]:
    return {"payload": request.payload}


# request model (worker/schema.py, which names the ops) -> (function, needs the model loaded)
OPERATIONS: dict[type, tuple[Callable[[Worker, Any], dict[str, Any]], bool]] = {
    PredictInput: (predict, True),
    PreprocessInput: (preprocess, True),
    AdaptersInput: (adapters, True),
    HealthInput: (health, False),
    MetricsInput: (metrics, False),
    PingInput: (ping, False),
    EchoInput: (echo, False),
}
