"""One error shape with stable codes, and the one place exceptions become codes."""

from __future__ import annotations

import enum
import json
import time
from typing import Any


class ErrorCode(str, enum.Enum):
    """Stable, machine-readable error codes. Never rename one: clients match on them.

    Each member is `NAME = "NAME", "what it means"`: the meaning is the one description that
    docs/reference/errors.md is generated from (`fastbackend reference`).
    """

    meaning: str

    def __new__(cls, value: str, meaning: str = "") -> ErrorCode:
        member = str.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member

    INVALID_INPUT = (
        "INVALID_INPUT",
        "The job input does not fit the schema: a wrong type, an unknown key, a value out of range; `field` names it.",
    )
    UNKNOWN_OP = "UNKNOWN_OP", "`op` names no operation this worker serves; the message lists the known ones."
    PAYLOAD_TOO_LARGE = (
        "PAYLOAD_TOO_LARGE",
        "The job input is over FASTBACKEND_MAX_PAYLOAD_BYTES (RunPod's 10 MB /run limit by default).",
    )
    IMAGE_DECODE_FAILED = (
        "IMAGE_DECODE_FAILED",
        "An image is not valid base64 or not a readable PNG, JPEG, WEBP, BMP, GIF or TIFF; `field` names the item.",
    )
    IMAGE_TOO_LARGE = (
        "IMAGE_TOO_LARGE",
        "An image is over a byte, side, pixel or JPEG-scan limit (checked from its header, before decoding), "
        "the job's images together are over FASTBACKEND_MAX_JOB_PIXELS, or decoding ran past "
        "FASTBACKEND_MAX_DECODE_MS.",
    )
    IMAGE_SOURCE_NOT_ALLOWED = (
        "IMAGE_SOURCE_NOT_ALLOWED",
        "A `url` or `path` item the operator's rules refuse: URL or path images off, a host not in the "
        "allowlist, a private address, a path outside the input root.",
    )
    IMAGE_FETCH_FAILED = (
        "IMAGE_FETCH_FAILED",
        "An allowed `url` or `path` item could not be read (HTTP error, timeout, missing file).",
    )
    BATCH_TOO_LARGE = "BATCH_TOO_LARGE", "More images in one job than FASTBACKEND_MAX_BATCH."
    UNKNOWN_ADAPTER = (
        "UNKNOWN_ADAPTER",
        "`adapter` names no folder in FASTBACKEND_ADAPTERS_DIR (the `adapters` op lists them).",
    )
    ADAPTER_INCOMPATIBLE = (
        "ADAPTER_INCOMPATIBLE",
        "The adapter's weights do not fit the served base (keys, shapes, base model name or fingerprint); the"
        " message names the file.",
    )
    ADAPTER_INCOMPLETE = (
        "ADAPTER_INCOMPLETE",
        "The adapter's folder is still being written (a config that is not complete JSON, an "
        "adapter_model.safetensors shorter than its header says, or files that changed while read); "
        "nothing was loaded, the next request tries again. Publish by writing elsewhere, then renaming.",
    )
    MODEL_LOAD_FAILED = (
        "MODEL_LOAD_FAILED",
        "The base model or its processor cannot be loaded or reproduced exactly; at setup the worker exits "
        "with this one line, naming the file and the field.",
    )
    CONFIG_INVALID = (
        "CONFIG_INVALID",
        "A FASTBACKEND_* setting is invalid (setup only): the worker exits with this one line, naming the variable.",
    )
    MODEL_NOT_READY = "MODEL_NOT_READY", "A job arrived before setup finished; retry it."
    RATE_LIMITED = (
        "RATE_LIMITED",
        "The worker already holds as many jobs, images or pixels as its limits allow; retry later or on "
        "another worker.",
    )
    OUT_OF_MEMORY = "OUT_OF_MEMORY", "The job ran out of CPU or GPU memory; the worker asks RunPod to recycle it."
    OUTPUT_TOO_LARGE = (
        "OUTPUT_TOO_LARGE",
        "The answer would be over FASTBACKEND_MAX_OUTPUT_BYTES (RunPod fails to post results over about 20 "
        "MB); ask for fewer images or outputs.",
    )
    UPLOAD_FAILED = (
        "UPLOAD_FAILED",
        'The bucket of `"output": "upload"` refused an object or could not be reached; the message names the '
        "bucket and the storage error.",
    )
    INTERNAL = (
        "INTERNAL",
        "An unexpected failure; the message names the exception type and the worker log has the traceback.",
    )


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
