"""The operations a job can ask for. Each takes the set-up Worker and a validated request."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from worker import __version__
from worker.budgets import Deadline, check_job_pixels
from worker.decoding import decode_base64, decode_opened, open_image
from worker.errors import WorkerError
from worker.progress import report
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
from worker.sources import read_sources
from worker.telemetry import ms_since

if TYPE_CHECKING:  # annotations only: runtime.py imports this module, never the reverse at run time
    from worker.runtime import Worker


def _with_field(error: WorkerError, field_name: str) -> WorkerError:
    return WorkerError(error.code, f"{field_name}: {error.message}", field=field_name)


def decode_and_preprocess(
    worker: Worker, request: PredictInput | PreprocessInput
) -> tuple[np.ndarray, dict[str, float]]:
    """Decode and preprocess the request's images; returns pixels (N, C, H, W) and timings.

    Every header is checked (caps, then the job's pixel budget, then the worker's) before any
    image is decoded; each image is then decoded and resized to the model's input at once, so
    at most one full-size image per job is alive at a time.
    """
    config, host = worker.config, worker.host
    encoded = image_list(request)
    names = ["images"] if isinstance(request.images, str) else [f"images[{i}]" for i in range(len(encoded))]
    start = time.perf_counter()
    sources = read_sources(encoded, names, config)  # url/path items -> bytes; base64 strings as they are
    blobs, total = [], 0
    # A lone image stays open from its header check to its decode (opened once). A job's several
    # images are closed after the check and reopened one by one: an open image holds what its
    # header carried (an ICC profile inflates to up to 1 MB), so a job never holds all of them.
    lone = None
    for name, source in zip(names, sources):
        try:
            blob = decode_base64(source) if isinstance(source, str) else source
            image, header = open_image(blob, limits=config)
        except WorkerError as exc:
            raise _with_field(exc, name) from None
        total += header.pixels
        if len(sources) == 1:
            lone = (image, header)
        else:
            image.close()
        blobs.append(blob)
    check_job_pixels(total, config.max_job_pixels)
    decode_s, preprocess_s = time.perf_counter() - start, 0.0
    preprocess_config = host.preprocess_config
    channels = getattr(preprocess_config, "num_channels", 3)
    deadline = Deadline(config.max_decode_ms)
    pool = worker.image_pool

    def one(i: int) -> tuple[np.ndarray, float, float]:
        start = time.perf_counter()
        try:
            # The PIL image goes to the transform as it is: an array copy of a 12 MP photo costs ~0.1 s.
            opened = lone or open_image(blobs[i], limits=config)
            image = decode_opened(opened, channels=channels, reduction=host.reduction)
        except WorkerError as exc:
            raise _with_field(exc, names[i]) from None
        blobs[i] = b""
        decoded = time.perf_counter()
        row = host.fns.to_pixel_values([image], host.transform, preprocess_config)
        return row, decoded - start, time.perf_counter() - decoded

    done: list[tuple[np.ndarray, float, float]] = []
    with worker.pixel_budget.reserve(total):
        # Each image is decoded and preprocessed on the worker's image pool: Pillow and the resize
        # release the GIL, so a job's images use every core (one full-size image per thread alive).
        # One image runs inline (no thread hop).
        futures = [pool.submit(one, i) for i in range(len(blobs))] if pool and len(blobs) > 1 else None
        try:
            for i in range(len(blobs)):
                done.append(futures[i].result() if futures else one(i))
                report(i + 1, "decode")
                deadline.check(i + 1, len(blobs))
        finally:
            for future in futures or []:  # a failed image fails the job: drop the work not started yet
                future.cancel()
    pixels = np.concatenate([row for row, _, _ in done]) if len(done) > 1 else done[0][0]
    # Per-image times summed (the work, not the wall time: images overlap; total_ms is the wall).
    decode_s += sum(d for _, d, _ in done)
    preprocess_s += sum(p for _, _, p in done)
    return pixels, {"decode_ms": round(decode_s * 1000, 3), "preprocess_ms": round(preprocess_s * 1000, 3)}


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
            "max_jpeg_scans": c.max_jpeg_scans,
            "max_job_pixels": c.max_job_pixels,
            "max_worker_pixels": c.max_worker_pixels,
            "max_decode_ms": c.max_decode_ms,
            "max_batch": c.max_batch,
            "max_output_bytes": c.max_output_bytes,
        },
        "concurrency": {
            "concurrency": c.concurrency,
            "max_jobs_in_flight": c.jobs_in_flight_limit,
            "max_queued_images": c.max_queued_images,
        },
        "decoding": {**worker.pixel_budget.state(), **worker.source_bytes.state()},
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
