"""Adapters on a folder that changes while the worker runs.

A name is looked up when a job asks for it (a few `stat` calls, repeated at most every
`adapter_recheck_ms`), never by scanning the whole folder: 10,000 folders cost setup nothing. A
folder's *signature* (size, mtime and inode of its files) says which version is on disk; a new
signature is loaded as a new version. A folder is loaded only once it is complete (config parses,
the safetensors file is as long as its header says) and is copied to local staging first, so the
slow read from a network volume never runs under the model's lock and a file rewritten mid-copy is
noticed. Loaded adapters live in an LRU cache sized by bytes; jobs pin what they use.

Mix groups: adapters whose jobs may share one forward (peft's `adapter_names`). `BASE_GROUP`
joins any mixable group; an unmixable adapter has a group of its own.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from worker.config import is_adapter_name
from worker.contract import NotebookFunctions
from worker.errors import ErrorCode, ModelLoadFailed, WorkerError
from worker.hub import is_hub_id
from worker.tasks import TASKS
from worker.telemetry import log_event

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
META_FILE = "fastbackend.json"
PUBLISH_DOC = "docs/how-to/many-adapters.md"
PRELOAD_ALL_LIMIT = 16  # `*` preloads at most this many (in name order); the rest load on first request
DEFAULT_CACHE_FLOOR_BYTES = 256 * 2**20
DEFAULT_CACHE_ADAPTERS = 128  # LoRAX's default number of active adapters
BASE_GROUP = ""
_MIXED, _ALONE = "m:", "u:"
_SHOWN = 10  # names listed in an UNKNOWN_ADAPTER message


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


@dataclass(frozen=True)
class Snapshot:
    """One version of an adapter folder on disk."""

    name: str
    folder: Path
    signature: tuple
    weight_bytes: int


def adapter_folder(path: Path) -> Path | None:
    """The folder holding the adapter: `path`, or peft's named layout `path/<adapter name>/`."""
    if (path / CONFIG_FILE).is_file():
        return path
    try:
        nested = [p for p in sorted(path.iterdir()) if (p / CONFIG_FILE).is_file()]
    except OSError:
        return None
    return nested[0] if len(nested) == 1 else None


def skip_reason(path: Path, folder: Path | None, base_model: str) -> str:
    if folder is None:
        return f"no {CONFIG_FILE} (nor one in a single subfolder, peft's named layout)"
    if not is_adapter_name(path.name):
        return f"folder name {path.name!r} does not follow the adapter-name rule"
    try:
        trained_on = json.loads((folder / CONFIG_FILE).read_text()).get("base_model_name_or_path")
    except (OSError, ValueError) as exc:
        return f"{folder / CONFIG_FILE}: unreadable ({exc})"
    # Comparable only when both are hub ids: a folder path differs between machines.
    if isinstance(trained_on, str) and is_hub_id(trained_on) and is_hub_id(base_model) and trained_on != base_model:
        return f"{folder / CONFIG_FILE}: base_model_name_or_path {trained_on!r}, serving {base_model!r}"
    return ""


def scan_adapter_folders(
    adapters_dir: Path, fns: NotebookFunctions, base_model: str = "", served_task: str = ""
) -> tuple[dict[str, AdapterEntry], list[SkippedAdapter]]:
    """Every subfolder holding an adapter (peft's flat or named layout) and the folders skipped,
    each with its reason. A full scan: the `adapters` op and `fastbackend doctor`, never a job.

    Raises:
        ModelLoadFailed: the folder exists but cannot be read.
    """
    if not adapters_dir.is_dir():
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
                        made = folder / "fastbackend.json"
                        reason = f"{made}: made for task {trained_for!r}, serving {served_task!r}"
            if reason:
                skipped.append(SkippedAdapter(path.name, str(path), reason))
                continue
            registry[path.name] = AdapterEntry(path.name, folder, meta.get("task", ""), meta.get("description", ""))
    except OSError as exc:
        raise ModelLoadFailed(f"{adapters_dir}: unreadable ({exc.strerror or exc})") from exc
    return registry, skipped


def scan_adapters(adapters_dir: Path, fns: NotebookFunctions, base_model: str = "") -> dict[str, AdapterEntry]:
    """The registry of `scan_adapter_folders`, without the skipped list."""
    return scan_adapter_folders(adapters_dir, fns, base_model)[0]


def _incomplete(message: str) -> WorkerError:
    return WorkerError(
        ErrorCode.ADAPTER_INCOMPLETE,
        f"{message}; still being copied? It is retried on the next request "
        f"(publish adapters by writing elsewhere, then renaming: {PUBLISH_DOC})",
        field="adapter",
    )


def signature(folder: Path) -> tuple:
    """(file, size, mtime_ns, inode) of the files a load reads; raises ADAPTER_INCOMPLETE."""
    parts = []
    for name in (CONFIG_FILE, WEIGHTS_FILE, META_FILE):
        try:
            st = os.stat(folder / name)
        except FileNotFoundError:
            if name == META_FILE:
                continue
            raise _incomplete(f"{folder / name}: missing") from None
        parts.append((name, st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(parts)


def check_complete(folder: Path) -> None:
    """The config parses and the safetensors file is exactly as long as its header says.

    Raises:
        WorkerError: ADAPTER_INCOMPLETE, naming the file.
    """
    try:
        json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise _incomplete(f"{folder / CONFIG_FILE}: not complete JSON ({exc})") from None
    weights = folder / WEIGHTS_FILE
    try:
        with open(weights, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            header_len = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            header = json.loads(f.read(header_len)) if 0 < header_len <= size - 8 else None
    except (OSError, ValueError) as exc:
        raise _incomplete(f"{weights}: unreadable header ({exc})") from None
    if not isinstance(header, dict):
        raise _incomplete(f"{weights}: {size} bytes, shorter than its header")
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    expected = 8 + header_len + max(ends, default=0)
    if size != expected:
        raise _incomplete(f"{weights}: {size} bytes, its header describes {expected}")


class AdapterCatalog:
    """Name -> the folder's current version, looked up on demand (no scan), rechecked at most
    every `recheck_s`."""

    def __init__(self, adapters_dir: Path, base_model: str, recheck_s: float) -> None:
        self.adapters_dir = adapters_dir
        self.base_model = base_model
        self.recheck_s = recheck_s
        self._seen: dict[str, tuple[float, Snapshot]] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        """Folder names that follow the name rule, sorted (one directory read, no file opened)."""
        try:
            with os.scandir(self.adapters_dir) as entries:
                return sorted(e.name for e in entries if is_adapter_name(e.name) and e.is_dir())
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ModelLoadFailed(f"{self.adapters_dir}: unreadable ({exc.strerror or exc})") from exc

    def lookup(self, name: str) -> Snapshot:
        """The adapter's current version on disk.

        Raises:
            WorkerError: UNKNOWN_ADAPTER (no such folder), ADAPTER_INCOMPLETE (being written),
                ADAPTER_INCOMPATIBLE (skipped by the name or base rule).
        """
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(name)
        if seen is not None and now - seen[0] < self.recheck_s:
            return seen[1]
        snapshot = self._read(name)
        with self._lock:
            self._seen[name] = (now, snapshot)
        return snapshot

    def forget(self, name: str) -> None:
        with self._lock:
            self._seen.pop(name, None)

    def _read(self, name: str) -> Snapshot:
        self.forget(name)
        path = self.adapters_dir / name
        if not is_adapter_name(name) or not path.is_dir():
            names = self.names()  # an error's path: one directory read, names only
            known = ", ".join(names[:_SHOWN]) + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")
            raise WorkerError(
                ErrorCode.UNKNOWN_ADAPTER,
                f"unknown adapter {name!r} (no folder {path}); known: {known or 'none'}",
                field="adapter",
            )
        folder = adapter_folder(path)
        if folder is None:
            raise _incomplete(f"{path}: no {CONFIG_FILE} yet")
        reason = skip_reason(path, folder, self.base_model)
        if reason:
            raise WorkerError(ErrorCode.ADAPTER_INCOMPATIBLE, reason, field="adapter")
        sig = signature(folder)
        weight_bytes = next(size for file, size, *_ in sig if file == WEIGHTS_FILE)
        return Snapshot(name, folder, sig, weight_bytes)


def stage(snapshot: Snapshot) -> Path:
    """Copy the version's files to a private local folder (outside any lock) and check them there.

    Raises:
        WorkerError: ADAPTER_INCOMPLETE when the copy is incomplete or the folder changed meanwhile.
    """
    root = Path("/dev/shm") if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK) else None
    staged = Path(tempfile.mkdtemp(prefix=f"fastbackend-{snapshot.name}-", dir=root))
    try:
        for file, *_ in snapshot.signature:
            shutil.copyfile(snapshot.folder / file, staged / file)
        if signature(snapshot.folder) != snapshot.signature:
            raise _incomplete(f"{snapshot.folder}: changed while it was read")
        check_complete(staged)
    except FileNotFoundError as exc:
        shutil.rmtree(staged, ignore_errors=True)
        raise _incomplete(f"{exc.filename}: vanished while it was read") from None
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged


def default_cache_bytes(free_bytes: int, adapter_bytes: list[int]) -> int:
    """The cache budget when FASTBACKEND_ADAPTER_CACHE_MB is 0: room for 128 of the largest adapter
    seen (at least 256 MiB), never more than a tenth of the device's free memory."""
    wanted = max(DEFAULT_CACHE_FLOOR_BYTES, DEFAULT_CACHE_ADAPTERS * max(adapter_bytes, default=0))
    return max(1, min(wanted, free_bytes // 10))


def free_memory_bytes(device: str) -> int:
    """Free memory of the device (CUDA's free memory; MemAvailable for the CPU)."""
    import sys

    torch = sys.modules.get("torch")
    if device.startswith("cuda") and torch is not None:
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def layout_of(folder: Path) -> tuple:
    """What decides whether an adapter can mix with others: its modules_to_save and DoRA."""
    config = json.loads((folder / CONFIG_FILE).read_text())
    return (tuple(sorted(config.get("modules_to_save") or ())), bool(config.get("use_dora")))


def mixed_group(layout: tuple) -> str:
    return _MIXED + repr(layout)


def alone_group(key: str) -> str:
    return _ALONE + key


def join_group(batch: str, request: str) -> str | None:
    """The batch's group once `request` joins it, or None when the two cannot share a forward."""
    if batch == request:  # the same mixable group, or the same unmixable adapter
        return batch
    if batch == BASE_GROUP and request.startswith(_MIXED):
        return request
    if request == BASE_GROUP and batch.startswith(_MIXED):
        return batch
    return None


@dataclass
class Loaded:
    """One loaded adapter version: `key` is its name inside peft (unique per load)."""

    name: str
    key: str
    signature: tuple
    nbytes: int
    group: str
    pins: int = 0
    retired: bool = False  # replaced or removed: detached when the last job using it ends


@dataclass
class AdapterCache:
    """LRU by bytes over loaded versions; pinned ones (a job is using them) are never evicted."""

    budget_bytes: int
    entries: OrderedDict[str, Loaded] = field(default_factory=OrderedDict)  # name -> current version
    counters: dict[str, int] = field(
        default_factory=lambda: {"hits": 0, "loads": 0, "evictions": 0, "reloads": 0, "refused": 0}
    )

    nbytes: int = 0  # of the current versions held

    def hit(self, name: str, sig: tuple) -> Loaded | None:
        entry = self.entries.get(name)
        if entry is None or entry.signature != sig:
            return None
        self.entries.move_to_end(name)
        self.counters["hits"] += 1
        entry.pins += 1
        return entry

    def add(self, entry: Loaded) -> list[Loaded]:
        """Insert (pinned once, for the loader's job); returns the versions to detach now."""
        out: list[Loaded] = []
        old = self.entries.pop(entry.name, None)
        if old is not None:
            self.counters["reloads"] += 1
            self.nbytes -= old.nbytes
            out += self._retire(old)
        self.counters["loads"] += 1
        entry.pins += 1
        self.entries[entry.name] = entry
        self.nbytes += entry.nbytes
        return out + self._trim()

    def _trim(self) -> list[Loaded]:
        """Evict least recently used, unpinned versions until the cache fits its budget."""
        out: list[Loaded] = []
        for name in list(self.entries):
            if self.nbytes <= self.budget_bytes:
                break
            victim = self.entries[name]
            if victim.pins == 0:
                del self.entries[name]
                self.nbytes -= victim.nbytes
                self.counters["evictions"] += 1
                out += self._retire(victim)
        return out

    def drop(self, name: str) -> list[Loaded]:
        """The adapter was removed from disk: forget it; returns what to detach now."""
        old = self.entries.pop(name, None)
        if old is None:
            return []
        self.nbytes -= old.nbytes
        return self._retire(old)

    def release(self, entry: Loaded) -> list[Loaded]:
        """A job is done with `entry`; returns what to detach now (over budget: the LRU unpinned)."""
        entry.pins -= 1
        return ([entry] if entry.retired and entry.pins == 0 else []) + self._trim()

    @staticmethod
    def _retire(entry: Loaded) -> list[Loaded]:
        entry.retired = True
        return [entry] if entry.pins == 0 else []


def log_refused(name: str, folder: Path, reason: str) -> None:
    log_event("adapter.refused", logging.WARNING, name=name, path=str(folder), reason=reason)


def staging_folder(target: Path) -> Path:
    """A fresh hidden folder beside `target` (same file system, so the publishing rename is atomic);
    its dot name never follows the adapter-name rule, so a worker never serves it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))


def publish_folder(staged: Path, target: Path) -> Path:
    """Move a complete adapter folder into place under `target` with renames only: a worker sees the
    old version or the new one, never a half-written one. Replacing moves the old one aside first
    (for that instant the name is absent: a request then answers UNKNOWN_ADAPTER), then deletes it."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.rename(target, old / target.name)
    os.rename(staged, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target
