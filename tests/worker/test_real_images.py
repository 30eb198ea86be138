"""Real-world encodings of the same digit answer the same label as the plain 8-bit PNG (in-process worker)."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from fixtures import images as gen
from PIL import Image

from exported.demo_models import load_digit_task


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def digits():
    images, labels = load_digit_task("digits", "test")
    return images[:6], [str(v) for v in labels[:6]]


ENCODINGS = {
    "16-bit png": gen.png_16bit_gray,
    "float tiff": gen.tiff_float_gray,
    "exif-rotated png": lambda a: gen.exif_rotated(Image.fromarray(a), "PNG", 6),
    "exif-rotated jpeg": lambda a: gen.exif_rotated(Image.fromarray(a).resize((64, 64)), "JPEG", 6),
    "webp": lambda a: gen.encode(Image.fromarray(a), "WEBP", lossless=True),
    "bmp": lambda a: gen.encode(Image.fromarray(a), "BMP"),
    "gif": lambda a: gen.encode(Image.fromarray(a), "GIF"),
    "tiff": lambda a: gen.encode(Image.fromarray(a), "TIFF"),
    "rgb jpeg": lambda a: gen.encode(Image.fromarray(a).convert("RGB").resize((64, 64)), "JPEG", quality=95),
}


def labels_of(worker, images: list[str], adapter: str | None = None) -> list[str]:
    answer = worker.handle({"id": "real", "input": {"images": images, **({"adapter": adapter} if adapter else {})}})
    assert answer["status"] == "success", answer
    return [p["label"] for p in answer["predictions"]]


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_same_label_as_the_plain_png(worker, digits, name):
    images, _ = digits
    plain = labels_of(worker, [b64(gen.encode(Image.fromarray(a), "PNG")) for a in images])
    assert labels_of(worker, [b64(ENCODINGS[name](a)) for a in images]) == plain


def test_alpha_drawn_digit_is_black_on_white_and_the_inverted_adapter_reads_it(worker, digits):
    images, labels = digits
    answer = worker.handle({"id": "a", "input": {"op": "preprocess", "images": b64(gen.alpha_drawn(images[0]))}})
    plain = worker.handle(
        {"id": "b", "input": {"op": "preprocess", "images": b64(gen.encode(Image.fromarray(255 - images[0]), "PNG"))}}
    )
    assert answer["mean"] == plain["mean"] and answer["min"] == plain["min"]
    # The same labels as the plain black-on-white PNGs (not the true labels: the adapter's own
    # mistakes are not this test's subject), and the adapter does read them.
    inverted = labels_of(worker, [b64(gen.encode(Image.fromarray(255 - a), "PNG")) for a in images], "inverted")
    assert labels_of(worker, [b64(gen.alpha_drawn(a)) for a in images], "inverted") == inverted
    assert sum(a == b for a, b in zip(inverted, labels)) >= len(labels) - 1


def test_decoded_digits_are_not_binarised(worker, digits):
    # Pillow's clipping conversion would make a 16-bit image all but white: mean near the max.
    images, _ = digits
    answer = worker.handle(
        {"id": "p", "input": {"op": "preprocess", "images": b64(gen.png_16bit_gray(images[0])), "return_pixels": True}}
    )
    plain = worker.handle(
        {
            "id": "q",
            "input": {
                "op": "preprocess",
                "images": b64(gen.encode(Image.fromarray(images[0]), "PNG")),
                "return_pixels": True,
            },
        }
    )
    assert np.array_equal(np.array(answer["pixels"]), np.array(plain["pixels"]))


def test_health_reports_the_decode_budgets(worker):
    health = worker.handle({"id": "h", "input": {"op": "health"}})
    limits = health["limits"]
    for key in ("max_jpeg_scans", "max_job_pixels", "max_worker_pixels", "max_decode_ms"):
        assert limits[key] == getattr(worker.config, key)
    assert health["decoding"] == {
        "pixels_in_flight": 0,
        "max_worker_pixels": worker.config.max_worker_pixels,
        "source_bytes_in_flight": 0,
        "max_worker_source_bytes": worker.config.max_worker_source_bytes,
    }


def test_a_job_over_the_workers_pixels_in_flight_is_rate_limited(make_worker, digits):
    small = make_worker(
        max_job_pixels=1000, max_worker_pixels=1000, max_image_pixels=1000, warmup=False, max_admission_wait_ms=0
    )
    images, _ = digits
    png = gen.encode(Image.fromarray(images[0]), "PNG")
    pixels = images[0].shape[0] * images[0].shape[1]
    with small.pixel_budget.reserve(1000 - pixels + 1):  # another job decoding
        answer = small.handle({"id": "r", "input": {"images": b64(png)}})
    assert answer["code"] == "RATE_LIMITED"
    over = small.handle({"id": "o", "input": {"images": [b64(png)] * (1000 // pixels + 1)}})
    assert over["code"] == "IMAGE_TOO_LARGE" and over["field"] == "images"
