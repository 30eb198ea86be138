"""DETR-family image processors (PIL backend) reproduced: resize, rescale, normalise, pad, pixel mask.

`read_detection_processor(model_dir)` reads `preprocessor_config.json` into a frozen
`DetectionProcessor`; `prepare(image, processor)` turns one upright 8-bit RGB image into the float32
CxHxW `pixel_values`, the int64 HxW `pixel_mask` and the sizes the answer needs. Each step is
transformers' own (`models/{detr,conditional_detr,yolos,rt_detr}/image_processing_pil_*.py`): the resize
sizes of `get_size_with_aspect_ratio` (YOLOS: its own variant, both edges floored to multiples of
16), PIL's resize with the file's filter, rescale in float64 then float32, normalise in float32, and
zero padding at the bottom and right to `pad_size` with the mask 1 on the image.

Without `pad_size` the processor pads a batch to its largest image; the worker never batches
images of different shapes (see the package docstring), so an image is never padded and its mask
is all ones, exactly as the processor and the pipeline give it for the image alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from worker.errors import ModelLoadFailed
from worker.pixels import rescale_and_normalize

PROCESSOR_FILE = "preprocessor_config.json"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)  # transformers' IMAGENET_DEFAULT_MEAN and _STD
_IMAGENET_STD = (0.229, 0.224, 0.225)
_BILINEAR = 2
_LEGACY_MAX_SIZE = 1333  # DetrImageProcessor.__init__: an int `size` without `max_size` caps at 1333
# The class defaults shared by the supported processors (a field absent from the file takes these).
_DEFAULTS: dict[str, Any] = {
    "do_resize": True,
    "size": {"shortest_edge": 800, "longest_edge": 1333},
    "resample": _BILINEAR,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": _IMAGENET_MEAN,
    "image_std": _IMAGENET_STD,
    "do_pad": True,
    "pad_size": None,
    "do_convert_rgb": None,
}
# processor type -> the resize rule its `resize` applies to shortest_edge + longest_edge
PROCESSOR_RULES = {
    "DetrImageProcessor": "aspect",
    "ConditionalDetrImageProcessor": "aspect",
    "YolosImageProcessor": "aspect_mod16",
    "RTDetrImageProcessor": "aspect",
}
# Where a class's defaults differ from DETR's; RT-DETR also has no legacy int `size` + `max_size`.
_CLASS_DEFAULTS: dict[str, dict[str, Any]] = {
    "RTDetrImageProcessor": {"size": {"height": 640, "width": 640}, "do_normalize": False, "do_pad": False},
}
_LEGACY_SIZE = ("DetrImageProcessor", "ConditionalDetrImageProcessor", "YolosImageProcessor")
_MODEL_TYPE_PROCESSORS = {
    "detr": "DetrImageProcessor",
    "conditional_detr": "ConditionalDetrImageProcessor",
    "yolos": "YolosImageProcessor",
    "rt_detr": "RTDetrImageProcessor",
}
# Fields that only concern annotations (training targets) or the output container: no pixel changes.
_IGNORED = {
    "format",
    "do_convert_annotations",
    "return_segmentation_masks",
    "image_processor_type",
    "processor_class",
    "feature_extractor_type",
    "return_tensors",
    "data_format",
    "input_data_format",
    "device",
    "disable_grouping",
    "model_input_names",
    "backend",
    "default_to_square",
}
_SIZE_KEYS = ({"shortest_edge", "longest_edge"}, {"height", "width"}, {"max_height", "max_width"})


class Refused(ValueError):
    """A processor field this worker does not reproduce exactly; the message names the field."""


@dataclass(frozen=True)
class DetectionProcessor:
    """A DETR-family image processor, resolved: every step that changes pixels.

    `resize` is "none", "exact" (to `size` = (h, w)), "aspect" (shortest edge to size[0], the
    longest capped at size[1]), "aspect_mod16" (YOLOS's variant) or "max_hw" (the largest size
    within size = (max_h, max_w), aspect kept). `pad_size` (h, w) pads every image to it.
    """

    processor: str
    resize: str
    size: tuple[int, int]
    resample: int
    rescale_factor: float | None  # None: no rescale
    mean: tuple[float, float, float] | None  # None: no normalisation
    std: tuple[float, float, float] | None
    pad_size: tuple[int, int] | None


@dataclass(frozen=True)
class Prepared:
    """One image's model inputs and the sizes its answer needs (all (height, width))."""

    pixel_values: np.ndarray  # float32 (3, H, W)
    pixel_mask: np.ndarray  # int64 (H, W)
    original_size: tuple[int, int]  # the upright original: the answer's boxes are in its pixels
    resized_size: tuple[int, int]


def _processor_type(fields: dict, model_config: dict) -> str:
    kind = fields.get("image_processor_type") or ""
    if not kind and fields.get("feature_extractor_type"):
        kind = fields["feature_extractor_type"].replace("FeatureExtractor", "ImageProcessor")
    if not kind:
        kind = _MODEL_TYPE_PROCESSORS.get(model_config.get("model_type", ""), "")
    kind = kind.removesuffix("Fast").removesuffix("Pil")
    if kind not in PROCESSOR_RULES:
        raise Refused(
            f"image_processor_type={kind or None!r}: not a supported detection processor "
            f"(supported: {', '.join(PROCESSOR_RULES)})"
        )
    return kind


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _size(kind: str, fields: dict) -> dict[str, int]:
    """The size dict as DetrImageProcessor.__init__ builds it (an int is a shortest edge, capped by max_size)."""
    if "size" not in fields or fields["size"] is None:
        return dict(_CLASS_DEFAULTS.get(kind, {}).get("size", _DEFAULTS["size"]))
    size, max_size = fields["size"], fields.get("max_size", _LEGACY_MAX_SIZE)
    if _positive_int(size) and kind not in _LEGACY_SIZE:
        raise Refused(f"size={size!r}: {kind} takes a size dict (transformers refuses an int too)")
    if _positive_int(size):
        if max_size is None:
            raise Refused(f"size={size!r} with max_size=null: a shortest edge alone is refused by transformers too")
        return {"shortest_edge": size, "longest_edge": max_size}
    if isinstance(size, (list, tuple)) and len(size) == 2:
        size = {"height": size[0], "width": size[1]}
    if not isinstance(size, dict) or {k for k, v in size.items() if v is not None} not in _SIZE_KEYS:
        raise Refused(f"size={size!r}: needs shortest_edge+longest_edge, height+width or max_height+max_width")
    size = {k: v for k, v in size.items() if v is not None}
    if not all(_positive_int(v) for v in size.values()):
        raise Refused(f"size={size!r}: sizes must be positive integers")
    return size


def _stats(fields: dict, key: str) -> tuple[float, float, float]:
    value = fields.get(key)
    values = [value] * 3 if isinstance(value, (int, float)) and not isinstance(value, bool) else list(value or [])
    if len(values) != 3 or not all(isinstance(v, (int, float)) for v in values):
        raise Refused(f"{key}={value!r}: needs 3 numbers (one per RGB channel)")
    return tuple(float(v) for v in values)  # type: ignore[return-value]


def build_detection_processor(fields: dict, model_config: dict) -> DetectionProcessor:
    """The DetectionProcessor of a processor's fields (preprocessor_config.json) and the model's config.

    Raises:
        Refused: a processor type or field this code does not reproduce exactly (the message names it).
    """
    kind = _processor_type(fields, model_config)
    if int(model_config.get("num_channels", 3)) != 3:
        raise Refused(f"num_channels={model_config.get('num_channels')!r}: detection models here take RGB")
    unknown = sorted(set(fields) - set(_DEFAULTS) - _IGNORED - {"max_size", "pad_and_return_pixel_mask"})
    if unknown:
        raise Refused(f"{unknown[0]}={fields[unknown[0]]!r}: a field this worker does not reproduce")
    values = {**_DEFAULTS, **_CLASS_DEFAULTS.get(kind, {}), **fields}
    if "do_pad" not in fields and "pad_and_return_pixel_mask" in fields:
        values["do_pad"] = fields["pad_and_return_pixel_mask"]
    resize, size = "none", (0, 0)
    if values["do_resize"]:
        sizes = _size(kind, fields)
        if "shortest_edge" in sizes:
            resize, size = PROCESSOR_RULES[kind], (sizes["shortest_edge"], sizes["longest_edge"])
        elif "height" in sizes:
            resize, size = "exact", (sizes["height"], sizes["width"])
        else:
            resize, size = "max_hw", (sizes["max_height"], sizes["max_width"])
    resample = values["resample"]
    if not (isinstance(resample, int) and not isinstance(resample, bool) and 0 <= resample <= 5):
        raise Refused(f"resample={resample!r}: not a PIL resampling filter (0-5)")
    rescale = values["rescale_factor"] if values["do_rescale"] else None
    if rescale is not None and not (isinstance(rescale, (int, float)) and not isinstance(rescale, bool)):
        raise Refused(f"rescale_factor={rescale!r}: not a number")
    normalize = bool(values["do_normalize"])
    pad_size = None
    if values["do_pad"] and values["pad_size"] is not None:
        pad = values["pad_size"]
        if not (isinstance(pad, dict) and set(pad) == {"height", "width"} and all(map(_positive_int, pad.values()))):
            raise Refused(f"pad_size={pad!r}: needs positive height and width")
        pad_size = (pad["height"], pad["width"])
    return DetectionProcessor(
        processor=kind,
        resize=resize,
        size=size,
        resample=resample,
        rescale_factor=None if rescale is None else float(rescale),
        mean=_stats(values, "image_mean") if normalize else None,
        std=_stats(values, "image_std") if normalize else None,
        pad_size=pad_size,
    )


def read_detection_processor(model_dir: str | Path) -> DetectionProcessor:
    """Read the model's own detection image processor from its folder.

    Raises:
        ModelLoadFailed: a file is missing or unreadable, or a field is not reproduced (named).
    """
    model_dir = Path(model_dir)
    files = {name: model_dir / name for name in ("config.json", PROCESSOR_FILE)}
    loaded = {}
    for name, path in files.items():
        try:
            loaded[name] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadFailed(f"{path}: unreadable ({exc})") from None
    try:
        return build_detection_processor(loaded[PROCESSOR_FILE], loaded["config.json"])
    except Refused as exc:
        raise ModelLoadFailed(f"{files[PROCESSOR_FILE]}: {exc}") from None


def _aspect(height: int, width: int, edge: int, longest: int) -> tuple[int, int]:
    """transformers' get_size_with_aspect_ratio (image_transforms.py)."""
    raw = None
    if max(height, width) / min(height, width) * edge > longest:
        raw = longest * min(height, width) / max(height, width)
        edge = int(round(raw))
    scale = raw if raw is not None else edge
    if (height <= width and height == edge) or (width <= height and width == edge):
        return height, width
    if width < height:
        return int(scale * height / width), edge
    return edge, int(scale * width / height)


def _aspect_mod16(height: int, width: int, edge: int, longest: int) -> tuple[int, int]:
    """YOLOS's get_size_with_aspect_ratio_yolos: the width-first test, then both edges floored to x16."""
    raw = None
    if max(height, width) / min(height, width) * edge > longest:
        raw = longest * min(height, width) / max(height, width)
        edge = int(round(raw))
    scale = raw if raw is not None else edge
    if width < height:
        out_h, out_w = int(scale * height / width), edge
    elif (height <= width and height == edge) or (width <= height and width == edge):
        out_h, out_w = height, width
    else:
        out_h, out_w = edge, int(scale * width / height)
    return out_h - out_h % 16, out_w - out_w % 16


def resized_size(height: int, width: int, processor: DetectionProcessor) -> tuple[int, int]:
    """(height, width) of an image after the processor's resize step."""
    if processor.resize == "none":
        return height, width
    if processor.resize == "exact":
        return processor.size
    if processor.resize == "max_hw":  # get_image_size_for_max_height_width
        scale = min(processor.size[0] / height, processor.size[1] / width)
        return int(height * scale), int(width * scale)
    rule = _aspect_mod16 if processor.resize == "aspect_mod16" else _aspect
    return rule(height, width, *processor.size)


def prepare(image: Image.Image, processor: DetectionProcessor) -> Prepared:
    """One upright 8-bit image to its pixel_values and pixel_mask, step for step as the processor.

    Raises:
        ValueError: the resized image is larger than the processor's pad_size (transformers refuses it too),
            or it is resized to nothing.
    """
    image = image if image.mode == "RGB" else image.convert("RGB")
    original = (image.height, image.width)
    height, width = resized_size(*original, processor)
    if height < 1 or width < 1:
        raise ValueError(f"a {original[1]}x{original[0]} image resizes to {width}x{height} pixels")
    if (height, width) != original:
        image = image.resize((width, height), resample=processor.resample)
    chw = np.asarray(image).transpose(2, 0, 1)
    x = rescale_and_normalize(chw, processor.rescale_factor, processor.mean, processor.std)
    padded = processor.pad_size or (height, width)
    if padded[0] < height or padded[1] < width:
        raise ValueError(f"a {width}x{height} resized image is larger than pad_size {padded[1]}x{padded[0]}")
    pixels = np.zeros((3, *padded), np.float32)
    pixels[:, :height, :width] = x
    mask = np.zeros(padded, np.int64)
    mask[:height, :width] = 1
    return Prepared(pixel_values=pixels, pixel_mask=mask, original_size=original, resized_size=(height, width))
