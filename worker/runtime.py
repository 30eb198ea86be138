"""The worker: explicit one-time setup, then `handle(job)`, which reads top-down.

    setup:  config -> load base -> preload adapters -> warm-up forward   (before start())
    handle: payload size -> parse input -> batch size -> admit -> op -> check output -> answer

The image ops (predict, embed, preprocess) are worker/imageops.py's; the reports (health, metrics,
adapters, ping, echo) are the Worker's own methods below. `handle` never raises and always returns
a JSON-serialisable dict: a success body, or the one error shape of worker.errors (with
`refresh_worker` when the worker must be recycled).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError as FutureCancelled
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from worker import __version__
from worker.adapters import join_group, scan_adapter_folders
from worker.batching import MicroBatcher, Ticket
from worker.config import ConfigError, WorkerConfig, production_mode
from worker.contract import NotebookFunctions
from worker.errors import ErrorCode, WorkerError, classify, error_response
from worker.imageops import ImageOps
from worker.limits import Admission, PixelBudget, SourceBytes, check_batch, check_output, check_payload
from worker.models import ModelHost
from worker.schema import OPS, EchoInput, parse_input, requested_op
from worker.sources import holding_sources
from worker.startup import BackgroundImport, process_age_ms, settle_gc
from worker.telemetry import (
    Metrics,
    configure_logging,
    log_event,
    ms_since,
    reporter_for,
    reporting,
    route_sdk_logs,
    rss_mb,
)


def _usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, which containers set), else the machine's."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def _image_count(raw: Any) -> int:
    images = raw.get("images") if isinstance(raw, dict) else None
    return len(images) if isinstance(images, list) else int(images is not None)


def _has_sources(raw: Any) -> bool:
    """True when the (validated) input names an image by url or path rather than sending it."""
    images = raw.get("images") if isinstance(raw, dict) else None
    return any(isinstance(item, dict) for item in (images if isinstance(images, list) else [images]))


class Worker:
    """The serving side: config, admission, batching, metrics, and `handle`. The model itself
    (base, adapters, cache) is the ModelHost's. Holds no model until `setup()`; creating a
    Worker is cheap and has no side effects."""

    def __init__(self, functions: NotebookFunctions) -> None:
        self.functions = functions
        self.config: WorkerConfig | None = None  # set by setup()
        self.host: ModelHost | None = None  # set by setup(); loaded when `ready`
        self.metrics = Metrics()
        self.ready = False
        self.startup_ms: dict[str, float] = {}
        self.batcher: MicroBatcher | None = None  # when concurrency > 1
        self.admission = Admission(1, 1)
        self.pixel_budget = PixelBudget(0)  # decoded pixels of the jobs in flight; sized by setup()
        self.source_bytes = SourceBytes(0)  # url/path bytes held by the jobs in flight; sized by setup()
        self._executor: ThreadPoolExecutor | None = None
        self.image_pool: ThreadPoolExecutor | None = None  # decodes a job's images in parallel
        self.images: ImageOps | None = None  # predict, embed, preprocess; set by setup()
        self.production = False  # set by setup(): progress updates only where RunPod takes them
        # op (worker/schema.py names them) -> (what answers it, whether it needs the model loaded)
        self.operations: dict[str, tuple[Callable[[Any], dict[str, Any]], bool]] = {
            "predict": (lambda request: self.images.predict(request), True),
            "embed": (lambda request: self.images.embed(request), True),
            "preprocess": (lambda request: self.images.preprocess(request), True),
            "adapters": (self.adapters, True),
            "health": (self.health, False),
            "metrics": (self.metrics_report, False),
            "ping": (self.ping, False),
            "echo": (self.echo, False),
        }

    # -- setup ---------------------------------------------------------------
    def setup(self, config: WorkerConfig | None = None) -> Worker:
        """Config, base model, adapters, warm-up. Raises WorkerError/ConfigError on failure."""
        timings: dict[str, float] = {}
        setup_at = process_age_ms()  # interpreter start + imports, before any setup stage
        start = time.perf_counter()
        config = self.config = config or WorkerConfig.from_env()
        configure_logging(config.log_level)
        host = self.host = ModelHost(config, self.functions)
        wait_s = config.max_admission_wait_ms / 1000
        self.admission = Admission(config.jobs_in_flight_limit, config.max_queued_images, wait_s)
        self.pixel_budget = PixelBudget(config.max_worker_pixels, wait_s)
        self.source_bytes = SourceBytes(config.max_worker_source_bytes, wait_s)
        self.production = production_mode()
        timings["config_ms"] = ms_since(start)
        for stage, step in (
            ("load_base_ms", host.load_base),
            ("preload_adapters_ms", host.preload),
            ("compile_ms", host.compile if config.compile else None),
            ("warmup_ms", host.warm_up if config.warmup else None),
        ):
            if step is not None:
                start = time.perf_counter()
                step()
                timings[stage] = ms_since(start)
        threads = config.decode_threads or _usable_cpus()
        if threads > 1:
            self.image_pool = ThreadPoolExecutor(threads, thread_name_prefix="fastbackend-image")
        if config.concurrency > 1:
            self.batcher = MicroBatcher(host.run_batch, config.max_batch, config.max_batch_wait_ms, join=join_group)
            self._executor = ThreadPoolExecutor(config.concurrency, thread_name_prefix="fastbackend-job")
            # Start every job thread now: a thread started during a burst releases the GIL while
            # it starts, and its job could reach the batcher before the burst's others are counted.
            started = threading.Barrier(config.concurrency)
            for _ in range(config.concurrency):
                self._executor.submit(started.wait, 10)
        self.images = ImageOps(config, host, self.pixel_budget, self.image_pool, self.batcher)
        timings["total_ms"] = round(sum(timings.values()), 3)
        timings["process_to_setup_ms"] = setup_at
        timings["process_to_ready_ms"] = process_age_ms()
        self.startup_ms = timings
        self.ready = True
        log_event("setup.done", **timings, adapters=list(host.cache.entries), device=host.device())
        return self

    def setup_or_exit(self, sdk: BackgroundImport | None = None, config: WorkerConfig | None = None) -> Worker:
        """`setup()`, or exit non-zero with one clear line: no job is pulled by a broken worker.

        `sdk`: the SDK's import, started on a thread before setup; waited for here, its import and
        wait times and the process's age at the end go into `startup_ms` (the `health` op). Garbage
        collection paused for setup is settled here (`worker.startup.settle_gc`).
        """
        try:
            self.setup(config)
        except (WorkerError, ConfigError) as exc:
            code = (exc.code if isinstance(exc, WorkerError) else ErrorCode.CONFIG_INVALID).value
            log_event("setup.failed", logging.ERROR, code=code, error=str(exc))
            sys.exit(f"fastbackend: setup failed: {exc}")
        if sdk is not None:
            self.startup_ms.update(sdk.wait())
        route_sdk_logs(self.config.log_level)  # only a worker about to start routes the SDK's logs
        if not gc.isenabled():  # paused for setup (worker.startup.pause_gc): freeze what setup made, resume
            self.startup_ms.update(settle_gc())
        self.startup_ms["process_to_start_ms"] = process_age_ms()
        return self

    @property
    def concurrent(self) -> bool:
        """True when jobs overlap: RunPod then needs the async handler (sync ones run one at a time)."""
        return self._executor is not None

    def start_options(self) -> dict[str, Any]:
        """Extra keys for runpod.serverless.start: the concurrency from config."""
        concurrency = self.config.concurrency if self.config else 1
        return {"concurrency_modifier": lambda current: concurrency}

    # -- jobs ----------------------------------------------------------------
    async def handle_async(self, job: Any) -> dict[str, Any]:
        """`handle` off the event loop, so concurrent jobs overlap and meet in the micro-batcher.

        Cancellation (asyncio.CancelledError, how the SDK stops a job on RunPod's job-stop)
        propagates to the caller and drops the job's request from the batch it waits for;
        the other jobs of that batch are answered.
        """
        if self._executor is None or self.batcher is None:
            return self.handle(job)
        ticket = self.batcher.ticket()  # counted before its thread starts: a forming batch waits for it
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self.handle, job, ticket)
        finally:  # answered: nothing is left to drop; cancelled: its request leaves the batch
            ticket.drop()

    def handle(self, job: Any, ticket: Ticket | None = None) -> dict[str, Any]:
        """Answer one RunPod job. Never raises; the result is always a JSON-serialisable dict.
        `ticket`: the job's place in the micro-batcher, from handle_async."""
        with ticket.active() if ticket else contextlib.nullcontext():
            return self._handle(job)

    def _handle(self, job: Any) -> dict[str, Any]:
        started = time.perf_counter()
        job_id = job.get("id") if isinstance(job, dict) else None
        job_id = job_id if isinstance(job_id, str) else None
        op = "invalid"
        refresh = False
        try:
            config = self._require_setup()
            raw = job.get("input") if isinstance(job, dict) else None
            if raw is None:
                raise WorkerError(ErrorCode.INVALID_INPUT, "job has no `input`", field="input")
            if requested_op(raw) in OPS:
                op = requested_op(raw)
            check_payload(raw, config.max_payload_bytes)
            task = self.host.task
            request = parse_input(raw, task.request, task.embed_request) if task else parse_input(raw)
            run, needs_model = self.operations[request.op]
            if needs_model and not self.ready:
                raise WorkerError(ErrorCode.MODEL_NOT_READY, "the model is not loaded yet (setup has not finished)")
            images = _image_count(raw)
            check_batch(images, config.max_batch)
            progress = reporter_for(
                job,
                images,
                production=self.production,
                min_images=config.progress_min_images,
                interval_ms=config.progress_interval_ms,
            )
            # url/path items are read under the job's source budget (worker/sources.py); base64 needs none
            sources = holding_sources(config, self.source_bytes) if _has_sources(raw) else contextlib.nullcontext()
            with self.admission.admit(images), reporting(progress), sources:
                body = {"status": "success", "op": request.op, **run(request)}
            if isinstance(body.get("timings"), dict):
                body["timings"]["total_ms"] = ms_since(started)
            check_output(body, config.max_output_bytes)
            code = None
        except FutureCancelled:  # stopped by RunPod (handle_async): nobody will read an answer
            body, code = {"status": "cancelled", "job_id": job_id}, "CANCELLED"
        except Exception as exc:  # the one place any failure becomes an answer
            error = classify(exc)
            if error.code is ErrorCode.INTERNAL:
                logging.getLogger("fastbackend").exception("job.internal_error", extra={"fields": {"job_id": job_id}})
            body, code, refresh = error_response(error, job_id), error.code.value, error.fatal
        duration = ms_since(started)
        refresh = self._after_job(op, code, duration, job_id) or refresh
        if refresh:
            body["refresh_worker"] = True
        return body

    def _require_setup(self) -> WorkerConfig:
        if self.config is None or self.host is None:
            raise WorkerError(ErrorCode.MODEL_NOT_READY, "the worker has not been set up (call setup() before start())")
        return self.config

    def _after_job(self, op: str, code: str | None, duration_ms: float, job_id: str | None) -> bool:
        """Metrics, one log line, memory housekeeping. True when the worker should be recycled."""
        self.metrics.observe(op, "error" if code else "success", duration_ms, code)
        if self.config is None or self.host is None:
            return False
        self.host.release_cuda_cache()
        rss = rss_mb()
        over = bool(self.config.rss_ceiling_mb) and rss > self.config.rss_ceiling_mb
        log_event(
            "job.done",
            logging.WARNING if code else logging.INFO,
            job_id=job_id,
            op=op,
            duration_ms=duration_ms,
            code=code,
            rss_mb=rss,
            **({"refresh_worker": True} if over else {}),
        )
        return over

    # -- reports (ops that read the worker, not images) ------------------------
    def adapters(self, request: Any) -> dict[str, Any]:
        """A full scan of the adapters folder now (the one op that reads every folder)."""
        host = self.host
        loaded = set(host.cache_state()["loaded"])
        if host.merged:
            served, skipped = [{"name": host.merged, "task": "", "description": "merged", "loaded": True}], []
        else:
            registry, found_skipped = scan_adapter_folders(
                Path(host.config.adapters_dir), host.fns, host.config.base_model
            )
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

    def health(self, request: Any) -> dict[str, Any]:
        c, host = self.config, self.host
        return {
            "ready": self.ready,
            "version": __version__,
            "base_model": c.base_model,
            "task": host.task.describe() if host.task else {"name": c.task or None},
            "base_fingerprint": host.fingerprint or None,
            "device": host.device() if self.ready else c.device,
            "dtype": c.dtype,
            "startup_ms": self.startup_ms,
            "adapter_cache": host.cache_state(),
            "adapter_mixing": host.mixing_state() if self.ready else None,
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
            "decoding": {**self.pixel_budget.state(), **self.source_bytes.state()},
            "batching": {
                "enabled": self.batcher is not None,
                "max_batch_images": c.max_batch,
                "max_batch_wait_ms": c.max_batch_wait_ms,
            },
        }

    def metrics_report(self, request: Any) -> dict[str, Any]:
        batching = self.batcher.stats() if self.batcher else None
        return {**self.metrics.snapshot(), "adapter_cache": self.host.cache_state(), "batching": batching}

    def ping(self, request: Any) -> dict[str, Any]:
        return {"pong": True, "ready": self.ready}

    def echo(self, request: EchoInput) -> dict[str, Any]:
        return {"payload": request.payload}
