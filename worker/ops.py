"""The operations a job can ask for. Each takes the worker state and a validated request."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from worker import __version__
from worker.batching import MicroBatcher
from worker.budgets import Deadline, PixelBudget, check_job_pixels
from worker.config import WorkerConfig
from worker.decoding import decode_base64, decode_image, read_header
from worker.errors import WorkerError
from worker.models import ModelHost
from worker.schema import EchoInput, PredictInput, PreprocessInput, image_list
from worker.telemetry import Metrics


@dataclass
class WorkerState:
    config: WorkerConfig
    host: ModelHost
    metrics: Metrics
    ready: bool = False
    startup_ms: dict[str, float] = field(default_factory=dict)
    batcher: MicroBatcher | None = None  # set when concurrency > 1
    pixel_budget: PixelBudget = field(init=False)

    def __post_init__(self) -> None:
        self.pixel_budget = PixelBudget(self.config.max_worker_pixels)

    def forward(self, pixels: np.ndarray, adapter: str | None) -> np.ndarray:
        """One job's logits: through the micro-batcher when jobs run concurrently."""
        return (self.batcher or self.host).forward(pixels, adapter)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def _with_field(error: WorkerError, field_name: str) -> WorkerError:
    return WorkerError(error.code, f"{field_name}: {error.message}", field=field_name)


def decode_and_preprocess(
    state: WorkerState, request: PredictInput | PreprocessInput
) -> tuple[np.ndarray, dict[str, float]]:
    """Decode and preprocess the request's images; returns pixels (N, C, H, W) and timings.

    Every header is checked (caps, then the job's pixel budget, then the worker's) before any
    image is decoded; each image is then decoded and resized to the model's input at once, so
    at most one full-size image per job is alive at a time.
    """
    config, host = state.config, state.host
    encoded = image_list(request)
    names = ["images"] if isinstance(request.images, str) else [f"images[{i}]" for i in range(len(encoded))]
    start = time.perf_counter()
    blobs, total = [], 0
    for name, text in zip(names, encoded):
        try:
            blob = decode_base64(text)
            total += read_header(blob, limits=config).pixels
        except WorkerError as exc:
            raise _with_field(exc, name) from None
        blobs.append(blob)
    check_job_pixels(total, config.max_job_pixels)
    decode_s, preprocess_s = time.perf_counter() - start, 0.0
    channels = getattr(host.preprocess_config, "num_channels", 3)
    deadline = Deadline(config.max_decode_ms)
    rows = []
    with state.pixel_budget.reserve(total):
        for i, (name, blob) in enumerate(zip(names, blobs)):
            start = time.perf_counter()
            try:
                image = np.asarray(decode_image(blob, channels=channels, limits=config))
            except WorkerError as exc:
                raise _with_field(exc, name) from None
            blobs[i] = b""
            decoded = time.perf_counter()
            rows.append(host.fns.to_pixel_values([image], host.transform, host.preprocess_config))
            del image
            decode_s += decoded - start
            preprocess_s += time.perf_counter() - decoded
            deadline.check(i + 1, len(blobs))
    pixels = np.concatenate(rows) if len(rows) > 1 else rows[0]
    return pixels, {"decode_ms": round(decode_s * 1000, 3), "preprocess_ms": round(preprocess_s * 1000, 3)}


def predict(state: WorkerState, request: PredictInput) -> dict[str, Any]:
    state.host.validate(request.adapter)
    pixels, timings = decode_and_preprocess(state, request)
    start = time.perf_counter()
    logits = state.forward(pixels, request.adapter)
    timings["forward_ms"] = _ms(start)
    predictions = state.host.fns.top_k(logits, request.top_k, state.host.labels)
    if request.return_logits:
        for prediction, row in zip(predictions, logits):
            prediction["logits"] = [float(v) for v in row]
    return {"adapter": request.adapter, "predictions": predictions, "timings": timings}


def preprocess(state: WorkerState, request: PreprocessInput) -> dict[str, Any]:
    pixels, timings = decode_and_preprocess(state, request)
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


def adapters(state: WorkerState, request: Any) -> dict[str, Any]:
    loaded = set(state.host.cache_state()["loaded"])
    return {
        "adapters": [
            {"name": e.name, "task": e.task, "description": e.description, "loaded": e.name in loaded}
            for e in state.host.registry.values()
        ],
        "merged": state.host.merged or None,
    }


def health(state: WorkerState, request: Any) -> dict[str, Any]:
    c = state.config
    return {
        "ready": state.ready,
        "version": __version__,
        "base_model": c.base_model,
        "base_fingerprint": state.host.fingerprint or None,
        "device": state.host.device() if state.ready else c.device,
        "dtype": c.dtype,
        "startup_ms": state.startup_ms,
        "adapter_cache": state.host.cache_state(),
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
        "decoding": state.pixel_budget.state(),
        "batching": {
            "enabled": state.batcher is not None,
            "max_batch_images": c.max_batch,
            "max_batch_wait_ms": c.max_batch_wait_ms,
        },
    }


def metrics(state: WorkerState, request: Any) -> dict[str, Any]:
    batching = state.batcher.stats() if state.batcher else None
    return {**state.metrics.snapshot(), "adapter_cache": state.host.cache_state(), "batching": batching}


def ping(state: WorkerState, request: Any) -> dict[str, Any]:
    return {"pong": True, "ready": state.ready}


def echo(state: WorkerState, request: EchoInput) -> dict[str, Any]:
    return {"payload": request.payload}


# op -> (function, needs the model loaded)
OPERATIONS: dict[str, tuple[Callable[[WorkerState, Any], dict[str, Any]], bool]] = {
    "predict": (predict, True),
    "preprocess": (preprocess, True),
    "adapters": (adapters, True),
    "health": (health, False),
    "metrics": (metrics, False),
    "ping": (ping, False),
    "echo": (echo, False),
}
