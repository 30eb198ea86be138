"""`fastbackend batch`, the pure part: dataset items -> jobs under RunPod's body limit, and a
worker's answer -> one output record per image. No network, no threads (tests/unit/)."""

from __future__ import annotations

import base64
import json
import math
import os
import posixpath
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.config import RUN_LIMIT_BYTES

# Codes the client gives to what never got a worker's answer (the worker's own are in worker/errors.py).
NOT_SENT = "PAYLOAD_TOO_LARGE"  # one image alone is over the body limit: send it --by-reference
UNREADABLE = "FILE_UNREADABLE"  # the local file vanished or cannot be read
TIMEOUT = "JOB_TIMEOUT"  # still unfinished after --job-timeout (cancelled on RunPod)
NETWORK = "NETWORK"  # no answer from the API (refused, reset, dropped)
LOST = "JOB_LOST"  # the API no longer knows the job, or it ended without a coded answer (worker recycled)
CANCELLED = "JOB_CANCELLED"  # RunPod cancelled or timed it out

# Worker codes worth a retry: the same job can succeed a moment later or on another worker.
RETRYABLE_WORKER_CODES = frozenset({"RATE_LIMITED", "MODEL_NOT_READY", "OUT_OF_MEMORY", "INTERNAL"})
# Worker codes about one image: that image is recorded failed, the rest of its job is sent again.
ITEM_CODES = frozenset({"IMAGE_DECODE_FAILED", "IMAGE_TOO_LARGE", "IMAGE_SOURCE_NOT_ALLOWED", "IMAGE_FETCH_FAILED"})
# The client's own mistake: never retried; when it names one image (`images[3]: ...`, a URL or path
# the worker cannot take as it is), only that image fails.
INVALID_INPUT = "INVALID_INPUT"

BODY_MARGIN = 64 * 1024  # JSON framing, adapter and top_k, with room to spare
_CODED = re.compile(r"^([A-Z][A-Z0-9_]+): (.*)$", re.DOTALL)
_ITEM_FIELD = re.compile(r"^images(?:\[(\d+)\])?:")
RECORD_KEYS = (
    "path",
    "true_label",
    "label",
    "score",
    "top_k",
    "detections",
    "embedding",
    "adapter",
    "job_id",
    "attempt",
    "code",
    "error",
)


@dataclass(frozen=True)
class Item:
    """One image to score: its key in the output, its file, its dataset label, what is sent."""

    key: str
    file: Path
    true_label: str
    reference: str | None = None  # the path the worker reads (--by-reference); None = base64

    def body_size(self) -> int:
        """Bytes this image adds to a job body (base64 is 4/3 of the file, plus quotes and a comma)."""
        if self.reference is not None:
            return len(json.dumps({"path": self.reference})) + 1
        return 4 * math.ceil(self.file.stat().st_size / 3) + 3

    def payload(self) -> str | dict[str, str]:
        """What goes in the job's `images` list. Raises OSError when the file cannot be read."""
        if self.reference is not None:
            return {"path": self.reference}
        if not stat.S_ISREG(self.file.stat().st_mode):  # a FIFO would block the read forever
            raise OSError(f"{self.file}: not a regular file")
        return base64.b64encode(self.file.read_bytes()).decode("ascii")


def item_key(path: Path, root: Path) -> str:
    """The image's name in the output: relative to the dataset folder (posix), else absolute.

    A symlink in the dataset keeps its own name (a broken one is reported under it), unless only
    the resolved paths relate (a manifest's rows are resolved, its folder may not be).
    """
    for file, folder in ((Path(os.path.abspath(path)), Path(os.path.abspath(root))), (path.resolve(), root.resolve())):
        if file.is_relative_to(folder):
            return file.relative_to(folder).as_posix()
    return str(path.resolve())


def plan_items(
    entries: Iterable[tuple[Path, str]],
    root: Path,
    done: set[str],
    *,
    by_reference: bool = False,
    remote_root: str | None = None,
) -> tuple[list[Item], int]:
    """Items still to score (not in `done`, each key once) and how many were skipped as done.

    By reference, the worker reads `remote_root/key` (posix), or `key` relative to its
    FASTBACKEND_INPUT_ROOT when no remote root is given.
    """
    items, seen, skipped = [], set(), 0
    for path, label in entries:
        key = item_key(path, root)
        if key in seen:
            continue
        seen.add(key)
        if key in done:
            skipped += 1
            continue
        reference = None
        if by_reference:
            reference = posixpath.join(remote_root, key) if remote_root else key
        items.append(Item(key, path, label, reference))
    return items, skipped


def pack(items: Sequence[Item], batch_size: int, limit: int = RUN_LIMIT_BYTES) -> tuple[list[list[Item]], list[Item]]:
    """Group items, in order, into jobs of at most `batch_size` images and `limit` body bytes.

    Returns:
        (jobs, too_large): the items that alone are over the limit are not packed.
    """
    budget = limit - BODY_MARGIN
    jobs: list[list[Item]] = []
    too_large: list[Item] = []
    current: list[Item] = []
    size = 0
    for item in items:
        try:
            item_size = item.body_size()
        except OSError:
            item_size = 0  # unreadable: it fails with FILE_UNREADABLE when its job is built
        if item_size > budget:
            too_large.append(item)
            continue
        if current and (len(current) >= batch_size or size + item_size > budget):
            jobs.append(current)
            current, size = [], 0
        current.append(item)
        size += item_size
    if current:
        jobs.append(current)
    return jobs, too_large


def job_input(
    images: list[Any], adapter: str | None, top_k: int, op: str = "predict", fields: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A job's input: `predict` (with top_k, or with `fields` instead: a detector's threshold and
    max_detections), or `embed` (vectors as base64 float32, a fifth of the JSON)."""
    if op == "embed":
        body: dict[str, Any] = {"op": "embed", "images": images, "encoding_format": "base64"}
    else:
        body = {"images": images, **fields} if fields is not None else {"images": images, "top_k": top_k}
    if adapter:
        body["adapter"] = adapter
    return {"input": body}


def parse_error(error: str) -> tuple[str | None, str]:
    """(code, message) of a FAILED job's error string `CODE: message`; code None when uncoded
    (a crash, the SDK's traceback blob)."""
    match = _CODED.match(error.strip())
    return (match.group(1), match.group(2)) if match else (None, error.strip())


def failed_index(message: str, count: int) -> int | None:
    """Which image of the job a per-image error names (`images[3]: ...`), if any."""
    match = _ITEM_FIELD.match(message)
    if not match:
        return None
    if match.group(1) is None:
        return 0 if count == 1 else None
    index = int(match.group(1))
    return index if index < count else None


def record(item: Item, **fields: Any) -> dict[str, Any]:
    """One output line: every key always present, so pandas reads one column per key."""
    base = dict.fromkeys(RECORD_KEYS)
    base.update(path=item.key, true_label=item.true_label or None, **fields)
    return base


def failure(item: Item, code: str, error: str, adapter: str | None, job_id: str | None, attempt: int) -> dict:
    return record(item, adapter=adapter, job_id=job_id, attempt=attempt, code=code, error=error[:500])


def records_from_output(
    items: Sequence[Item], output: Any, adapter: str | None, job_id: str | None, attempt: int
) -> list[dict[str, Any]]:
    """One record per image from a COMPLETED job's output (a worker success answer): a prediction's
    label, score and top_k, a detector's list of detections, or an embedding (as a list of floats)."""
    vectors = output.get("embeddings") if isinstance(output, dict) else None
    if isinstance(vectors, list) and len(vectors) == len(items):
        from worker.tasks.embeddings import decode

        used = output.get("adapter", adapter)
        return [
            record(item, embedding=decode(v).tolist(), adapter=used, job_id=job_id, attempt=attempt)
            for item, v in zip(items, vectors)
        ]
    predictions = output.get("predictions") if isinstance(output, dict) else None
    if not isinstance(predictions, list) or len(predictions) != len(items):
        got = len(predictions) if isinstance(predictions, list) else "no"
        return [
            failure(i, LOST, f"answer has {got} predictions for {len(items)} images", adapter, job_id, attempt)
            for i in items
        ]
    used = output.get("adapter", adapter)
    if all(isinstance(p, list) for p in predictions):  # object-detection: [{"score", "label", "box"}] per image
        return [
            record(item, detections=p, adapter=used, job_id=job_id, attempt=attempt)
            for item, p in zip(items, predictions)
        ]
    return [
        record(
            item,
            label=p.get("label"),
            score=p.get("score"),
            top_k=p.get("top_k"),
            adapter=used,
            job_id=job_id,
            attempt=attempt,
        )
        for item, p in zip(items, predictions)
    ]
