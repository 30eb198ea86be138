"""The served model: base, adapter registry and LRU adapter cache, behind one lock."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker import acceleration
from worker.config import ALL, WorkerConfig, is_adapter_name
from worker.contract import NotebookFunctions
from worker.decoding import Reduction
from worker.errors import ErrorCode, ModelLoadFailed, WorkerError
from worker.hub import is_hub_id, local_model_dir
from worker.tasks import TASKS, Arrays, Task, select_task
from worker.telemetry import log_event


@dataclass(frozen=True)
class AdapterEntry:
    name: str
    path: Path
    task: str
    description: str


@dataclass(frozen=True)
class SkippedAdapter:
    name: str
    path: str
    reason: str


def adapter_folder(path: Path) -> Path | None:
    """The folder holding the adapter: `path`, or peft's named layout `path/<adapter name>/`."""
    if (path / "adapter_config.json").is_file():
        return path
    nested = [p for p in sorted(path.iterdir()) if (p / "adapter_config.json").is_file()]
    return nested[0] if len(nested) == 1 else None


def skip_reason(path: Path, folder: Path | None, base_model: str) -> str:
    if folder is None:
        return "no adapter_config.json (nor one in a single subfolder, peft's named layout)"
    if not is_adapter_name(path.name):
        return f"folder name {path.name!r} does not follow the adapter-name rule"
    try:
        trained_on = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, ValueError) as exc:
        return f"{folder / 'adapter_config.json'}: unreadable ({exc})"
    # Comparable only when both are hub ids: a folder path differs between machines.
    if isinstance(trained_on, str) and is_hub_id(trained_on) and is_hub_id(base_model) and trained_on != base_model:
        return f"{folder / 'adapter_config.json'}: base_model_name_or_path {trained_on!r}, serving {base_model!r}"
    return ""


def scan_adapter_folders(
    adapters_dir: Path, fns: NotebookFunctions, base_model: str = "", served_task: str = ""
) -> tuple[dict[str, AdapterEntry], list[SkippedAdapter]]:
    """The registry (every subfolder holding an adapter, in peft's flat or named layout) and the
    folders skipped, each with its reason; one log line per folder. Only registered names can be
    asked for; a job never supplies a path.

    Raises:
        ModelLoadFailed: the folder exists but cannot be read.
    """
    if not adapters_dir.is_dir():
        log_event("adapters.no_folder", logging.WARNING, path=str(adapters_dir), note="serving the base alone")
        return {}, []
    registry, skipped = {}, []
    try:
        for path in sorted(p for p in adapters_dir.iterdir() if p.is_dir()):
            folder = adapter_folder(path)
            reason = skip_reason(path, folder, base_model)
            if not reason:
                try:
                    meta = fns.read_adapter_meta(folder)
                except WorkerError as exc:
                    reason = str(exc)
                else:  # a task that is a pipeline name must be the served one (others are free text)
                    trained_for = meta.get("task")
                    if served_task and trained_for in TASKS and trained_for != served_task:
                        reason = (
                            f"{folder / 'fastbackend.json'}: made for task {trained_for!r}, serving {served_task!r}"
                        )
            if reason:
                skipped.append(SkippedAdapter(path.name, str(path), reason))
                log_event("adapter.skipped", logging.WARNING, name=path.name, path=str(path), reason=reason)
                continue
            registry[path.name] = AdapterEntry(path.name, folder, meta.get("task", ""), meta.get("description", ""))
            log_event("adapter.found", name=path.name, path=str(folder), nested=folder != path)
    except OSError as exc:
        raise ModelLoadFailed(f"{adapters_dir}: unreadable ({exc.strerror or exc})") from exc
    return registry, skipped


def scan_adapters(adapters_dir: Path, fns: NotebookFunctions, base_model: str = "") -> dict[str, AdapterEntry]:
    """The registry of `scan_adapter_folders`, without the skipped list."""
    return scan_adapter_folders(adapters_dir, fns, base_model)[0]


class ModelHost:
    """Owns the model. Adapters load on demand into an LRU cache of `adapter_cache_size`."""

    def __init__(self, config: WorkerConfig, fns: NotebookFunctions) -> None:
        self.config = config
        self.fns = fns
        self.lock = threading.RLock()  # peft's active adapter is global state: one forward at a time
        self.model: Any = None
        self.merged = ""
        self.registry: dict[str, AdapterEntry] = {}
        self.skipped: list[SkippedAdapter] = []  # found but not served, each with its reason
        self.fingerprint = ""
        self.task: Task | None = None  # chosen from the base's config.json (or FASTBACKEND_TASK) by load_processor
        self.reduction: Reduction | None = None  # FASTBACKEND_FAST_DECODE=on: the model's resize, for decoding
        self._cache: OrderedDict[str, float] = OrderedDict()  # name -> load seconds
        self.counters = {"hits": 0, "misses": 0, "evictions": 0}
        self._device = ""

    # -- setup ---------------------------------------------------------------
    def device(self) -> str:
        """The resolved device (`auto` -> cuda or cpu), checked present on first use.

        Raises:
            ConfigError: FASTBACKEND_DEVICE names a device this machine does not have.
        """
        if not self._device:
            self._device = acceleration.resolve_device(self.config.device)
        return self._device

    def load_base(self) -> None:
        """The base's processor, the model, then the adapter folders (`fastbackend doctor` runs the
        same three steps one by one, to report each)."""
        self.device()  # an absent device fails first, in one line
        base = local_model_dir(self.config.base_model)  # a folder, or a hub id's cached snapshot
        self.load_processor(base)
        self.load_model(base)
        self.scan_adapters()

    def load_processor(self, base: Path) -> None:
        """The task serving the base (worker/tasks), then its processor."""
        task = self.task = self.task or select_task(base, self.config.task, self.fns)
        task.load_processor(base)
        if self.config.fast_decode == "on":  # decode reduced, never below twice what the model's resize makes

            def target(width: int, height: int) -> tuple[int, int]:
                return task.resize_target(height, width)[::-1]

            self.reduction = Reduction(target, task.resample)

    # What the task read, for the tools and tests that look at it.
    @property
    def preprocess_config(self) -> Any:
        return self.task.processor if self.task else None

    @property
    def transform(self) -> Any:
        return self.task.transform if self.task else None

    @property
    def labels(self) -> list[str]:
        return self.task.labels if self.task else []

    def load_model(self, base: Path) -> None:
        task = self.task = self.task or select_task(base, self.config.task, self.fns)
        self.model = task.load_model(base, device=self.device(), dtype=self.config.dtype)
        self.model = acceleration.prepare(self.model, channels_last=self.config.channels_last, device=self.device())
        self.fingerprint = self.fns.model_fingerprint(base) if base.is_dir() else ""

    def scan_adapters(self) -> None:
        served = self.task.name if self.task else ""
        self.registry, self.skipped = scan_adapter_folders(
            Path(self.config.adapters_dir), self.fns, self.config.base_model, served
        )

    def preload(self) -> list[str]:
        """Load the configured adapters (or merge the one to merge). Returns the names loaded."""
        if self.config.merge_adapter:
            self.validate(self.config.merge_adapter)
            self.ensure(self.config.merge_adapter)
            with self.lock:
                self.model = self.fns.merge_adapter(self.model, self.config.merge_adapter)
                self.merged = self.config.merge_adapter
            return [self.merged]
        wanted = list(self.registry) if ALL in self.config.preload_adapters else list(self.config.preload_adapters)
        for name in wanted[: self.config.adapter_cache_size]:
            self.validate(name)
            try:
                self.ensure(name)
            except WorkerError as exc:
                if ALL not in self.config.preload_adapters:
                    raise  # named explicitly: the operator asked for it, so setup stops
                entry = self.registry.pop(name)  # with `*`: refused and listed, the others serve
                self.skipped.append(SkippedAdapter(name, str(entry.path), str(exc)))
                log_event("adapter.refused", logging.WARNING, name=name, path=str(entry.path), reason=str(exc))
        return list(self._cache)

    def compile(self) -> None:
        """torch.compile the served model (after adapters are attached, so they are compiled in)."""
        with self.lock:
            self.model = acceleration.compile_in_place(self.model)

    def warm_up(self) -> None:
        """One forward per loaded adapter (and the base), so the first job pays no lazy init."""
        blank = self.task.blank_inputs()
        for adapter in [None, *self._cache] if not self.merged else [self.merged]:
            self.forward(blank, adapter)

    # -- serving -------------------------------------------------------------
    def validate(self, name: str | None) -> None:
        """Refuse an adapter this worker cannot serve, before any work is done for the job.

        Called once per job (the predict op) and per configured adapter (preload); `ensure`
        and `forward` trust a validated name.

        Raises:
            WorkerError: UNKNOWN_ADAPTER.
        """
        if name is None:
            if self.merged:
                raise WorkerError(
                    ErrorCode.UNKNOWN_ADAPTER,
                    f"this worker serves only adapter {self.merged!r}, merged into the base; name it in `adapter`",
                    field="adapter",
                )
            return
        if self.merged:
            if name != self.merged:
                raise WorkerError(
                    ErrorCode.UNKNOWN_ADAPTER,
                    f"unknown adapter {name!r}; this worker serves only {self.merged!r}",
                    field="adapter",
                )
            return
        if name not in self.registry:
            known = ", ".join(self.registry) or "none"
            raise WorkerError(ErrorCode.UNKNOWN_ADAPTER, f"unknown adapter {name!r}; known: {known}", field="adapter")

    def ensure(self, name: str | None) -> None:
        """Make a validated adapter ready to serve: a cache hit, or a load (evicting the LRU one).

        Raises:
            WorkerError: ADAPTER_INCOMPATIBLE from the loader.
        """
        if name is None or self.merged:
            return
        entry = self.registry[name]
        with self.lock:
            if name in self._cache:
                self.counters["hits"] += 1
                self._cache.move_to_end(name)
                return
            self.counters["misses"] += 1
            started = time.perf_counter()
            self.model = self.fns.attach_adapter(
                self.model, entry.path, name, base_fingerprint=self.fingerprint or None
            )
            self._cache[name] = time.perf_counter() - started
            # Evict after loading: peft cannot hold zero adapters, and a refused load evicts nothing.
            while len(self._cache) > self.config.adapter_cache_size:
                evicted, _ = self._cache.popitem(last=False)
                self.fns.detach_adapter(self.model, evicted)
                self.counters["evictions"] += 1

    def forward(self, inputs: Arrays, adapter: str | None, op: str = "predict") -> Arrays:
        """The task's outputs for `op` (predict: `task.forward`; embed: `task.embed`) on a batch of model
        inputs, through a validated adapter (None = the base)."""
        run = self.task.embed if op == "embed" else self.task.forward
        with self.lock:
            self.ensure(adapter)
            with acceleration.autocast(self.config.autocast, self.device()):
                return run(self.model, inputs, None if self.merged else adapter)

    def cache_state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "capacity": self.config.adapter_cache_size,
                "loaded": list(self._cache),
                "merged": self.merged or None,
                **self.counters,
            }

    def release_cuda_cache(self) -> None:
        """Return cached CUDA blocks to the driver once they pass the configured limit."""
        import sys

        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            if torch.cuda.memory_reserved() > self.config.cuda_cache_limit_mb * 2**20:
                torch.cuda.empty_cache()
