"""One error shape with stable codes, and the one place exceptions become codes."""

from __future__ import annotations

import enum
import json
import time
from typing import Any


class ErrorCode(str, enum.Enum):
    """Stable, machine-readable error codes. Never rename one: clients match on them."""

    INVALID_INPUT = "INVALID_INPUT"
    UNKNOWN_OP = "UNKNOWN_OP"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    IMAGE_DECODE_FAILED = "IMAGE_DECODE_FAILED"
    IMAGE_TOO_LARGE = "IMAGE_TOO_LARGE"
    IMAGE_SOURCE_NOT_ALLOWED = "IMAGE_SOURCE_NOT_ALLOWED"  # a url/path item the operator's rules refuse
    IMAGE_FETCH_FAILED = "IMAGE_FETCH_FAILED"  # an allowed url/path item that could not be read
    BATCH_TOO_LARGE = "BATCH_TOO_LARGE"
    UNKNOWN_ADAPTER = "UNKNOWN_ADAPTER"
    ADAPTER_INCOMPATIBLE = "ADAPTER_INCOMPATIBLE"
    MODEL_LOAD_FAILED = "MODEL_LOAD_FAILED"
    CONFIG_INVALID = "CONFIG_INVALID"  # setup only (a ConfigError): the worker exits before taking a job
    MODEL_NOT_READY = "MODEL_NOT_READY"
    RATE_LIMITED = "RATE_LIMITED"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    OUTPUT_TOO_LARGE = "OUTPUT_TOO_LARGE"
    INTERNAL = "INTERNAL"


# Codes after which the worker process should not take another job: RunPod is
# asked to recycle it (`refresh_worker`).
FATAL_CODES = frozenset({ErrorCode.OUT_OF_MEMORY})


class WorkerError(Exception):
    """An error with a stable code; `field` names the input field at fault, if any."""

    def __init__(self, code: ErrorCode, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.field = field

    @property
    def fatal(self) -> bool:
        return self.code in FATAL_CODES

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"


class ModelLoadFailed(WorkerError):
    """The base model (or its preprocessing config) cannot be loaded; names the file."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.MODEL_LOAD_FAILED, message)


class AdapterIncompatible(WorkerError):
    """An adapter whose weights do not fit the base model; names the file."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.ADAPTER_INCOMPATIBLE, message)


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    return name == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def classify(exc: BaseException) -> WorkerError:
    """Map any exception to a WorkerError. The only place exceptions get codes."""
    if isinstance(exc, WorkerError):
        return exc
    if _is_out_of_memory(exc):
        return WorkerError(ErrorCode.OUT_OF_MEMORY, f"out of memory: {type(exc).__name__}")
    # Internal errors name the exception type but not its text, which may echo input.
    return WorkerError(ErrorCode.INTERNAL, f"unexpected {type(exc).__name__}; see the worker log")


# Encoded (JSON) bytes kept of each client-influenced string in an error answer: a message can quote
# input (an unknown 10 MB key), and an error must never be the answer too large to post. With these,
# every error answer stays under ERROR_BODY_MAX_BYTES, the floor of FASTBACKEND_MAX_OUTPUT_BYTES.
_MESSAGE_BYTES, _NAME_BYTES = 600, 120
ERROR_BODY_MAX_BYTES = 2048


def clip(text: str, max_bytes: int) -> str:
    """`text` cut so that its JSON encoding (escapes included) fits `max_bytes`, marked with '...'."""
    if len(text) <= max_bytes // 6 or len(json.dumps(text)) - 2 <= max_bytes:
        return text
    cut = text[:max_bytes]
    while len(json.dumps(cut)) - 2 > max_bytes - 3:
        cut = cut[: len(cut) * 3 // 4]
    return cut + "..."


def error_response(error: WorkerError, job_id: str | None) -> dict[str, Any]:
    """The one error shape: `error` is a string (RunPod counts the job FAILED from it)."""
    message = clip(error.message, _MESSAGE_BYTES)
    body: dict[str, Any] = {
        "status": "error",
        "error": f"{error.code.value}: {message}",
        "code": error.code.value,
        "message": message,
        "job_id": clip(job_id, _NAME_BYTES) if job_id is not None else None,
        "timestamp": time.time(),
    }
    if error.field is not None:
        body["field"] = clip(error.field, _NAME_BYTES)
    if error.fatal:
        body["refresh_worker"] = True
    return body
