"""The model's own image processor, read from its folder: which pixel steps the worker applies.

transformers' `AutoImageProcessor` (PIL backend) picks a processor class from
`preprocessor_config.json` (or `config.json`'s model_type) and fills every field the file leaves out
with that class's defaults. This module does the same for the processors it reproduces exactly
(PROCESSOR_DEFAULTS) and resolves them into one `PreprocessConfig`: the resize rule and its size,
the filter, the crops, rescale and normalisation. A type or a field it cannot reproduce exactly is
refused at setup, naming the file and the field: the worker never serves approximately
preprocessed pixels. `worker.pixels` applies a PreprocessConfig to an image.

This is tested mechanism (tests/unit/test_preprocess_processors.py checks it against transformers'
own processors), not something a user edits: the choices a user makes about pixels, the training
augmentation, are in notebooks/01_preprocess.ipynb.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.errors import ModelLoadFailed

PROCESSOR_FILE = "preprocessor_config.json"
_HALF = (0.5, 0.5, 0.5)  # transformers' IMAGENET_STANDARD_MEAN and _STD
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # IMAGENET_DEFAULT_*
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_BILINEAR, _BICUBIC = 2, 3  # PIL's resample codes, as preprocessor_config.json stores them
_SQUARE_224 = {"height": 224, "width": 224}
_DO = {"do_resize": True, "do_rescale": True, "do_normalize": True}
_HALVES = {**_DO, "image_mean": _HALF, "image_std": _HALF}
# The tables keep one processor per line.
# fmt: off
_CLIP = {
    **_DO, "do_center_crop": True, "resample": _BICUBIC, "size": {"shortest_edge": 224}, "default_to_square": False,
    "crop_size": _SQUARE_224, "image_mean": _CLIP_MEAN, "image_std": _CLIP_STD, "do_convert_rgb": True,
}

# The class defaults of each supported processor in transformers (models/*/image_processing_pil_*.py): a
# field absent from preprocessor_config.json takes these values. Keys beyond the common fields are the
# processor's own (crop_pct, ...).
PROCESSOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "ViTImageProcessor": {**_HALVES, "resample": _BILINEAR, "size": _SQUARE_224},
    "DeiTImageProcessor": {
        **_HALVES, "do_center_crop": True, "resample": _BICUBIC, "size": {"height": 256, "width": 256},
        "crop_size": _SQUARE_224,
    },
    "BeitImageProcessor": {
        **_HALVES, "do_center_crop": False, "resample": _BICUBIC, "size": _SQUARE_224, "crop_size": _SQUARE_224,
        "do_reduce_labels": False,
    },
    "ConvNextImageProcessor": {
        **_HALVES, "resample": _BICUBIC, "size": {"shortest_edge": 384}, "default_to_square": False,
        "crop_pct": 224 / 256,
    },
    "SegformerImageProcessor": {
        **_DO, "image_mean": _IMAGENET_MEAN, "image_std": _IMAGENET_STD, "resample": _BILINEAR,
        "size": {"height": 512, "width": 512}, "do_reduce_labels": False,
    },
    "BitImageProcessor": _CLIP,
    "CLIPImageProcessor": {**_CLIP, "use_square_size": False},
    "SiglipImageProcessor": {
        **_HALVES, "resample": _BICUBIC, "size": _SQUARE_224, "default_to_square": False, "do_convert_rgb": True,
    },
    "EfficientNetImageProcessor": {
        **_HALVES, "do_center_crop": False, "resample": _BICUBIC, "size": {"height": 346, "width": 346},
        "crop_size": {"height": 289, "width": 289}, "rescale_offset": False, "include_top": True,
    },
}
# The fields every processor reads (transformers' ImagesKwargs). A field that is neither one of these nor
# one of its processor's own is ignored by transformers, and so here too.
_COMMON_FIELDS = (
    "do_convert_rgb", "do_resize", "size", "default_to_square", "crop_size", "resample", "do_rescale",
    "rescale_factor", "do_normalize", "image_mean", "image_std", "do_pad", "pad_size", "do_center_crop",
    "data_format", "input_data_format", "device", "return_tensors", "disable_grouping", "image_seq_length",
)
# When the file names no processor type, transformers picks one from config.json's model_type.
_MODEL_TYPE_PROCESSORS = {
    "vit": "ViTImageProcessor", "deit": "DeiTImageProcessor", "beit": "BeitImageProcessor",
    "swin": "ViTImageProcessor", "swinv2": "ViTImageProcessor", "convnext": "ConvNextImageProcessor",
    "convnextv2": "ConvNextImageProcessor", "resnet": "ConvNextImageProcessor", "regnet": "ConvNextImageProcessor",
    "segformer": "SegformerImageProcessor", "data2vec-vision": "BeitImageProcessor",
    "dinov2": "BitImageProcessor", "clip": "CLIPImageProcessor", "efficientnet": "EfficientNetImageProcessor",
    "siglip": "SiglipImageProcessor",
}
# fmt: on


@dataclass(frozen=True)
class PreprocessConfig:
    """The model's image processor, resolved: every step that changes pixels, in order.

    `height` x `width` is the fixed output size; `resize` is how an image gets there before
    any crop: "none", "exact" (stretch to `resize_size` = (h, w)), "shortest_edge" (shortest
    edge to `resize_size[0]`, the longest capped at `resize_size[1]` when it is not 0, aspect
    kept) or "crop_pct" (ConvNeXt's: shortest edge to int(edge / crop_pct), then a crop).
    """

    height: int
    width: int
    num_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    processor: str = "ViTImageProcessor"
    resize: str = "exact"
    resize_size: tuple[int, int] = (0, 0)
    crop_pct: float = 1.0
    resample: int = _BILINEAR
    center_crop: tuple[int, int] | None = None
    rescale_factor: float | None = 1 / 255  # None: no rescale
    rescale_offset: bool = False
    normalize: bool = True
    include_top: bool = False  # EfficientNet: divide by std a second time

    def __post_init__(self) -> None:
        if self.normalize and not (len(self.mean) == len(self.std) == self.num_channels):
            raise ValueError(f"mean/std need {self.num_channels} values, got {self.mean} / {self.std}")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadFailed(f"{path}: unreadable ({exc})") from exc


class _Refused(ValueError):
    """A processor field this worker cannot reproduce exactly; the message names the field."""


def _field(values: dict, key: str) -> str:
    """A field as a refusal names it: `key=value` (a null is None), or `key absent` when neither the
    file nor the class defaults have it."""
    return f"{key}={values[key]!r}" if key in values else f"{key} absent"


def _processor_type(fields: dict, model_config: dict) -> str:
    """The processor class transformers would pick (its PIL backend), as AutoImageProcessor resolves it."""
    kind = fields.get("image_processor_type")
    if not kind and fields.get("feature_extractor_type"):
        kind = fields["feature_extractor_type"].replace("FeatureExtractor", "ImageProcessor")
    if not kind:
        kind = _MODEL_TYPE_PROCESSORS.get(model_config.get("model_type", ""), "")
        if not kind:
            raise _Refused(f"image_processor_type: missing, and model_type {model_config.get('model_type')!r} has none")
    kind = kind.removesuffix("Fast").removesuffix("Pil")
    if kind not in PROCESSOR_DEFAULTS:
        raise _Refused(f"image_processor_type={kind!r}: not supported (supported: {', '.join(PROCESSOR_DEFAULTS)})")
    return kind


def _resolve_fields(kind: str, fields: dict) -> dict[str, Any]:
    """The processor's effective settings: its class defaults, overridden by the file's fields.

    A null in the file is None, as in transformers (which then fails on a null size, mean or crop_pct).
    """
    known = (*_COMMON_FIELDS, *PROCESSOR_DEFAULTS[kind])
    values = {"default_to_square": True, "rescale_factor": 1 / 255, **PROCESSOR_DEFAULTS[kind]}
    values.update({k: v for k, v in fields.items() if k in known})
    if kind == "CLIPImageProcessor" and values.pop("use_square_size", False):
        # As CLIPImageProcessor.__init__ does: a square of the class default's edge, whatever `size` says.
        edge = PROCESSOR_DEFAULTS[kind]["size"]["shortest_edge"]
        values["size"] = {"height": edge, "width": edge}
    return values


def _size_dict(value: Any, default_to_square: bool, name: str) -> dict[str, int]:
    """transformers' get_size_dict: an int, (h, w) or a dict, as a dict of one accepted key set."""
    if isinstance(value, bool) or not isinstance(value, (int, list, tuple, dict)):
        raise _Refused(f"{name}={value!r}: not a size")
    if isinstance(value, int):
        value = {"height": value, "width": value} if default_to_square else {"shortest_edge": value}
    elif isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise _Refused(f"{name}={value!r}: a list size needs (height, width)")
        value = {"height": value[0], "width": value[1]}
    keys = set(value)
    if keys not in ({"height", "width"}, {"shortest_edge"}, {"shortest_edge", "longest_edge"}):
        raise _Refused(f"{name}={value!r}: keys {sorted(keys)} are not honoured (height+width, or shortest_edge)")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value.values()):
        raise _Refused(f"{name}={value!r}: sizes must be positive integers")
    return dict(value)


def _resize_plan(kind: str, values: dict) -> tuple[str, tuple[int, int], tuple[int, int] | None]:
    """(resize mode, its size, the fixed size it produces or None when it depends on the image)."""
    if not values.get("do_resize"):
        return "none", (0, 0), None
    size = _size_dict(values.get("size"), bool(values["default_to_square"]), "size")
    if kind == "ConvNextImageProcessor":
        if "shortest_edge" not in size:
            raise _Refused(f"size={size}: ConvNextImageProcessor needs shortest_edge (transformers refuses it too)")
        edge = size["shortest_edge"]
        if edge < 384 and not (isinstance(values.get("crop_pct"), (int, float)) and values["crop_pct"] > 0):
            raise _Refused(f"{_field(values, 'crop_pct')}: shortest_edge < 384 needs a positive crop_pct")
        if edge < 384:  # resize to edge / crop_pct, then crop edge x edge
            return "crop_pct", (edge, 0), (edge, edge)
        return "exact", (edge, edge), (edge, edge)
    if "height" in size:
        return "exact", (size["height"], size["width"]), (size["height"], size["width"])
    return "shortest_edge", (size["shortest_edge"], size.get("longest_edge", 0)), None


def _stats(values: dict, key: str, channels: int) -> tuple[float, ...]:
    value = values.get(key)
    stats = [value] * channels if isinstance(value, (int, float)) else list(value or [])
    if len(stats) != channels:
        raise _Refused(f"{key}={value!r}: {len(stats)} values for a {channels}-channel model")
    return tuple(float(v) for v in stats)


def _refuse_unsupported(values: dict, channels: int) -> None:
    if values.get("do_pad"):
        raise _Refused("do_pad=true: padding is not implemented")
    if values.get("data_format") not in (None, "channels_first"):
        raise _Refused(f"data_format={values['data_format']!r}: only channels_first")
    if values.get("do_convert_rgb") and channels != 3:
        raise _Refused(f"do_convert_rgb=true with a {channels}-channel model: transformers would feed 3 channels")
    if values.get("resample") is None and values.get("do_resize"):
        raise _Refused("resample=None: a resize needs a filter (transformers refuses it too)")
    values["resample"] = _BILINEAR if values.get("resample") is None else values["resample"]
    if not isinstance(values["resample"], int) or not 0 <= values["resample"] <= 5:
        raise _Refused(f"resample={values.get('resample')!r}: not a PIL resampling filter (0-5)")
    if values.get("do_rescale") and not isinstance(values.get("rescale_factor"), (int, float)):
        raise _Refused(f"{_field(values, 'rescale_factor')}: not a number")


def _model_channels(model_config: dict) -> int:
    """The model's input channels, from config.json (CLIP keeps it in vision_config)."""
    vision = model_config.get("vision_config") or {}
    return int(model_config.get("num_channels", vision.get("num_channels", 3)))


def build_preprocess_config(fields: dict, model_config: dict) -> PreprocessConfig:
    """The PreprocessConfig of a processor's fields (preprocessor_config.json) and the model's config.

    Raises:
        ValueError: a field, or the processor type, that this code does not reproduce exactly.
    """
    channels = _model_channels(model_config)
    kind = _processor_type(fields, model_config)
    values = _resolve_fields(kind, fields)
    _refuse_unsupported(values, channels)
    resize, resize_size, size = _resize_plan(kind, values)
    crop = None
    if values.get("do_center_crop"):
        crop_size = _size_dict(values.get("crop_size"), True, "crop_size")
        if "height" not in crop_size:
            raise _Refused(f"{_field(values, 'crop_size')}: a crop needs height and width")
        crop = size = (crop_size["height"], crop_size["width"])
    if size is None:
        raise _Refused(
            f"{_field(values, 'size')} with {_field(values, 'do_center_crop')}: each image would keep "
            "its own size; the worker batches images of one fixed size"
        )
    normalize = bool(values.get("do_normalize"))
    mean = _stats(values, "image_mean", channels) if normalize else (0.0,) * channels
    std = _stats(values, "image_std", channels) if normalize else (1.0,) * channels
    return PreprocessConfig(
        height=size[0],
        width=size[1],
        num_channels=channels,
        mean=mean,
        std=std,
        processor=kind,
        resize=resize,
        resize_size=resize_size,
        crop_pct=float(values.get("crop_pct") or 1.0),
        resample=values["resample"],
        center_crop=crop,
        rescale_factor=float(values["rescale_factor"]) if values.get("do_rescale") else None,
        rescale_offset=bool(values.get("rescale_offset")),
        normalize=normalize,
        include_top=bool(values.get("include_top")) and kind == "EfficientNetImageProcessor",
    )


def read_preprocess_config(model_dir: str | Path) -> PreprocessConfig:
    """Read how the model's own image processor prepares pixels, from the model folder.

    Args:
        model_dir: folder with `config.json` and `preprocessor_config.json`.

    Returns:
        The PreprocessConfig that reproduces the processor's PIL backend exactly.

    Raises:
        ModelLoadFailed: a file is missing or unreadable, or the processor uses a type or field this
            code does not reproduce exactly; the message names the file and the field.
    """
    model_dir = Path(model_dir)
    config_file, processor_file = model_dir / "config.json", model_dir / PROCESSOR_FILE
    if not config_file.is_file():
        raise ModelLoadFailed(f"{config_file}: missing (is the model folder right?)")
    if not processor_file.is_file():
        raise ModelLoadFailed(
            f"{processor_file}: missing; the worker preprocesses as the model's own image processor does "
            "(save it beside the model with AutoImageProcessor.save_pretrained)"
        )
    fields, model_config = _read_json(processor_file), _read_json(config_file)
    try:
        return build_preprocess_config(fields, model_config)
    except ValueError as exc:
        raise ModelLoadFailed(f"{processor_file}: {exc}") from None
