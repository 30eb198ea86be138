"""Detection pixels are the model's: worker.detection.processor against AutoImageProcessor (PIL backend).

Each processor case of tests/fixtures/detection.py (DETR, Conditional DETR, YOLOS and RT-DETR defaults,
legacy int size, height/width, max_height/max_width, pad_size, no normalisation) is saved as
`save_pretrained` writes it and read back both ways. scikit-learn's photos and their portrait,
grayscale, very wide, 12 MP and EXIF-rotated variants go through the worker's decode step; the
reference is AutoImageProcessor on the same upright image, alone, as the object-detection pipeline
calls it. `pixel_values` must agree within 1e-3 and `pixel_mask` exactly (where it makes one); `make test` runs three
cases, `make test-full` all of them.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from fixtures.detection import PROCESSOR_CASES, processor_folder
from fixtures.images import encode, exif_rotated
from fixtures.photos import variants

TOLERANCE = 1e-3
QUICK_CASES = ["detr-defaults", "detr-pad-size", "yolos-defaults", "rt-detr-defaults"]


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    images = variants(full=True)
    encoded = {name: encode(image, "JPEG", quality=90) for name, image in images.items()}
    encoded["china-exif-rotated"] = exif_rotated(images["china"], "JPEG", 6)
    encoded["flower-12mp-exif-rotated"] = exif_rotated(images["flower-12mp-portrait"], "JPEG", 8)
    return encoded


def _decoded(data: bytes):
    from worker.config import WorkerConfig
    from worker.decoding import decode_image

    limits = replace(WorkerConfig(), max_image_bytes=10**8, max_image_side=10**5, max_image_pixels=10**9)
    return decode_image(data, channels=3, limits=limits)


def _case_params() -> list:
    return [pytest.param(c, marks=() if c in QUICK_CASES else pytest.mark.full) for c in PROCESSOR_CASES]


@pytest.mark.parametrize("case", _case_params())
def test_pixels_and_mask_match_the_processor(case, photos, tmp_path) -> None:
    from transformers import AutoImageProcessor

    from worker.detection.processor import prepare, read_detection_processor

    folder = processor_folder(case, tmp_path)
    ours_config = read_detection_processor(folder)
    reference = AutoImageProcessor.from_pretrained(folder, backend="pil")
    for name, data in photos.items():
        image = _decoded(data)
        ours = prepare(image, ours_config)
        theirs = reference(image, return_tensors="np")
        assert ours.pixel_values.shape == theirs["pixel_values"].shape[1:], (case, name)
        assert float(np.abs(ours.pixel_values - theirs["pixel_values"][0]).max()) <= TOLERANCE, (case, name)
        if "pixel_mask" in theirs:  # RT-DETR (do_pad false) gives none; the worker's is then all ones
            assert np.array_equal(ours.pixel_mask, theirs["pixel_mask"][0]), (case, name)
        else:
            assert ours.pixel_mask.all()
        assert ours.original_size == (image.height, image.width)


def test_exif_rotated_photos_decode_upright(photos) -> None:
    """The answer's boxes are in upright pixels: the decode step turns a photo as exif_transpose does."""
    from PIL import Image, ImageOps

    for name in ("china-exif-rotated", "flower-12mp-exif-rotated"):
        import io

        upright = ImageOps.exif_transpose(Image.open(io.BytesIO(photos[name]))).convert("RGB")
        assert np.array_equal(np.asarray(_decoded(photos[name])), np.asarray(upright)), name
