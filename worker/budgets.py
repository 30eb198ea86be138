"""Per-job and per-worker decode budgets: pixels (from the headers, before decoding) and time.

A job's images are decoded one at a time and each is resized to the model's input at once, so
memory follows one image per decoding thread. What a job may ask for is still capped, because
decoding costs CPU time in proportion to pixels: the job's pixels together
(`max_job_pixels`), the pixels of every job in flight in this worker (`max_worker_pixels`), and
the wall-clock time spent decoding (`max_decode_ms`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from worker.batching import off_cpu
from worker.config import ENV_VARS
from worker.errors import ErrorCode, WorkerError


def check_job_pixels(pixels: int, limit: int) -> None:
    """Refuse a job whose images, by their headers, hold more than `limit` pixels together."""
    if pixels > limit:
        raise WorkerError(
            ErrorCode.IMAGE_TOO_LARGE,
            f"the job's images hold {pixels:,} pixels together, over the {limit:,} pixel budget per job "
            f"({ENV_VARS['max_job_pixels']}); send fewer or smaller images per job",
            field="images",
        )


class PixelBudget:
    """Pixels reserved by the jobs decoding in this worker; over the budget, a job waits for room up
    to `wait_s` (without its CPU slot), then is refused."""

    def __init__(self, limit: int, wait_s: float = 0.0) -> None:
        self.limit, self.wait_s = limit, wait_s
        self.in_use = 0
        self._room = threading.Condition()

    def _enter(self, pixels: int) -> bool:
        if self.in_use + pixels > self.limit:
            return False
        self.in_use += pixels
        return True

    @contextlib.contextmanager
    def reserve(self, pixels: int) -> Iterator[None]:
        """Hold `pixels` for the duration of the block.

        Raises:
            WorkerError: RATE_LIMITED when the jobs in flight hold too much for longer than `wait_s`
                (a job on its own always fits: the config refuses a per-worker budget under the
                per-job one).
        """
        with self._room:
            admitted = self._enter(pixels)
        if not admitted and self.wait_s > 0:
            with off_cpu(), self._room:
                admitted = self._room.wait_for(lambda: self._enter(pixels), timeout=self.wait_s)
        if not admitted:
            raise WorkerError(
                ErrorCode.RATE_LIMITED,
                f"worker busy decoding ({self.in_use:,} of {self.limit:,} pixels in flight, this job "
                f"needs {pixels:,}; waited {self.wait_s:g} s, {ENV_VARS['max_admission_wait_ms']}); retry shortly",
            )
        try:
            yield
        finally:
            with self._room:
                self.in_use -= pixels
                self._room.notify_all()

    def state(self) -> dict[str, int]:
        return {"pixels_in_flight": self.in_use, "max_worker_pixels": self.limit}


class Deadline:
    """The wall-clock decode budget of one job, checked after each image."""

    def __init__(self, budget_ms: int) -> None:
        self.budget_ms = budget_ms
        self.end = time.perf_counter() + budget_ms / 1000

    def check(self, done: int, total: int) -> None:
        """Raises WorkerError IMAGE_TOO_LARGE once the budget is spent with images left to decode."""
        if done < total and time.perf_counter() > self.end:
            raise WorkerError(
                ErrorCode.IMAGE_TOO_LARGE,
                f"decoding took over the {self.budget_ms:,} ms budget per job ({ENV_VARS['max_decode_ms']}) "
                f"after {done} of {total} images; send fewer or smaller images per job",
                field="images",
            )


class SourceBytes:
    """Bytes of url/path images the jobs in this worker may hold (base64 is bounded by the payload
    limit). A job reserves, before its first read, the most its items can bring (each at most the
    image byte cap, all at most the job's budget), all at once: a job never holds some and waits
    for more, so jobs cannot wait on each other. Over the budget it waits for room up to `wait_s`
    (without its CPU slot), then is refused."""

    def __init__(self, limit: int, wait_s: float = 0.0) -> None:
        self.limit, self.wait_s = limit, wait_s
        self.in_use = 0
        self._room = threading.Condition()

    def _enter(self, size: int) -> bool:
        if self.in_use + size > self.limit:
            return False
        self.in_use += size
        return True

    def reserve(self, size: int) -> None:
        """Hold `size` bytes until give_back. Raises WorkerError RATE_LIMITED after `wait_s`."""
        with self._room:
            admitted = self._enter(size)
        if not admitted and self.wait_s > 0:
            with off_cpu(), self._room:
                admitted = self._room.wait_for(lambda: self._enter(size), timeout=self.wait_s)
        if not admitted:
            raise WorkerError(
                ErrorCode.RATE_LIMITED,
                f"worker busy reading images ({self.in_use:,} of {self.limit:,} url/path bytes reserved by the "
                f"jobs in flight, {ENV_VARS['max_worker_source_bytes']}; this job needs {size:,}; waited "
                f"{self.wait_s:g} s); retry shortly",
            )

    def give_back(self, size: int) -> None:
        with self._room:
            self.in_use -= size
            self._room.notify_all()

    def state(self) -> dict[str, int]:
        return {"source_bytes_in_flight": self.in_use, "max_worker_source_bytes": self.limit}
