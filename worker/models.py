"""The served model: base, adapter registry and LRU adapter cache, behind one lock."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker import acceleration
from worker.config import ALL, WorkerConfig, is_adapter_name
from worker.contract import NotebookFunctions
from worker.errors import ErrorCode, ModelLoadFailed, WorkerError


@dataclass(frozen=True)
class AdapterEntry:
    name: str
    path: Path
    task: str
    description: str


def scan_adapters(adapters_dir: Path, fns: NotebookFunctions) -> dict[str, AdapterEntry]:
    """The registry: every subfolder holding an adapter_config.json. Only these names can be
    asked for; a job never supplies a path.

    Raises:
        ModelLoadFailed: the folder exists but cannot be read.
    """
    if not adapters_dir.exists():
        return {}
    try:
        candidates = sorted(p for p in adapters_dir.iterdir() if (p / "adapter_config.json").is_file())
    except OSError as exc:
        raise ModelLoadFailed(f"{adapters_dir}: unreadable ({exc.strerror or exc})") from exc
    registry = {}
    for path in candidates:
        if is_adapter_name(path.name):
            meta = fns.read_adapter_meta(path)
            registry[path.name] = AdapterEntry(path.name, path, meta.get("task", ""), meta.get("description", ""))
    return registry


class ModelHost:
    """Owns the model. Adapters load on demand into an LRU cache of `adapter_cache_size`."""

    def __init__(self, config: WorkerConfig, fns: NotebookFunctions) -> None:
        self.config = config
        self.fns = fns
        self.lock = threading.RLock()  # peft's active adapter is global state: one forward at a time
        self.model: Any = None
        self.merged = ""
        self.registry: dict[str, AdapterEntry] = {}
        self.fingerprint = ""
        self.labels: list[str] = []
        self.preprocess_config: Any = None
        self.transform: Any = None
        self._cache: OrderedDict[str, float] = OrderedDict()  # name -> load seconds
        self.counters = {"hits": 0, "misses": 0, "evictions": 0}

    # -- setup ---------------------------------------------------------------
    def device(self) -> str:
        if self.config.device != "auto":
            return self.config.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def load_base(self) -> None:
        base = self.config.base_model
        self.preprocess_config = self.fns.read_preprocess_config(base)
        self.transform = self.fns.build_eval_transform(self.preprocess_config)
        self.model = self.fns.load_base_model(base, device=self.device(), dtype=self.config.dtype)
        self.model = acceleration.prepare(self.model, channels_last=self.config.channels_last, device=self.device())
        self.labels = self.fns.model_labels(self.model)
        self.fingerprint = self.fns.model_fingerprint(base) if Path(base).is_dir() else ""
        self.registry = scan_adapters(Path(self.config.adapters_dir), self.fns)

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
            self.ensure(name)
        return list(self._cache)

    def compile(self) -> None:
        """torch.compile the served model (after adapters are attached, so they are compiled in)."""
        with self.lock:
            self.model = acceleration.compile_in_place(self.model)

    def warm_up(self) -> None:
        """One forward per loaded adapter (and the base), so the first job pays no lazy init."""
        import numpy as np

        c = self.preprocess_config
        blank = np.zeros((1, c.num_channels, c.height, c.width), dtype=np.float32)
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

    def forward(self, pixel_values: Any, adapter: str | None) -> Any:
        """Logits for `pixel_values` through a validated adapter (None = the base)."""
        with self.lock:
            self.ensure(adapter)
            with acceleration.autocast(self.config.autocast, self.device()):
                return self.fns.predict_logits(self.model, pixel_values, None if self.merged else adapter)

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
