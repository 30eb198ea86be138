"""The operations a job can ask for. Each takes the worker state and a validated request."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from worker import __version__
from worker.batching import MicroBatcher
from worker.config import WorkerConfig
from worker.errors import ErrorCode, WorkerError
from worker.images import decode_bytes, decode_image
from worker.models import ModelHost
from worker.progress import report
from worker.schema import EchoInput, PredictInput, PreprocessInput, image_list
from worker.sources import read_sources
from worker.telemetry import Metrics


@dataclass
class WorkerState:
    config: WorkerConfig
    host: ModelHost
    metrics: Metrics
    ready: bool = False
    startup_ms: dict[str, float] = field(default_factory=dict)
    batcher: MicroBatcher | None = None  # set when concurrency > 1

    def forward(self, pixels: np.ndarray, adapter: str | None) -> np.ndarray:
        """One job's logits: through the micro-batcher when jobs run concurrently."""
        return (self.batcher or self.host).forward(pixels, adapter)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def decode_and_preprocess(
    state: WorkerState, request: PredictInput | PreprocessInput
) -> tuple[np.ndarray, dict[str, float]]:
    """Decode (caps first) and preprocess the request's images; returns pixels and timings."""
    config, host = state.config, state.host
    encoded = image_list(request)
    if len(encoded) > config.max_batch:
        raise WorkerError(
            ErrorCode.BATCH_TOO_LARGE,
            f"{len(encoded)} images in one job; the cap is {config.max_batch}",
            field="images",
        )
    start = time.perf_counter()
    fields = [f"images[{i}]" for i in range(len(encoded))] if isinstance(request.images, list) else ["images"]
    sources = read_sources(encoded, fields, config)  # url/path items -> bytes; base64 strings as they are
    caps = (config.max_image_bytes, config.max_image_side, config.max_image_pixels)
    images = []
    for i, (source, name) in enumerate(zip(sources, fields)):
        images.append(
            decode_image(source, name, *caps) if isinstance(source, str) else decode_bytes(source, name, *caps)
        )
        report(i + 1, "decode")
    decode_ms = _ms(start)
    start = time.perf_counter()
    pixels = host.fns.to_pixel_values(images, host.transform, host.preprocess_config)
    return pixels, {"decode_ms": decode_ms, "preprocess_ms": _ms(start)}


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
            "max_batch": c.max_batch,
            "max_output_bytes": c.max_output_bytes,
        },
        "concurrency": {
            "concurrency": c.concurrency,
            "max_jobs_in_flight": c.jobs_in_flight_limit,
            "max_queued_images": c.max_queued_images,
        },
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
