"""RunPod's size limits, checked cheaply: before decoding, and without re-serialising input."""

from __future__ import annotations

import json
import math
from typing import Any

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
