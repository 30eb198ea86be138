"""Progress of long jobs: `{"done": n, "total": N, "stage": ...}` sent with the SDK's
`runpod.serverless.progress_update`, so `/status` shows the job IN_PROGRESS with that output.

Only in production mode (RUNPOD_WEBHOOK_POST_OUTPUT set: the local API and --test_input have
nowhere to post it), only for jobs of at least FASTBACKEND_PROGRESS_MIN_IMAGES images, and at
most one update per FASTBACKEND_PROGRESS_INTERVAL_MS (each update costs the SDK a thread and an
HTTP post). The job's own thread reports through `report()`; jobs without a reporter (the
common case) pay one context-variable lookup per image.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator
from typing import Any

Sender = Callable[[dict[str, Any], dict[str, Any]], None]  # (job, progress), as runpod's progress_update

_current: contextvars.ContextVar[ProgressReporter | None] = contextvars.ContextVar("fastbackend_progress", default=None)


class ProgressReporter:
    """Sends a job's progress at a bounded rate; the first update goes out at once."""

    def __init__(
        self,
        job: dict[str, Any],
        total: int,
        send: Sender,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.job, self.total, self.send, self.interval_s, self.clock = job, total, send, interval_s, clock
        self._last: float | None = None
        self.sent = 0

    def __call__(self, done: int, stage: str) -> None:
        now = self.clock()
        if self._last is not None and now - self._last < self.interval_s:
            return
        self._last = now
        self.sent += 1
        try:
            self.send(self.job, {"done": done, "total": self.total, "stage": stage})
        except Exception:  # progress is best effort: it never fails the job
            pass


def runpod_sender() -> Sender:
    """The SDK's progress_update (imported only where it is used: production mode)."""
    from runpod.serverless import progress_update

    return progress_update


@contextlib.contextmanager
def reporting(reporter: ProgressReporter | None) -> Iterator[None]:
    """Make `reporter` the current job's, for `report()` calls in the ops below it."""
    token = _current.set(reporter)
    try:
        yield
    finally:
        _current.reset(token)


def report(done: int, stage: str) -> None:
    """Progress of the current job (no-op unless its handler set a reporter)."""
    reporter = _current.get()
    if reporter is not None:
        reporter(done, stage)


def reporter_for(
    job: Any, images: int, *, production: bool, min_images: int, interval_ms: int, send: Sender | None = None
) -> ProgressReporter | None:
    """A reporter for this job, or None: not production mode, progress off (min_images 0), or a
    job smaller than `min_images`."""
    if not production or min_images <= 0 or images < min_images or not isinstance(job, dict) or "id" not in job:
        return None
    return ProgressReporter(job, images, send or runpod_sender(), interval_ms / 1000)
