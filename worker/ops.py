"""The operations a job can ask for. Each takes the set-up Worker and a validated request."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from worker import __version__
from worker.adapters import scan_adapter_folders
from worker.budgets import Deadline, check_job_pixels
from worker.decoding import decode_base64, decode_opened, open_image
from worker.errors import WorkerError
from worker.limits import check_output_estimate
from worker.progress import report
from worker.schema import EchoInput, EmbedInput, ImagesInput, PredictInput, PreprocessInput, image_list
from worker.sources import read_sources
from worker.tasks import Arrays, ImageMeta, embeddings
from worker.telemetry import ms_since

if TYPE_CHECKING:  # annotations only: runtime.py imports this module, never the reverse at run time
    from worker.runtime import Worker


# A job's images are decoded on the image pool only when they hold this many pixels together (by
# their headers). Measured on 2 cores, preprocess of 64 PNGs: pool/inline 1.24 at 64 x 32x32,
# 1.20 at 64 x 64x64 (262 K), 0.88 at 64 x 128x128 (1 M) (issue 24, item 13).
PARALLEL_DECODE_MIN_PIXELS = 1 << 19


def _with_field(error: WorkerError, field_name: str) -> WorkerError:
    return WorkerError(error.code, f"{field_name}: {error.message}", field=field_name)


def _upright(header_size: tuple[int, int], decoded: tuple[int, int]) -> tuple[int, int]:
    """(height, width) of the upright original: the header's (width, height), turned where EXIF
    orientation turned the decoded image (fast decode may have reduced it, never changed its aspect)."""
    width, height = header_size
    turned = (width > height) != (decoded[0] > decoded[1]) and width != height
    return (width, height) if turned else (height, width)


def shape_groups(rows: list[Arrays]) -> list[tuple[list[int], Arrays]]:
    """Per-image inputs stacked into one batch per input shape, in first-seen order, each with its
    images' indices: images a task resizes to their own shape (a detector's) are never padded together."""
    groups: dict[tuple, list[int]] = {}
    for index, row in enumerate(rows):
        groups.setdefault(tuple((name, array.shape[1:]) for name, array in row.items()), []).append(index)
    stacked = []
    for indices in groups.values():
        one = rows[indices[0]]
        batch = one if len(indices) == 1 else {k: np.concatenate([rows[i][k] for i in indices]) for k in one}
        stacked.append((indices, batch))
    return stacked


def forward_groups(
    worker: Worker, groups: list[tuple[list[int], Arrays]], key: str | None, op: str, mix: str | None = None
) -> Arrays:
    """One forward per shape group (one in all for a job of one shape), outputs back in image order."""
    if len(groups) == 1:
        return worker.forward(groups[0][1], key, op, mix)
    count = sum(len(indices) for indices, _ in groups)
    outputs: Arrays = {}
    for indices, inputs in groups:
        for name, array in worker.forward(inputs, key, op, mix).items():
            if name not in outputs:
                outputs[name] = np.empty((count, *array.shape[1:]), array.dtype)
            outputs[name][indices] = array
    return outputs


def decode_and_preprocess(
    worker: Worker,
    request: ImagesInput | PreprocessInput,
    headers_read: Callable[[list[tuple[int, int]]], None] | None = None,
) -> tuple[list[tuple[list[int], Arrays]], list[ImageMeta], dict[str, float]]:
    """Decode and preprocess the request's images through the task's `preprocess`; returns the
    model inputs (`shape_groups`: named batch-first arrays per input shape, one group when every
    image preprocesses to one shape), each image's metadata, and timings.

    Every header is checked (caps, then the job's pixel budget, then the worker's) before any
    image is decoded; `headers_read` then sees each image's (height, width) from its header (EXIF
    orientation not applied) and may refuse the job before any decode. Each image is then decoded
    and preprocessed at once, so at most one full-size image per job is alive at a time.
    """
    config, host = worker.config, worker.host
    task = host.task
    encoded = image_list(request)
    names = ["images"] if isinstance(request.images, str) else [f"images[{i}]" for i in range(len(encoded))]
    start = time.perf_counter()
    sources = read_sources(encoded, names, config)  # url/path items -> bytes; base64 strings as they are
    blobs, sizes, total = [], [], 0
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
        sizes.append((header.width, header.height))
        if len(sources) == 1:
            lone = (image, header)
        else:
            image.close()
        blobs.append(blob)
    check_job_pixels(total, config.max_job_pixels)
    if headers_read is not None:
        headers_read([(h, w) for w, h in sizes])
    decode_s, preprocess_s = time.perf_counter() - start, 0.0
    channels = task.channels
    deadline = Deadline(config.max_decode_ms)
    pool = worker.image_pool

    def one(i: int) -> tuple[Arrays, ImageMeta, float, float]:
        start = time.perf_counter()
        try:
            # The PIL image goes to the transform as it is: an array copy of a 12 MP photo costs ~0.1 s.
            opened = lone or open_image(blobs[i], limits=config)
            image = decode_opened(opened, channels=channels, reduction=host.reduction)
        except WorkerError as exc:
            raise _with_field(exc, names[i]) from None
        blobs[i] = b""
        decoded = time.perf_counter()
        inputs, meta = task.preprocess(image, _upright(sizes[i], image.size))
        return inputs, meta, decoded - start, time.perf_counter() - decoded

    done: list[tuple[Arrays, ImageMeta, float, float]] = []
    with worker.pixel_budget.reserve(total):
        # Each image is decoded and preprocessed on the worker's image pool: Pillow and the resize
        # release the GIL, so a job's images use every core (one full-size image per thread alive).
        # One image, or a job of thumbnails, runs inline: below PARALLEL_DECODE_MIN_PIXELS the thread
        # hops cost more than the second core gives back.
        parallel = pool is not None and len(blobs) > 1 and total >= PARALLEL_DECODE_MIN_PIXELS
        futures = [pool.submit(one, i) for i in range(len(blobs))] if parallel else None
        try:
            for i in range(len(blobs)):
                done.append(futures[i].result() if futures else one(i))
                report(i + 1, "decode")
                deadline.check(i + 1, len(blobs))
        finally:
            for future in futures or []:  # a failed image fails the job: drop the work not started yet
                future.cancel()
    inputs = shape_groups([row for row, *_ in done])
    # Per-image times summed (the work, not the wall time: images overlap; total_ms is the wall).
    decode_s += sum(d for *_, d, _ in done)
    preprocess_s += sum(p for *_, p in done)
    timings = {"decode_ms": round(decode_s * 1000, 3), "preprocess_ms": round(preprocess_s * 1000, 3)}
    return inputs, [meta for _, meta, _, _ in done], timings


def predict(worker: Worker, request: PredictInput) -> dict[str, Any]:
    """The served task's predict: preprocess (per image), forward (micro-batched), postprocess."""
    host, limit = worker.host, worker.config.max_output_bytes
    task = host.task
    host.validate(request.adapter)

    def estimate(sizes: list[tuple[int, int]]) -> None:
        check_output_estimate(task.output_bytes(request, sizes), limit, task.output_advice)

    inputs, metas, timings = decode_and_preprocess(worker, request, estimate)
    start = time.perf_counter()
    with host.serving(request.adapter) as (key, group):  # loads here, in this job's thread
        loaded = time.perf_counter()
        outputs = forward_groups(worker, inputs, key, "predict", group)
        forwarded = time.perf_counter()
        # The answer through the same loaded version, still held (zero-shot runs its text tower here):
        # the task sees peft's key for it, which changes when the folder is rewritten.
        loaded_request = request if key == request.adapter else request.model_copy(update={"adapter": key})
        answer = task.postprocess(outputs, metas, loaded_request)
    timings["adapter_ms"] = round((loaded - start) * 1000, 3)
    timings["forward_ms"] = round((forwarded - loaded) * 1000, 3)
    return {"adapter": request.adapter, **answer, "timings": timings}


def embed(worker: Worker, request: EmbedInput) -> dict[str, Any]:
    """One vector per image from the served model (worker/tasks/embeddings.py: the encodings)."""
    host, limit = worker.host, worker.config.max_output_bytes
    task = host.task
    host.validate(request.adapter)

    def estimate(sizes: list[tuple[int, int]]) -> None:
        size = embeddings.answer_bytes(len(sizes), task.dimensions, request.encoding_format)
        check_output_estimate(size, limit, "use encoding_format base64")

    inputs, _, timings = decode_and_preprocess(worker, request, estimate)
    start = time.perf_counter()
    with host.serving(request.adapter) as (key, _):  # embed batches per adapter (a group of its own)
        loaded = time.perf_counter()
        outputs = forward_groups(worker, inputs, key, "embed")
    timings["adapter_ms"] = round((loaded - start) * 1000, 3)
    timings["forward_ms"] = ms_since(loaded)
    return {
        "adapter": request.adapter,
        **embeddings.encode(outputs["embeddings"], request, task.pooling),
        "timings": timings,
    }


def preprocess(worker: Worker, request: PreprocessInput) -> dict[str, Any]:
    groups, _, timings = decode_and_preprocess(worker, request)
    arrays = [inputs["pixel_values"] for _, inputs in groups]
    pixels = np.concatenate([a.ravel() for a in arrays]) if len(arrays) > 1 else arrays[0]
    result: dict[str, Any] = {
        # one shape for the job; a shape per group where images preprocess to their own (a detector's)
        "shape": list(arrays[0].shape) if len(arrays) == 1 else [list(a.shape) for a in arrays],
        "dtype": str(pixels.dtype),
        "min": float(pixels.min()),
        "max": float(pixels.max()),
        "mean": float(pixels.mean()),
        "timings": timings,
    }
    if request.return_pixels:
        result["pixels"] = arrays[0].tolist() if len(arrays) == 1 else [a.tolist() for a in arrays]
    return result


def adapters(worker: Worker, request: Any) -> dict[str, Any]:
    """A full scan of the adapters folder now (the one op that reads every folder)."""
    host = worker.host
    loaded = set(host.cache_state()["loaded"])
    if host.merged:
        served, skipped = [{"name": host.merged, "task": "", "description": "merged", "loaded": True}], []
    else:
        registry, found_skipped = scan_adapter_folders(Path(host.config.adapters_dir), host.fns, host.config.base_model)
        refused = {s.name: s for s in host.refusals() if s.name in registry}
        served = [
            {"name": e.name, "task": e.task, "description": e.description, "loaded": e.name in loaded}
            for e in registry.values()
            if e.name not in refused
        ]
        skipped = [*found_skipped, *refused.values()]
    return {
        "adapters": served,
        "merged": host.merged or None,
        "skipped": [{"name": s.name, "path": s.path, "reason": s.reason} for s in skipped],
    }


def health(worker: Worker, request: Any) -> dict[str, Any]:
    c = worker.config
    return {
        "ready": worker.ready,
        "version": __version__,
        "base_model": c.base_model,
        "task": worker.host.task.describe() if worker.host.task else {"name": c.task or None},
        "base_fingerprint": worker.host.fingerprint or None,
        "device": worker.host.device() if worker.ready else c.device,
        "dtype": c.dtype,
        "startup_ms": worker.startup_ms,
        "adapter_cache": worker.host.cache_state(),
        "adapter_mixing": worker.host.mixing_state() if worker.ready else None,
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


# op (worker/schema.py names them) -> (function, needs the model loaded)
OPERATIONS: dict[str, tuple[Callable[[Worker, Any], dict[str, Any]], bool]] = {
    "predict": (predict, True),
    "embed": (embed, True),
    "preprocess": (preprocess, True),
    "adapters": (adapters, True),
    "health": (health, False),
    "metrics": (metrics, False),
    "ping": (ping, False),
    "echo": (echo, False),
}
