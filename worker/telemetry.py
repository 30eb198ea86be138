"""What the worker tells the outside: structured logs (one JSON object per line on stdout),
in-process metrics, and the progress of long jobs (see "Progress" below)."""

from __future__ import annotations

import contextlib
import contextvars
import io
import json
import logging
import os
import re
import sys
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator
from typing import Any

LOGGER_NAME = "fastbackend"
_LOGGER = logging.getLogger(LOGGER_NAME)  # looked up once: getLogger takes logging's module lock
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_LATENCY_WINDOW = 2048  # per op: enough for stable p99, bounded memory


_STATM_FD: int | None = None  # /proc/self/statm, opened by rss_mb and kept
_STATM_LOCK = threading.Lock()


def _forget_statm() -> None:
    """In a forked child: the inherited fd reads the parent's memory; the child opens its own."""
    global _STATM_FD
    if _STATM_FD is not None:
        os.close(_STATM_FD)
        _STATM_FD = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_statm)


def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux /proc; 0.0 where unavailable).

    Read once per job: the file stays open and is re-read with pread (a few microseconds, where
    opening it each time cost 30-100 µs).
    """
    global _STATM_FD
    try:
        if _STATM_FD is None:
            with _STATM_LOCK:
                if _STATM_FD is None:
                    _STATM_FD = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        pages = int(os.pread(_STATM_FD, 128, 0).split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return round(pages * _PAGE_BYTES / 2**20, 1)


def cuda_memory_mb() -> dict[str, float] | None:
    """Allocated and reserved CUDA memory in MiB, or None without a GPU (torch not imported here)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return {
        "cuda_allocated_mb": round(torch.cuda.memory_allocated() / 2**20, 1),
        "cuda_reserved_mb": round(torch.cuda.memory_reserved() / 2**20, 1),
    }


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": round(record.created, 3),
            "level": record.levelname,
            "logger": LOGGER_NAME,
            "event": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


def configure_logging(level: str) -> logging.Logger:
    """Our own logger with its own handler: `import runpod` reconfiguring the root logger
    (it sets INFO and adds a handler) cannot duplicate or reformat our lines."""
    logger = _LOGGER
    logger.setLevel(level)
    logger.propagate = False
    if not any(getattr(h, "_fastbackend", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(_JsonFormatter())
        handler._fastbackend = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    return logger


# The RunPod SDK prints `LEVEL  | [job id | ]message` lines (and a banner) to stdout.
_SDK_LINE = re.compile(r"^(NOTSET|TRACE|DEBUG|INFO|WARN|ERROR|TIP)\s*\|\s?(.*)$", re.DOTALL)
# --test_input's answer, printed by the SDK's local runner: kept verbatim, as `invoke`,
# `check --run` and `docker run IMAGE` read it (the one line README allows that is not ours).
_TEST_INPUT_RESULT = ("Job result: ", " failed with error: ")
_SDK_LEVELS = {"DEBUG": "INFO", "INFO": "INFO", "WARNING": "WARN", "ERROR": "ERROR"}
_LINE_CHARS = 2000  # a routed line is clipped: the SDK's own cap (4,096) still allows content


class JsonLines(io.TextIOBase):
    """The worker's stdout: JSON lines pass through, any other line is wrapped as one of ours.

    Routes what the RunPod SDK prints (its logger writes plain text to stdout) through our log
    format, so stdout is one JSON object per line, without patching the SDK.
    """

    def __init__(self, stream: io.TextIOBase) -> None:
        self.stream = stream
        self._pending = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            lines = (self._pending + text).split("\n")
            self._pending = lines.pop()
            for line in lines:
                self.stream.write(self._route(line) + "\n")
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    @staticmethod
    def _route(line: str) -> str:
        stripped = line.strip()
        if stripped.startswith("{") and stripped.endswith("}"):
            try:
                json.loads(stripped)
                return line
            except ValueError:
                pass
        match = _SDK_LINE.match(stripped)
        level, message = (match.group(1), match.group(2)) if match else ("INFO", stripped)
        if any(mark in message for mark in _TEST_INPUT_RESULT):
            return line
        if len(message) > _LINE_CHARS:
            message = message[:_LINE_CHARS] + "...(clipped)"
        entry = {"time": round(time.time(), 3), "level": "WARNING" if level == "WARN" else level}
        entry.update({"logger": "runpod", "event": message})
        return json.dumps(entry, separators=(",", ":"))


def route_sdk_logs(level: str) -> None:
    """Before runpod.serverless.start: the SDK's log level from ours, never below INFO (at DEBUG it
    logs every job's input and output), and stdout routed through JsonLines."""
    from runpod.serverless.modules.rp_logger import RunPodLogger

    if not isinstance(sys.stdout, JsonLines):
        sys.stdout = JsonLines(sys.stdout)
    RunPodLogger().set_level(_SDK_LEVELS.get(level, "INFO"))


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event with structured fields. Never pass image data or secrets."""
    logger = _LOGGER
    if logger.isEnabledFor(level):
        if "rss_mb" not in fields:  # not setdefault: that reads /proc even when the caller has it
            fields["rss_mb"] = rss_mb()
        cuda = cuda_memory_mb()
        if cuda:
            fields.update(cuda)
        logger.log(level, event, extra={"fields": fields})


def ms_since(start: float) -> float:
    """Milliseconds since `start` (a time.perf_counter() value), rounded to microseconds."""
    return round((time.perf_counter() - start) * 1000, 3)


def percentile(sorted_values: list[float], q: float) -> float:
    """The nearest-rank `q` quantile (0..1) of already sorted values, rounded to 3 decimals; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return round(sorted_values[index], 3)


class Metrics:
    """Counters and latency windows for the `metrics` op; thread-safe."""

    def __init__(self) -> None:
        self.started = time.time()
        self._lock = threading.Lock()
        self._jobs: Counter[tuple[str, str]] = Counter()
        self._errors: Counter[str] = Counter()
        self._latency: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=_LATENCY_WINDOW))

    def observe(self, op: str, status: str, duration_ms: float, code: str | None = None) -> None:
        with self._lock:
            self._jobs[(op, status)] += 1
            self._latency[op].append(duration_ms)
            if code:
                self._errors[code] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            jobs: dict[str, dict[str, int]] = defaultdict(dict)
            for (op, status), n in sorted(self._jobs.items()):
                jobs[op][status] = n
            latency = {}
            for op, window in sorted(self._latency.items()):
                values = sorted(window)
                latency[op] = {
                    "count": len(values),
                    "p50_ms": percentile(values, 0.5),
                    "p95_ms": percentile(values, 0.95),
                    "p99_ms": percentile(values, 0.99),
                }
            return {
                "uptime_s": round(time.time() - self.started, 3),
                "jobs": dict(jobs),
                "jobs_total": sum(self._jobs.values()),
                "errors": dict(sorted(self._errors.items())),
                "latency": latency,
                "memory": {"rss_mb": rss_mb(), **(cuda_memory_mb() or {})},
            }


# -- Progress ---------------------------------------------------------------
# Progress of long jobs: `{"done": n, "total": N, "stage": ...}` sent with the SDK's
# `runpod.serverless.progress_update`, so `/status` shows the job IN_PROGRESS with that output.
#
# Only in production mode (RUNPOD_WEBHOOK_POST_OUTPUT set: the local API and --test_input have
# nowhere to post it), only for jobs of at least FASTBACKEND_PROGRESS_MIN_IMAGES images, and at
# most one update per FASTBACKEND_PROGRESS_INTERVAL_MS (each update costs the SDK a thread and an
# HTTP post). The job's own thread reports through `report()`; jobs without a reporter (the
# common case) pay one context-variable lookup per image.

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
