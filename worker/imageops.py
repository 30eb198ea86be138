"""The ops that run a job's images through the served model: predict, embed, preprocess.

One job, top to bottom, as transformers' pipelines split it (`preprocess` / `_forward` /
`postprocess`):

    headers     every image's header checked (caps, pixel budgets) and the answer's size estimated,
                before any pixel is decoded
    preprocess  each image decoded upright and turned into model inputs by the task (worker/tasks)
    forward     the job's inputs through the micro-batcher (worker/batching.py), which runs the
                served model's forward (worker/models.py) on the batch it joins
    postprocess the job's rows of the outputs -> the task's answer

`ImageOps` holds what these steps share (set up once by the Worker, worker/runtime.py) and calls
only modules below it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from worker.batching import MicroBatcher
from worker.config import WorkerConfig
from worker.decoding import decode_base64, decode_opened, open_image
from worker.errors import WorkerError
from worker.limits import Deadline, PixelBudget, check_job_pixels, check_output_estimate
from worker.models import ModelHost
from worker.schema import EmbedInput, ImagesInput, PredictInput, PreprocessInput, image_list
from worker.sources import read_sources
from worker.tasks import Arrays, ImageMeta, embeddings
from worker.telemetry import ms_since, report

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


ShapeGroups = list[tuple[list[int], Arrays]]


def shape_groups(rows: list[Arrays]) -> ShapeGroups:
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


class ImageOps:
    """predict, embed and preprocess over the served model (`host`), its task and the shared budgets."""

    def __init__(
        self,
        config: WorkerConfig,
        host: ModelHost,
        pixel_budget: PixelBudget,
        image_pool: ThreadPoolExecutor | None,
        batcher: MicroBatcher | None,
    ) -> None:
        self.config, self.host, self.pixel_budget = config, host, pixel_budget
        self.image_pool, self.batcher = image_pool, batcher

    # -- the ops -------------------------------------------------------------
    def predict(self, request: PredictInput) -> dict[str, Any]:
        """The served task's predict: preprocess (per image), forward (micro-batched), postprocess."""
        task = self.host.task
        self.host.validate(request.adapter)

        def estimate(sizes: list[tuple[int, int]]) -> None:
            check_output_estimate(task.output_bytes(request, sizes), self.config.max_output_bytes, task.output_advice)

        inputs, metas, timings = self.model_inputs(request, estimate)
        start = time.perf_counter()
        with self.host.serving(request.adapter) as (key, group):  # loads here, in this job's thread
            loaded = time.perf_counter()
            outputs = self._outputs(inputs, key, "predict", group)
            forwarded = time.perf_counter()
            # The answer through the same loaded version, still held (zero-shot runs its text tower here):
            # the task sees peft's key for it, which changes when the folder is rewritten.
            loaded_request = request if key == request.adapter else request.model_copy(update={"adapter": key})
            answer = task.postprocess(outputs, metas, loaded_request)
        timings["adapter_ms"] = round((loaded - start) * 1000, 3)
        timings["forward_ms"] = round((forwarded - loaded) * 1000, 3)
        return {"adapter": request.adapter, **answer, "timings": timings}

    def embed(self, request: EmbedInput) -> dict[str, Any]:
        """One vector per image from the served model (worker/tasks/embeddings.py: the encodings); with
        `texts` (a CLIP-family task's embed request) one per text too, as `text_embeddings`."""
        task = self.host.task
        self.host.validate(request.adapter)
        texts = list(getattr(request, "texts", None) or [])

        def estimate(sizes: list[tuple[int, int]]) -> None:
            size = embeddings.answer_bytes(len(sizes) + len(texts), task.dimensions, request.encoding_format)
            check_output_estimate(size, self.config.max_output_bytes, "use encoding_format base64")

        if request.images is None:
            estimate([])
            inputs, timings = None, {}
        else:
            inputs, _, timings = self.model_inputs(request, estimate)
        start = time.perf_counter()
        answer: dict[str, Any] = {}
        with self.host.serving(request.adapter) as (key, _):  # embed batches per adapter (a group of its own)
            loaded = time.perf_counter()
            if inputs is not None:
                answer = embeddings.encode(self._outputs(inputs, key, "embed")["embeddings"], request, task.pooling)
            if texts:
                encoded = embeddings.encode(self.host.embed_texts(texts, key), request, task.pooling)
                answer = {**encoded, **answer, "text_embeddings": encoded["embeddings"]}
                if inputs is None:
                    del answer["embeddings"]
        timings["adapter_ms"] = round((loaded - start) * 1000, 3)
        timings["forward_ms"] = ms_since(loaded)
        return {"adapter": request.adapter, **answer, "timings": timings}

    def preprocess(self, request: PreprocessInput) -> dict[str, Any]:
        """The model inputs the served task makes of the images, summarised (or whole: return_pixels)."""
        groups, _, timings = self.model_inputs(request)
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

    # -- the steps -----------------------------------------------------------
    def _outputs(self, groups: ShapeGroups, key: str | None, op: str, group: str | None = None) -> Arrays:
        """This job's outputs for `op` through a loaded adapter key, in image order: per input shape
        (one for most tasks), in a micro-batch with other jobs of the same mix `group` when jobs
        overlap, else the served model's forward alone."""

        def run(inputs: Arrays) -> Arrays:
            if self.batcher is None:
                return self.host.run_batch(inputs, key, op)
            return self.batcher.outputs(inputs, key, op, group)

        if len(groups) == 1:
            return run(groups[0][1])
        count = sum(len(indices) for indices, _ in groups)
        outputs: Arrays = {}
        for indices, inputs in groups:
            for name, array in run(inputs).items():
                if name not in outputs:
                    outputs[name] = np.empty((count, *array.shape[1:]), array.dtype)
                outputs[name][indices] = array
        return outputs

    def model_inputs(
        self,
        request: ImagesInput | PreprocessInput,
        headers_read: Callable[[list[tuple[int, int]]], None] | None = None,
    ) -> tuple[ShapeGroups, list[ImageMeta], dict[str, float]]:
        """Decode and preprocess the request's images through the task's `preprocess`; returns the
        model inputs (`shape_groups`: named batch-first arrays per input shape, one group when every
        image preprocesses to one shape), each image's metadata, and timings.

        Every header is checked (caps, then the job's pixel budget, then the worker's) before any
        image is decoded; `headers_read` then sees each image's (height, width) from its header (EXIF
        orientation not applied) and may refuse the job before any decode. Each image is then decoded
        and preprocessed at once, so at most one full-size image per job is alive at a time.
        """
        config, host, task = self.config, self.host, self.host.task
        encoded = image_list(request)
        names = ["images"] if isinstance(request.images, str) else [f"images[{i}]" for i in range(len(encoded))]
        start = time.perf_counter()
        # url/path items -> bytes (worker/sources.py); a job of base64 strings never reaches it
        sources = encoded if all(isinstance(item, str) for item in encoded) else read_sources(encoded, names, config)
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
        pool = self.image_pool

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
        with self.pixel_budget.reserve(total):
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
