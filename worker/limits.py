"""Every cap a job must fit, in one place: RunPod's size limits (checked cheaply, before decoding
and without re-serialising input), the decode budgets of a job and of the worker, and the
worker's admission of jobs (see "Budgets" below)."""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

from worker.batching import off_cpu
from worker.config import ENV_VARS
from worker.errors import ErrorCode, WorkerError

MAX_DEPTH = 32
_MAX_INT_BITS = 13_000  # about 3,900 decimal digits: under Python's 4,300-digit str()/int() limit


def payload_size(value: Any, limit: int) -> int:
    """An upper-bound estimate of `value`'s JSON size in bytes, stopping once past `limit`.

    Walks the structure instead of serialising it: a 25 MB base64 string costs a length
    lookup, not a copy. Non-ASCII text counts 4 bytes a character (its worst case).

    Raises:
        WorkerError: INVALID_INPUT when nesting is deeper than MAX_DEPTH, or for what JSON cannot carry
            back (NaN, Infinity) or Python cannot print (an integer of thousands of digits).
    """
    size = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack and size <= limit:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise WorkerError(ErrorCode.INVALID_INPUT, f"input nested deeper than {MAX_DEPTH} levels", field="input")
        if isinstance(item, str):
            size += len(item) * (1 if item.isascii() else 4) + 2
        elif isinstance(item, dict):
            size += 2 + len(item)
            for key, child in item.items():
                stack.append((key, depth + 1))
                stack.append((child, depth + 1))
        elif isinstance(item, (list, tuple)):
            size += 2 + len(item)
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, bool) or item is None:
            size += 5
        elif isinstance(item, int):
            if item.bit_length() > _MAX_INT_BITS:  # str() of it would raise ValueError: not a number we take
                raise WorkerError(ErrorCode.INVALID_INPUT, "input holds an integer over 4,000 digits", field="input")
            size += 24 if item.bit_length() < 64 else item.bit_length() * 30103 // 100000 + 2
        elif isinstance(item, float) and not math.isfinite(item):
            raise WorkerError(ErrorCode.INVALID_INPUT, f"input holds {item}, which JSON cannot carry", field="input")
        else:
            size += 24
    return size


def check_payload(value: Any, limit: int) -> None:
    """Refuse a job input over the configured limit (default: RunPod's 10 MB /run limit)."""
    size = payload_size(value, limit)
    if size > limit:
        raise WorkerError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"input is over {limit:,} bytes (RunPod accepts 10 MB on /run, 20 MB on /runsync); "
            "send fewer or smaller images per job",
            field="input",
        )


def check_batch(images: int, limit: int) -> None:
    """Refuse a job with more images than the cap: the request's own limit, checked before admission,
    so a client is told to split the job rather than to retry."""
    if images > limit:
        raise WorkerError(ErrorCode.BATCH_TOO_LARGE, f"{images} images in one job; the cap is {limit}", field="images")


def _jsonable(value: Any) -> Any:
    # Finite floats only: NaN/Infinity are not JSON and RunPod cannot post them.
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"non-finite float {value}")
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


_STRICT_JSON = json.JSONEncoder(allow_nan=False, default=_jsonable, separators=(",", ":"))


def encoded_size(body: dict[str, Any]) -> int:
    """Serialise once, strictly: raises TypeError/ValueError for anything that is not JSON."""
    return len(_STRICT_JSON.encode(body))


def check_output(body: dict[str, Any], limit: int) -> None:
    """Refuse a result RunPod could not post: not JSON (INTERNAL) or too large."""
    try:
        size = encoded_size(body)
    except (TypeError, ValueError) as exc:
        raise WorkerError(ErrorCode.INTERNAL, f"result is not JSON-serialisable ({exc})") from None
    if size > limit:
        raise WorkerError(
            ErrorCode.OUTPUT_TOO_LARGE,
            f"result is {size:,} bytes, over the {limit:,} byte limit (RunPod fails to post results "
            "near 20 MB); send fewer images per job, or ask for less (top_k, return_logits, return_pixels)",
        )


def check_output_estimate(estimate: int, limit: int, advice: str) -> None:
    """Refuse a job whose answer would pass the limit, from the task's estimate, before any work."""
    if estimate > limit:
        raise WorkerError(
            ErrorCode.OUTPUT_TOO_LARGE,
            f"the answer would be about {estimate:,} bytes, over the {limit:,} byte limit (RunPod fails to "
            f"post results near 20 MB); send fewer images per job, or {advice}",
        )


# -- Budgets ----------------------------------------------------------------
# Per-job and per-worker decode budgets: pixels (from the headers, before decoding) and time.
#
# A job's images are decoded one at a time and each is resized to the model's input at once, so
# memory follows one image per decoding thread. What a job may ask for is still capped, because
# decoding costs CPU time in proportion to pixels: the job's pixels together
# (`max_job_pixels`), the pixels of every job in flight in this worker (`max_worker_pixels`), and
# the wall-clock time spent decoding (`max_decode_ms`).


def check_job_pixels(pixels: int, limit: int) -> None:
    """Refuse a job whose images, by their headers, hold more than `limit` pixels together."""
    if pixels > limit:
        raise WorkerError(
            ErrorCode.IMAGE_TOO_LARGE,
            f"the job's images hold {pixels:,} pixels together, over the {limit:,} pixel budget per job "
            f"({ENV_VARS['max_job_pixels']}); send fewer or smaller images per job",
            field="images",
        )


class Room:
    """A worker-wide amount the jobs in flight hold (pixels, bytes, jobs and images). Over its cap a
    job waits for room up to `wait_s`, without its CPU slot, then is refused RATE_LIMITED: on RunPod
    a job already taken from the queue and refused is a FAILED job, so a valid one waits instead."""

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        self._room = threading.Condition()

    def _fits(self, amount: int) -> bool:  # each room's own
        raise NotImplementedError

    def _count(self, amount: int, sign: int) -> None:  # each room's own
        raise NotImplementedError

    def _busy(self, amount: int) -> str:  # each room's own: the RATE_LIMITED message
        raise NotImplementedError

    def _enter(self, amount: int) -> bool:
        if not self._fits(amount):
            return False
        self._count(amount, 1)
        return True

    def take(self, amount: int) -> None:
        """Hold `amount` until `give_back`. Raises WorkerError RATE_LIMITED after `wait_s` without room."""
        with self._room:
            admitted = self._enter(amount)
        if not admitted and self.wait_s > 0:
            with off_cpu(), self._room:  # the slot is taken back after the lock is let go
                admitted = self._room.wait_for(lambda: self._enter(amount), timeout=self.wait_s)
        if not admitted:
            raise WorkerError(ErrorCode.RATE_LIMITED, self._busy(amount))

    def give_back(self, amount: int) -> None:
        with self._room:
            self._count(amount, -1)
            self._room.notify_all()

    @contextlib.contextmanager
    def holding(self, amount: int) -> Iterator[None]:
        """`take` for the duration of the block."""
        self.take(amount)
        try:
            yield
        finally:
            self.give_back(amount)


class PixelBudget(Room):
    """Pixels reserved by the jobs decoding in this worker (a job on its own always fits: the config
    refuses a per-worker budget under the per-job one)."""

    def __init__(self, limit: int, wait_s: float = 0.0) -> None:
        super().__init__(wait_s)
        self.limit, self.in_use = limit, 0

    def _fits(self, pixels: int) -> bool:
        return self.in_use + pixels <= self.limit

    def _count(self, pixels: int, sign: int) -> None:
        self.in_use += sign * pixels

    def _busy(self, pixels: int) -> str:
        return (
            f"worker busy decoding ({self.in_use:,} of {self.limit:,} pixels in flight, this job "
            f"needs {pixels:,}; waited {self.wait_s:g} s, {ENV_VARS['max_admission_wait_ms']}); retry shortly"
        )

    def reserve(self, pixels: int) -> contextlib.AbstractContextManager[None]:
        """Hold `pixels` for the duration of the block (RATE_LIMITED after `wait_s` without room)."""
        return self.holding(pixels)

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


class SourceBytes(Room):
    """Bytes of url/path images the jobs in this worker may hold (base64 is bounded by the payload
    limit). A job reserves, before its first read, the most its items can bring (each at most the
    image byte cap, all at most the job's budget), all at once: a job never holds some and waits
    for more, so jobs cannot wait on each other."""

    def __init__(self, limit: int, wait_s: float = 0.0) -> None:
        super().__init__(wait_s)
        self.limit, self.in_use = limit, 0

    def _fits(self, size: int) -> bool:
        return self.in_use + size <= self.limit

    def _count(self, size: int, sign: int) -> None:
        self.in_use += sign * size

    def _busy(self, size: int) -> str:
        return (
            f"worker busy reading images ({self.in_use:,} of {self.limit:,} url/path bytes reserved by the "
            f"jobs in flight, {ENV_VARS['max_worker_source_bytes']}; this job needs {size:,}; waited "
            f"{self.wait_s:g} s); retry shortly"
        )

    def reserve(self, size: int) -> None:
        """Hold `size` bytes until give_back. Raises WorkerError RATE_LIMITED after `wait_s`."""
        self.take(size)

    def state(self) -> dict[str, int]:
        return {"source_bytes_in_flight": self.in_use, "max_worker_source_bytes": self.limit}


class Admission(Room):
    """Caps jobs in flight and images queued in this worker."""

    def __init__(self, max_jobs: int, max_images: int, wait_s: float = 0.0) -> None:
        super().__init__(wait_s)
        self.max_jobs, self.max_images = max_jobs, max_images
        self.jobs = self.images = 0

    def _fits(self, images: int) -> bool:
        return self.jobs < self.max_jobs and self.images + images <= self.max_images

    def _count(self, images: int, sign: int) -> None:
        self.jobs += sign
        self.images += sign * images

    def _busy(self, images: int) -> str:
        return (
            f"worker busy ({self.jobs} jobs, {self.images} images in flight; caps {self.max_jobs} and "
            f"{self.max_images}; waited {self.wait_s:g} s, {ENV_VARS['max_admission_wait_ms']}); retry shortly"
        )

    def admit(self, images: int) -> contextlib.AbstractContextManager[None]:
        """Hold one job and its `images` for the duration of the block (RATE_LIMITED after `wait_s`)."""
        return self.holding(images)
