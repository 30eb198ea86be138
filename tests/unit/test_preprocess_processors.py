"""The runtime's processor engine (worker/processors.py, worker/pixels.py) against transformers' own image
processors (PIL backend), model-free.

Each case is a processor type with the fields a real model folder holds; random 8-bit images of
awkward shapes (portrait, very wide, smaller than the crop) go through both. The numbers must agree
to 1e-6 in normalised units (the steps are the same numpy operations), and a processor setting
transformers itself refuses, or one this code does not reproduce, is refused naming the field.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from worker.pixels import preprocess_image, to_model_mode
from worker.processors import PROCESSOR_DEFAULTS, build_preprocess_config

CASES = {
    "vit-64": ("ViTImageProcessor", {"size": {"height": 64, "width": 48}}, 3),
    "vit-defaults": ("ViTImageProcessor", {}, 3),
    "vit-gray": ("ViTImageProcessor", {"size": 16, "image_mean": [0.5], "image_std": [0.5]}, 1),
    "deit": ("DeiTImageProcessor", {"size": {"height": 72, "width": 72}, "crop_size": 64}, 3),
    "beit-crop": ("BeitImageProcessor", {"size": 40, "do_center_crop": True, "crop_size": 32, "resample": 2}, 3),
    "convnext-crop_pct": ("ConvNextImageProcessor", {"size": {"shortest_edge": 64}, "crop_pct": 0.875}, 3),
    "convnext-384": ("ConvNextImageProcessor", {"size": {"shortest_edge": 384}}, 3),
    "convnext-int": ("ConvNextImageProcessor", {"size": 96, "crop_pct": 0.9, "resample": 0}, 3),
    "bit-dinov2": ("BitImageProcessor", {"size": {"shortest_edge": 72}, "crop_size": {"height": 64, "width": 64}}, 3),
    "clip": ("CLIPImageProcessor", {"size": {"shortest_edge": 64}, "crop_size": 64}, 3),
    "clip-square": ("CLIPImageProcessor", {"size": {"shortest_edge": 48}, "crop_size": 48, "use_square_size": True}, 3),
    "shortest+longest": (
        "BitImageProcessor",
        {"size": {"shortest_edge": 64, "longest_edge": 80}, "crop_size": 64, "resample": 1},
        3,
    ),
    "efficientnet": ("EfficientNetImageProcessor", {"size": 60, "rescale_offset": True, "do_center_crop": True}, 3),
    "segformer-defaults": ("SegformerImageProcessor", {}, 3),
    "segformer-64-bicubic": ("SegformerImageProcessor", {"size": {"height": 64, "width": 48}, "resample": 3}, 3),
    "segformer-reduce-labels": ("SegformerImageProcessor", {"size": 32, "do_reduce_labels": True}, 3),
    "no-rescale": ("ViTImageProcessor", {"size": 32, "do_rescale": False, "image_mean": [127, 127, 127]}, 3),
    "crop-bigger-than-image": ("DeiTImageProcessor", {"size": 20, "crop_size": {"height": 30, "width": 24}}, 3),
}
SHAPES = [(37, 53), (120, 31), (31, 400), (8, 8)]  # (height, width)


def reference(kind: str, fields: dict):
    import transformers

    return getattr(transformers, f"{kind}Pil")(**fields)


@pytest.mark.parametrize("name", CASES)
def test_same_pixels_as_transformers(name):
    kind, fields, channels = CASES[name]
    config = build_preprocess_config({"image_processor_type": kind, **fields}, {"num_channels": channels})
    processor = reference(kind, fields)
    rng = np.random.default_rng(0)
    mode = "RGB" if channels == 3 else "L"
    for height, width in SHAPES:
        shape = (height, width, 3) if channels == 3 else (height, width)
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
        ours = preprocess_image(image, config)
        theirs = processor(image, return_tensors="np")["pixel_values"][0]
        assert ours.shape == theirs.shape == (channels, config.height, config.width), (name, height, width)
        assert np.abs(ours - theirs).max() <= 1e-6, (name, height, width, np.abs(ours - theirs).max())


def test_defaults_are_transformers_class_defaults():
    for kind, defaults in PROCESSOR_DEFAULTS.items():
        processor = reference(kind, {})
        for key, value in defaults.items():
            if key == "use_square_size":  # read by CLIPImageProcessor.__init__, not kept
                continue
            theirs = getattr(processor, key)
            theirs = dict(theirs) if hasattr(theirs, "keys") else theirs
            theirs = {k: v for k, v in theirs.items() if v is not None} if isinstance(theirs, dict) else theirs
            theirs = tuple(theirs) if isinstance(theirs, list) else theirs
            assert theirs == value, (kind, key, theirs, value)


REFUSED = {
    "longest_edge only": ({"size": {"longest_edge": 64}}, "size="),
    "max_height": ({"size": {"max_height": 64, "max_width": 64}}, "size="),
    "padding": ({"do_pad": True}, "do_pad"),
    "variable size": ({"size": {"shortest_edge": 64}}, "each image would keep its own size"),
    "unknown type": ({"image_processor_type": "SuperImageProcessor"}, "image_processor_type="),
    "mean for 1 channel": ({"image_mean": [0.5], "image_std": [0.5]}, "image_mean="),
    "resample": ({"resample": 9}, "resample="),
    "null resample": ({"resample": None}, "resample=None"),
    "null size": ({"size": None}, "size=None"),
    "null mean": ({"image_mean": None}, "image_mean=None"),
    "convnext null crop_pct": (
        {"image_processor_type": "ConvNextImageProcessor", "size": {"shortest_edge": 64}, "crop_pct": None},
        "crop_pct=None",
    ),
}


@pytest.mark.parametrize("name", REFUSED)
def test_unhonoured_fields_are_refused_by_name(name):
    fields, words = REFUSED[name]
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        build_preprocess_config({"image_processor_type": "ViTImageProcessor", **fields}, {"num_channels": 3})


def test_convnext_without_shortest_edge_is_refused():
    with pytest.raises(ValueError, match="shortest_edge"):
        fields = {"image_processor_type": "ConvNextImageProcessor", "size": 64, "default_to_square": True}
        build_preprocess_config(fields, {})


def test_rgba_is_composited_on_white_as_convert_to_rgb():
    from transformers.image_transforms import convert_to_rgb

    rgba = Image.fromarray(np.random.default_rng(1).integers(0, 256, (9, 7, 4), dtype=np.uint8), "RGBA")
    assert np.array_equal(np.asarray(to_model_mode(rgba, 3)), convert_to_rgb(rgba, return_numpy=True))


def test_a_refusal_calls_an_absent_field_absent_and_a_null_one_none():
    """ViT's processor has no center crop: the field is absent, not `do_center_crop=None` (issue 31.6)."""
    with pytest.raises(ValueError) as refused:
        build_preprocess_config({"image_processor_type": "ViTImageProcessor", "size": {"shortest_edge": 64}}, {})
    assert "do_center_crop absent" in str(refused.value) and "=None" not in str(refused.value)
    with pytest.raises(ValueError, match=r"do_center_crop=None"):
        fields = {"image_processor_type": "ViTImageProcessor", "size": {"shortest_edge": 64}, "do_center_crop": None}
        build_preprocess_config(fields, {})
