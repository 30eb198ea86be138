"""One error shape with stable codes, and the one place exceptions become codes."""

from __future__ import annotations

import enum
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


def error_response(error: WorkerError, job_id: str | None) -> dict[str, Any]:
    """The one error shape: `error` is a string (RunPod counts the job FAILED from it)."""
    body: dict[str, Any] = {
        "status": "error",
        "error": str(error),
        "code": error.code.value,
        "message": error.message,
        "job_id": job_id,
        "timestamp": time.time(),
    }
    if error.field is not None:
        body["field"] = error.field
    if error.fatal:
        body["refresh_worker"] = True
    return body
