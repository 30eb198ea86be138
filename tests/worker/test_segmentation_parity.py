"""Segmentation answers against transformers' own `image-segmentation` pipeline, in process.

For a tiny random SegFormer and BEiT (built from configs, each with its processor saved), on
scikit-learn's photos and their variants: the worker's preprocessing (worker/processors.py, worker/pixels.py)
equals AutoImageProcessor's PIL backend, and the masks built by worker/segmentation from the
logits equal the pipeline's (same labels in the same order, equal on >= 99.9% of pixels) at the
upright original size. The other variants, 12 MP ones included, run under `make test-full`.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fixtures.photos import variants
from fixtures.segmenters import SEGMENTERS, build
from PIL import Image

FAST = ["china", "china-gray"]
FULL = ["flower", "flower-portrait", "flower-wide", "china-small", "china-12mp", "flower-12mp-portrait"]


@pytest.fixture(scope="module", params=list(SEGMENTERS))
def segmenter(request, tmp_path_factory):
    from transformers import AutoImageProcessor, pipeline

    from worker.processors import read_preprocess_config
    from worker.segmentation.stages import load_model

    folder = build(request.param, tmp_path_factory.mktemp(request.param))
    model, labels = load_model(folder, "cpu", "float32")
    return {
        "config": read_preprocess_config(folder),
        "processor": AutoImageProcessor.from_pretrained(folder, backend="pil"),
        "model": model,
        "labels": labels,
        "pipeline": pipeline("image-segmentation", model=str(folder)),
    }


def _check(segmenter, photo: str) -> None:
    from worker.pixels import preprocess_image
    from worker.segmentation.stages import SegmentationOptions, answers, forward_logits

    image = variants("12mp" in photo)[photo]
    rgb = image.convert("RGB")  # the pipeline's load_image, and the worker's decode for 3 channels
    ours = preprocess_image(rgb, segmenter["config"])
    theirs = segmenter["processor"](rgb, return_tensors="np")["pixel_values"][0]
    assert float(np.abs(ours - theirs).max()) <= 1e-3, photo
    logits = forward_logits(segmenter["model"], ours[None], None)
    answer = answers(logits, [(rgb.height, rgb.width)], SegmentationOptions(), segmenter["labels"])[0]
    reference = segmenter["pipeline"](image)
    assert [a["label"] for a in answer] == [r["label"] for r in reference], photo
    for entry, expected in zip(answer, reference):
        mask = Image.open(io.BytesIO(base64.b64decode(entry["mask"])))
        assert entry["score"] is None and mask.mode == "L" and mask.size == expected["mask"].size
        assert (np.array(mask) == np.array(expected["mask"])).mean() >= 0.999, (photo, entry["label"])


@pytest.mark.parametrize("photo", FAST)
def test_masks_equal_the_pipelines(segmenter, photo):
    _check(segmenter, photo)


@pytest.mark.full
@pytest.mark.parametrize("photo", FULL)
def test_masks_of_every_variant_equal_the_pipelines(segmenter, photo):
    _check(segmenter, photo)
