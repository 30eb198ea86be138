"""The job input schema (pydantic v2): validated before any work, unknown keys rejected.

`parse_input` is pure: it takes `job["input"]` and returns a typed request or raises a
WorkerError naming the field. The JSON Schema published in schema/input.json is generated
from these models (`fastbackend schema`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictStr,
    Tag,
    ValidationError,
)

from worker.config import ADAPTER_NAME_PATTERN
from worker.errors import ErrorCode, WorkerError

_IMAGES_DOC = (
    "one image or a list: base64-encoded PNG, JPEG, WEBP, BMP, GIF or TIFF (optionally as a data: URL), "
    '{"url": "https://..."} (hosts the operator allows) or {"path": "..."} (under the operator\'s input root)'
)


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UrlImage(_Input):
    """An image fetched by the worker (off unless the operator allows hosts: worker/sources.py)."""

    url: StrictStr = Field(min_length=1, max_length=4096)


class PathImage(_Input):
    """An image file under the worker's input root, e.g. on a network volume (off unless set)."""

    path: StrictStr = Field(min_length=1, max_length=4096)


def _item_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "base64"
    if isinstance(value, dict | UrlImage | PathImage):
        keys = set(value) if isinstance(value, dict) else set(type(value).model_fields)
        return {"url": "url-item", "path": "path-item"}.get(next(iter(keys)) if len(keys) == 1 else "")
    return None


_ITEM_ERROR = 'an image is a base64 string, {"url": "..."} or {"path": "..."}'
ImageItem = Annotated[
    Union[
        Annotated[StrictStr, Tag("base64")],
        Annotated[UrlImage, Tag("url-item")],
        Annotated[PathImage, Tag("path-item")],
    ],
    Discriminator(_item_kind, custom_error_type="image_item", custom_error_message=_ITEM_ERROR),
]
Images = Annotated[
    Union[Annotated[ImageItem, Tag("one")], Annotated[list[ImageItem], Field(min_length=1), Tag("list")]],
    Discriminator(lambda v: "list" if isinstance(v, list) else "one"),
]
_UNION_TAGS = ("str", "list[str]", "base64", "url-item", "path-item", "one", "list")


class ImagesInput(_Input):
    """The shared images input: the images of a job and the adapter to run them through."""

    images: Images = Field(description=_IMAGES_DOC)
    adapter: StrictStr | None = Field(
        None, pattern=ADAPTER_NAME_PATTERN, description="adapter name from the `adapters` op; omitted = the base model"
    )


class PredictInput(ImagesInput):
    """`predict` on the shared images input: each task's request (worker/tasks) extends it with the
    fields of its own stages; the served task's request is the one `parse_input` validates."""

    op: Literal["predict"] = "predict"  # the one op with a default: DEFAULT_OP below


class EmbedOptions(_Input):
    """How embeddings are returned (the `embed` op, and `predict` of image-feature-extraction)."""

    normalize: StrictBool = Field(False, description="L2-normalise each vector")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: a JSON list per image; base64: the vector as little-endian float32, base64"
    )


class EmbedInput(ImagesInput, EmbedOptions):
    """One vector per image from the served model (a classifier's backbone too, with its adapter)."""

    op: Literal["embed"]


class PreprocessInput(_Input):
    """Run only decoding and preprocessing; report what the model would receive."""

    op: Literal["preprocess"]
    images: Images = Field(description=_IMAGES_DOC)
    return_pixels: StrictBool = Field(False, description="also return the pixel values (can be large)")


class EchoInput(_Input):
    """Return `payload` unchanged: checks a client's encoding and the round trip."""

    op: Literal["echo"]
    payload: Any = Field(None, description="any JSON value; answered back unchanged")


class AdaptersInput(_Input):
    """List the adapters this worker can serve: name, task, description, whether loaded."""

    op: Literal["adapters"]


class HealthInput(_Input):
    """Readiness, device, startup time by stage, the adapter cache and the limits in force."""

    op: Literal["health"]


class MetricsInput(_Input):
    """Uptime, jobs by op and status, errors by code, latency percentiles per op, cache counters, memory."""

    op: Literal["metrics"]


class PingInput(_Input):
    """Answer `pong`: the cheapest round trip through the queue."""

    op: Literal["ping"]


# The op list: each request model names its op in its `op` Literal, and nowhere else.
REQUESTS: tuple[type[_Input], ...] = (
    PredictInput,
    EmbedInput,
    PreprocessInput,
    AdaptersInput,
    HealthInput,
    MetricsInput,
    PingInput,
    EchoInput,
)
MODELS: dict[str, type[_Input]] = {get_args(m.model_fields["op"].annotation)[0]: m for m in REQUESTS}
OPS: tuple[str, ...] = tuple(MODELS)
DEFAULT_OP: str = PredictInput.model_fields["op"].default


def requested_op(raw: Any) -> Any:
    """The op a job input asks for (DEFAULT_OP when it names none); not yet validated."""
    return raw.get("op", DEFAULT_OP) if isinstance(raw, dict) else None


def _field_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _describe(error: dict[str, Any]) -> tuple[str, str]:
    # For a union (`images`), pydantic adds the branch type to the location; drop it.
    loc = tuple(p for p in error["loc"] if p not in _UNION_TAGS)
    field = _field_path(loc) or "input"
    if error["type"] == "extra_forbidden":
        return field, f"unknown key {field!r}"
    return field, f"{field}: {error['msg']}"


def parse_input(raw: Any, predict: type[PredictInput] = PredictInput, embed: type[EmbedInput] = EmbedInput) -> _Input:
    """Validate `job["input"]` into one of the request models; `predict` and `embed` are the served
    task's requests for those ops.

    Raises:
        WorkerError: INVALID_INPUT (naming the field) or UNKNOWN_OP.
    """
    if not isinstance(raw, dict):
        raise WorkerError(
            ErrorCode.INVALID_INPUT, f"input must be a JSON object, got {type(raw).__name__}", field="input"
        )
    op = requested_op(raw)
    if not isinstance(op, str):
        raise WorkerError(ErrorCode.INVALID_INPUT, f"op must be a string, got {type(op).__name__}", field="op")
    model = {DEFAULT_OP: predict, "embed": embed}.get(op) or MODELS.get(op)
    if model is None:
        shown = op if len(op) <= 40 else op[:40] + "..."
        raise WorkerError(ErrorCode.UNKNOWN_OP, f"unknown op {shown!r}; known: {', '.join(OPS)}", field="op")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        # The deepest location is the most precise (for `images`, the failing list item).
        errors = exc.errors(include_url=False, include_input=False)

        def precision(e: dict[str, Any]) -> tuple[int, bool]:
            given = raw.get(e["loc"][0]) if e["loc"] else None
            return len(e["loc"]), isinstance(given, list) == ("list" in e["loc"])

        field, message = _describe(max(errors, key=precision))
        raise WorkerError(ErrorCode.INVALID_INPUT, message, field=field) from None


def image_list(request: ImagesInput | PreprocessInput) -> list[str | UrlImage | PathImage]:
    return list(request.images) if isinstance(request.images, list) else [request.images]


def json_schema(predict: type[PredictInput] = PredictInput) -> dict[str, Any]:
    """The published JSON Schema of `job["input"]`, with `predict` as the served task's request."""
    from pydantic import TypeAdapter

    schema = TypeAdapter(Union[(predict, *REQUESTS[1:])]).json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "FastBackend job input"
    schema["description"] = (
        f"The `input` object of a RunPod job sent to a FastBackend worker. `op` defaults to {DEFAULT_OP}."
    )
    return schema
