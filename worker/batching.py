"""Micro-batching: concurrent predict jobs for the same adapter share one forward pass.

Jobs submit their preprocessed pixels and wait on a future. One batcher thread takes the
oldest request, then gathers more for the *same* adapter until `max_images` images are
collected or `max_wait_ms` has passed since the first, runs one forward, and hands each job
exactly its rows back, in order. Requests for other adapters wait for a later batch: one
forward never mixes adapters. A cancelled request is dropped before its batch runs.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from worker.telemetry import percentile


@dataclass
class _Request:
    adapter: str | None
    pixels: np.ndarray
    submitted: float = field(default_factory=time.perf_counter)
    future: Future = field(default_factory=Future)


class MicroBatcher:
    """Runs `forward(pixels, adapter) -> logits` over batches gathered from concurrent jobs."""

    def __init__(
        self, forward: Callable[[np.ndarray, str | None], np.ndarray], max_images: int, max_wait_ms: float
    ) -> None:
        self._forward = forward
        self.max_images = max_images
        self.max_wait_s = max_wait_ms / 1000
        self._inbox: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._waiting: deque[_Request] = deque()  # taken from the inbox, for a later batch
        self._lock = threading.Lock()
        self._batch_sizes: Counter[int] = Counter()
        self._queue_wait_ms: deque[float] = deque(maxlen=2048)
        self._thread = threading.Thread(target=self._run, name="fastbackend-batcher", daemon=True)
        self._thread.start()

    def forward(self, pixels: np.ndarray, adapter: str | None) -> np.ndarray:
        """Blocking: submit and wait for this job's logits (raises what the forward raised)."""
        return self.submit(pixels, adapter).result()

    def submit(self, pixels: np.ndarray, adapter: str | None) -> Future:
        request = _Request(adapter, pixels)
        self._inbox.put(request)
        return request.future

    def _next(self, timeout: float | None) -> _Request | None:
        try:
            return self._inbox.get(timeout=timeout) if timeout is None or timeout > 0 else self._inbox.get_nowait()
        except queue.Empty:
            return None

    def _gather(self) -> list[_Request]:
        first = self._waiting.popleft() if self._waiting else self._next(None)
        batch, images = [first], len(first.pixels)
        deadline = first.submitted + self.max_wait_s
        # Requests already set aside for this adapter join first, in arrival order.
        for request in list(self._waiting):
            if request.adapter == first.adapter and images + len(request.pixels) <= self.max_images:
                self._waiting.remove(request)
                batch.append(request)
                images += len(request.pixels)
        while images < self.max_images:
            request = self._next(deadline - time.perf_counter())
            if request is None:
                break
            if request.adapter == first.adapter and images + len(request.pixels) <= self.max_images:
                batch.append(request)
                images += len(request.pixels)
            else:
                self._waiting.append(request)
                if request.adapter == first.adapter:
                    break  # the batch is full for it
        return batch

    def _run(self) -> None:
        while True:
            batch = [r for r in self._gather() if r.future.set_running_or_notify_cancel()]
            if not batch:
                continue
            started = time.perf_counter()
            try:
                logits = self._forward(np.concatenate([r.pixels for r in batch]), batch[0].adapter)
            except BaseException as exc:  # the model failed: every job of this batch learns why
                for request in batch:
                    request.future.set_exception(exc)
                continue
            with self._lock:
                self._batch_sizes[len(logits)] += 1
                self._queue_wait_ms.extend((started - r.submitted) * 1000 for r in batch)
            offset = 0
            for request in batch:
                request.future.set_result(logits[offset : offset + len(request.pixels)])
                offset += len(request.pixels)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            waits = sorted(self._queue_wait_ms)
        return {
            "batch_size_histogram": {str(k): v for k, v in sorted(self._batch_sizes.items())},
            "forwards": sum(self._batch_sizes.values()),
            "queue_wait_ms": {
                "p50": percentile(waits, 0.5),
                "p95": percentile(waits, 0.95),
                "max": percentile(waits, 1),
            },
        }
