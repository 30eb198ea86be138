"""The served model: base, adapter registry and LRU adapter cache, behind one lock."""

from __future__ import annotations

import contextlib
import itertools
import logging
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from worker import acceleration, lora_rows
from worker.adapters import (
    BASE_GROUP,
    PRELOAD_ALL_LIMIT,
    AdapterCache,
    AdapterCatalog,
    AdapterEntry,
    Loaded,
    SkippedAdapter,
    alone_group,
    default_cache_bytes,
    free_memory_bytes,
    layout_of,
    mixed_group,
    scan_adapter_folders,
    stage,
)
from worker.batching import off_cpu
from worker.config import ALL, WorkerConfig
from worker.contract import NotebookFunctions
from worker.decoding import Reduction
from worker.errors import ErrorCode, WorkerError
from worker.hub import local_model_dir
from worker.tasks import Arrays, Task, select_task
from worker.telemetry import log_event

__all__ = ["AdapterEntry", "ModelHost", "SkippedAdapter"]
UNSIZED = 2**62
MIX_TOLERANCE = 1e-5  # a mixed forward must equal one forward per adapter within this (relative to the logits)


class ModelHost:
    """Owns the model. Adapters are looked up when asked for and load into a cache sized by bytes."""

    def __init__(self, config: WorkerConfig, fns: NotebookFunctions) -> None:
        self.config = config
        self.fns = fns
        self.lock = threading.RLock()  # the model is shared state: forwards, attaches, detaches one at a time
        self.model: Any = None
        self.merged = ""
        self.registry: dict[str, AdapterEntry] = {}  # a full scan's result (`scan_adapters`: doctor, `adapters` op)
        self.skipped: list[SkippedAdapter] = []  # found but not served, each with its reason
        self.fingerprint = ""
        self.task: Task | None = None  # chosen from the base's config.json (or FASTBACKEND_TASK) by load_processor
        self.reduction: Reduction | None = None  # FASTBACKEND_FAST_DECODE=on: the model's resize, for decoding
        self.catalog = AdapterCatalog(Path(config.adapters_dir), config.base_model, config.adapter_recheck_ms / 1000)
        # Unsized until `preload`, which derives the default from what it loaded and the free memory.
        self.cache = AdapterCache(budget_bytes=int(config.adapter_cache_mb * 2**20) or UNSIZED)
        self._state = threading.Lock()  # guards the cache's bookkeeping (never held during I/O or a forward)
        self._loading: dict[str, threading.Lock] = {}  # one load per name at a time; other names go on
        self._refused: dict[str, tuple[tuple, str]] = {}  # name -> (signature, reason): not retried until it changes
        self._layouts: dict[tuple, tuple[bool, str]] = {}  # layout -> (mixes, why not), probed once per layout
        self._keys = itertools.count(1)
        self._attached: set[str] = set()  # keys attached to the model (peft's adapter names)
        self._lingering: list[str] = []  # no longer served, still attached: peft needs one adapter
        self._device = ""
        self._precision: Any = contextlib.nullcontext  # the forward's autocast, chosen once by load_model
        self.mix_path = ""  # how the last mixed batch ran (lora_rows.PATH, or peft's loop and why)

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
        """The base's processor, the model, then the adapters folder (`fastbackend doctor` runs the
        same steps one by one, to report each)."""
        self.device()  # an absent device fails first, in one line
        base = local_model_dir(self.config.base_model)  # a folder, or a hub id's cached snapshot
        self.load_processor(base)
        self.load_model(base)
        if not Path(self.config.adapters_dir).is_dir():
            log_event("adapters.no_folder", logging.WARNING, path=self.config.adapters_dir, note="base alone for now")

    def _select_task(self, base: Path) -> Any:
        task = select_task(base, self.config.task, self.fns)
        task.config = self.config
        return task

    def load_processor(self, base: Path) -> None:
        """The task serving the base (worker/tasks), then its processor."""
        task = self.task = self.task or self._select_task(base)
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
        task = self.task = self.task or self._select_task(base)
        self.model = task.load_model(base, device=self.device(), dtype=self.config.dtype)
        self.model = acceleration.prepare(self.model, channels_last=self.config.channels_last, device=self.device())
        self._precision = acceleration.precision(self.config.autocast, self.device())
        self.fingerprint = self.fns.model_fingerprint(base) if base.is_dir() else ""

    def scan_adapters(self) -> None:
        """A full scan of the adapters folder into `registry` / `skipped` (doctor; never per job)."""
        served = self.task.name if self.task else ""
        self.registry, self.skipped = scan_adapter_folders(
            Path(self.config.adapters_dir), self.fns, self.config.base_model, served
        )

    def preload(self, names: list[str] | None = None) -> list[str]:
        """Load `names` (default: the configured ones; `*` = the first PRELOAD_ALL_LIMIT folders by
        name), or merge the one to merge, then size the cache. Returns the names loaded.

        Raises:
            WorkerError: an adapter named in FASTBACKEND_PRELOAD_ADAPTERS cannot be served.
        """
        if self.config.merge_adapter:
            name = self.config.merge_adapter
            self.validate(name)
            with self.serving(name) as (key, _):
                with self.lock:
                    self.model = self.fns.merge_adapter(self.model, key)
                    self.merged = name
            self.cache.budget_bytes = self.cache.nbytes  # nothing else loads
            return [name]
        everything = names is None and ALL in self.config.preload_adapters
        explicit = names is None and not everything
        if names is None:
            names = self.catalog.names()[:PRELOAD_ALL_LIMIT] if everything else list(self.config.preload_adapters)
        for name in names:
            try:
                self.validate(name)
                with self.serving(name):
                    pass
            except WorkerError as exc:
                if explicit:
                    raise  # named explicitly: the operator asked for it, so setup stops
                path = str(Path(self.config.adapters_dir) / name)
                self.skipped.append(SkippedAdapter(name, path, str(exc)))
                log_event("adapter.refused", logging.WARNING, name=name, path=path, reason=str(exc))
        if self.cache.budget_bytes == UNSIZED:
            self.cache.budget_bytes = self._default_budget()
        return list(self.cache.entries)

    def _default_budget(self) -> int:
        sizes = [e.nbytes for e in self.cache.entries.values()]
        for name in self.catalog.names()[:8]:  # a few folders' sizes: a stat each
            with contextlib.suppress(WorkerError):
                sizes.append(self.catalog.lookup(name).weight_bytes)
        budget = default_cache_bytes(free_memory_bytes(self.device()), sizes)
        log_event("adapters.cache", budget_mb=round(budget / 2**20, 1), sampled=len(sizes))
        return budget

    def compile(self) -> None:
        """torch.compile the served model (after adapters are attached, so they are compiled in)."""
        with self.lock:
            self.model = acceleration.compile_in_place(self.model)

    def warm_up(self) -> None:
        """One forward per loaded adapter (and the base), so the first job pays no lazy init."""
        blank = self.task.blank_inputs()
        for key in [None] if self.merged else [None, *(e.key for e in self.cache.entries.values())]:
            self.run_batch(blank, key)

    # -- serving -------------------------------------------------------------
    def validate(self, name: str | None) -> None:
        """Refuse an adapter this worker cannot serve, before any work is done for the job (a few
        `stat` calls at most; no file is read).

        Raises:
            WorkerError: UNKNOWN_ADAPTER, ADAPTER_INCOMPLETE, ADAPTER_INCOMPATIBLE.
        """
        if self.merged:
            if name != self.merged:
                said = "no adapter named" if name is None else f"unknown adapter {name!r}"
                raise WorkerError(
                    ErrorCode.UNKNOWN_ADAPTER,
                    f"{said}: this worker serves only adapter {self.merged!r}, merged into the base",
                    field="adapter",
                )
            return
        if name is not None:
            self._snapshot(name)

    def _snapshot(self, name: str) -> Any:
        try:
            snapshot = self.catalog.lookup(name)
        except WorkerError as exc:
            if exc.code is ErrorCode.UNKNOWN_ADAPTER:  # removed from disk: its loaded version goes too
                with self._state:
                    gone = self.cache.drop(name)
                self._detach(gone)
            raise
        refused = self._refused.get(name)
        if refused is not None and refused[0] == snapshot.signature:
            raise WorkerError(ErrorCode.ADAPTER_INCOMPATIBLE, refused[1], field="adapter")
        return snapshot

    @contextlib.contextmanager
    def serving(self, name: str | None) -> Iterator[tuple[str | None, str]]:
        """Make `name` ready and keep it loaded while the block runs (the job's forward).

        Yields (the key to pass to `forward`, the adapter's mix group). A load reads the folder in
        the calling job's thread and outside the model's lock: jobs for other adapters go on.

        Raises:
            WorkerError: as `validate`, and ADAPTER_INCOMPATIBLE from the loader.
        """
        if name is None or self.merged:
            yield None, BASE_GROUP if self._mixing_possible() else alone_group("")
            return
        entry = self._acquire(name)
        try:
            yield entry.key, entry.group
        finally:
            with self._state:
                done = self.cache.release(entry)
            self._detach(done)

    def _mixing_possible(self) -> bool:
        return self.config.mix_adapters and not (self.merged or self.config.compile) and self.task_mixes()

    def task_mixes(self) -> bool:
        """Only a classifier's predict forward takes one adapter per row (peft's `adapter_names`); the
        other tasks and ops run per-adapter batches."""
        return self.task is not None and self.task.name == "image-classification"

    def _acquire(self, name: str) -> Loaded:
        snapshot = self._snapshot(name)
        with self._state:
            entry = self.cache.hit(name, snapshot.signature)
            lock = self._loading.setdefault(name, threading.Lock())
        if entry is not None:
            return entry
        # Waiting for another job's load of this name, or loading: no CPU slot held meanwhile (the
        # job holding the load lock must be able to take one back; the others wait on I/O anyway).
        with off_cpu(), lock:
            with self._state:  # loaded by another job while this one waited for the lock
                entry = self.cache.hit(name, snapshot.signature)
            return entry or self._load(snapshot)

    def _load(self, snapshot: Any) -> Loaded:
        staged = stage(snapshot)  # the slow part (a network volume), in this job's thread, no lock held
        try:
            with self.lock:
                key = f"adapter-{next(self._keys)}"  # peft's names cannot hold '.'; one per version
                try:
                    self.model = self.fns.attach_adapter(
                        self.model, staged, key, base_fingerprint=self.fingerprint or None
                    )
                except WorkerError as exc:
                    # The loader read the staged copy: name the files where the operator put them.
                    message = exc.message.replace(str(staged), str(snapshot.folder))
                    with self._state:
                        self._refused[snapshot.name] = (snapshot.signature, message)
                        self.cache.counters["refused"] += 1
                    raise WorkerError(exc.code, message, field="adapter") from None
                self._attached.add(key)
                group = self._group(key, staged)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        self._refused.pop(snapshot.name, None)
        entry = Loaded(snapshot.name, key, snapshot.signature, snapshot.weight_bytes, group)
        with self._state:
            evicted = self.cache.add(entry)
        self._detach(evicted)  # and a lingering one, now that another is attached
        log_event("adapter.loaded", name=snapshot.name, key=key, bytes=snapshot.weight_bytes, group=group)
        return entry

    def _group(self, key: str, folder: Path) -> str:
        """The adapter's mix group: its layout's, once a mixed forward of that layout has been seen
        to equal one forward per adapter; else a group of its own (per-adapter batches)."""
        if not self._mixing_possible() or self.preprocess_config is None:  # no input shape to probe with
            return alone_group(key)
        layout = layout_of(folder)
        if layout not in self._layouts:
            self._layouts[layout] = self._probe(key)
            mixes, why = self._layouts[layout]
            log_event("adapters.mixing", logging.INFO if mixes else logging.WARNING, layout=repr(layout), reason=why)
        return mixed_group(layout) if self._layouts[layout][0] else alone_group(key)

    def _probe(self, key: str) -> tuple[bool, str]:
        """Two random rows, the adapter and the base in one forward, against one forward each."""
        import numpy as np

        c = self.preprocess_config
        rows = np.random.default_rng(0).standard_normal((2, c.num_channels, c.height, c.width)).astype(np.float32)
        try:
            mixed = self.run_batch({"pixel_values": rows}, [key, None])["logits"]
        except Exception as exc:  # peft refuses: DoRA, a modules_to_save it cannot mix, a reshaped batch
            return False, f"peft cannot mix this adapter's layout: {type(exc).__name__}: {exc}"[:300]
        one, base = self.run_batch({"pixel_values": rows[:1]}, key), self.run_batch({"pixel_values": rows[1:]}, None)
        alone = np.concatenate([one["logits"], base["logits"]])
        scale = max(1.0, float(np.abs(alone).max()))
        if not np.abs(mixed - alone).max() <= MIX_TOLERANCE * scale:
            return False, f"a mixed forward differs from per-adapter forwards by {np.abs(mixed - alone).max():.2e}"
        return True, ""

    def _detach(self, entries: list[Loaded]) -> None:
        """Detach versions nobody uses any more. Takes the model lock: never call it holding `_state`
        (a load holds the model lock, then takes `_state`). peft cannot hold zero adapters (its
        base-only forward then fails): the last one stays attached until another is loaded."""
        with self.lock:
            for key in [e.key for e in entries] + self._lingering:
                if key not in self._attached:
                    continue
                if len(self._attached) == 1:
                    self._lingering = [key]
                    continue
                self.fns.detach_adapter(self.model, key)
                self._attached.discard(key)
                self._lingering = [k for k in self._lingering if k != key]

    def run_batch(self, inputs: Arrays, adapter: str | None | list[str | None], op: str = "predict") -> Arrays:
        """The task's outputs for `op` (predict: `task.forward`; embed: `task.embed`) on a batch of model
        inputs, through a loaded adapter key (None = the base), or one key per row (a mixed batch of a
        classifier's predict): the model's forward, one batch at a time, under the configured precision."""
        if isinstance(adapter, list) and len(set(adapter)) == 1:
            adapter = adapter[0]
        run = self.task.embed if op == "embed" else self.task.forward
        with self.lock, self._precision():
            if isinstance(adapter, list) and not self.merged:
                try:  # one pass per layer (worker/lora_rows.py); the model's active adapter stays as it is
                    with lora_rows.one_adapter_per_row(self.model, adapter):
                        outputs = run(self.model, inputs, self.model.active_adapter)
                    self.mix_path = lora_rows.PATH
                    return outputs
                except lora_rows.Unsupported as exc:
                    self.mix_path = f"{lora_rows.FALLBACK}: {exc}"
            return run(self.model, inputs, None if self.merged else adapter)

    def embed_texts(self, texts: list[str], adapter: str | None) -> Any:
        """(len(texts), D) text embeddings of a CLIP-family task through a loaded adapter key (not
        micro-batched: the text tower runs once per job)."""
        with self.lock, self._precision():
            return self.task.embed_texts(self.model, texts, None if self.merged else adapter)

    def cache_state(self) -> dict[str, Any]:
        with self._state:
            return {
                "budget_bytes": self.cache.budget_bytes,
                "bytes": self.cache.nbytes,
                "loaded": list(self.cache.entries),
                "merged": self.merged or None,
                **self.cache.counters,
            }

    def refusals(self) -> list[SkippedAdapter]:
        """Adapters refused so far (at preload, or by the loader on a request), each with its reason."""
        found = {s.name: s for s in self.skipped}
        for name, (_, reason) in list(self._refused.items()):
            found[name] = SkippedAdapter(name, str(Path(self.config.adapters_dir) / name), reason)
        return list(found.values())

    def mixing_state(self) -> dict[str, Any]:
        """Whether jobs for different adapters share forwards, and why not where they do not."""
        if not self._mixing_possible():
            why = (
                f"adapter {self.merged!r} is merged into the base"
                if self.merged
                else "torch.compile is on"
                if self.config.compile
                else "FASTBACKEND_MIX_ADAPTERS is off"
            )
            return {"enabled": False, "reason": f"per-adapter batches: {why}", "layouts": []}
        layouts = [
            {"modules_to_save": list(layout[0]), "dora": layout[1], "mixed": mixes, **({"reason": why} if why else {})}
            for layout, (mixes, why) in self._layouts.items()
        ]
        return {"enabled": True, "reason": None, "layouts": layouts, "path": self.mix_path or None}

    def release_cuda_cache(self) -> None:
        """Return cached CUDA blocks to the driver once they pass the configured limit."""
        import sys

        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            if torch.cuda.memory_reserved() > self.config.cuda_cache_limit_mb * 2**20:
                torch.cuda.empty_cache()
