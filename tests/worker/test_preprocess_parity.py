"""Pixels are the model's: the worker's `preprocess` op against AutoImageProcessor, on real photos.

For each architecture (a tiny model from tests/fixtures/architectures.py with its processor saved
beside it), scikit-learn's two photographs and their variants (downscaled, grayscale, portrait, very
wide; upscaled to 4000x3000 in the full run) are sent as JPEG to an in-process worker. The reference
is AutoImageProcessor (PIL backend) applied to the decode step's output for the same bytes. The
pixels must agree within 1e-3 in normalised units and the worker's top-1 (`predict`) must be the
model's top-1 on the reference pixels. `make test` runs a few architectures on a few images;
`make test-full` (the `full` marker) runs every architecture on every variant.
"""

from __future__ import annotations

import numpy as np
import pytest
from fixtures.architectures import ARCHITECTURES, build
from fixtures.photos import jpeg_b64 as _jpeg_b64
from fixtures.photos import variants as _photos
from PIL import Image

TOLERANCE = 1e-3
QUICK_ARCHITECTURES = ["vit", "convnext", "dinov2"]  # height/width; crop_pct; shortest_edge + crop
QUICK_IMAGES = ["china", "flower-portrait", "china-gray", "flower-wide", "china-small"]


def photos(full: bool) -> dict[str, str]:
    return {name: _jpeg_b64(image) for name, image in _photos(full).items() if full or name in QUICK_IMAGES}


def _decoded(encoded: str, channels: int) -> Image.Image:
    """The decode step's output for these bytes, in the model's mode: the reference's input."""
    from dataclasses import replace

    from worker.config import WorkerConfig
    from worker.decoding import decode_base64, decode_image

    limits = replace(WorkerConfig(), max_image_bytes=10**8, max_image_side=10**5, max_image_pixels=10**9)
    return decode_image(decode_base64(encoded), channels=channels, limits=limits)


def parity_rows(name: str, folder, photos: dict[str, str]) -> list[tuple[str, str, float, bool]]:
    """(image, processor, max |difference|, same top-1) per photo, through an in-process worker."""
    from transformers import AutoImageProcessor

    from exported.handler import WORKER as GENERATED  # the notebook functions export wired into the handler
    from worker.config import WorkerConfig
    from worker.runtime import Worker

    worker = Worker(GENERATED.functions)
    host = worker.setup(WorkerConfig(base_model=str(folder), adapters_dir=str(folder / "none"), warmup=False)).host
    reference = AutoImageProcessor.from_pretrained(folder, backend="pil")
    rows = []
    for image, encoded in photos.items():
        job = {"id": f"{name}-{image}", "input": {"op": "preprocess", "images": encoded, "return_pixels": True}}
        answer = worker.handle(job)
        assert answer["status"] == "success", answer
        ours = np.array(answer["pixels"], dtype=np.float32)
        source = _decoded(encoded, host.preprocess_config.num_channels)
        theirs = reference(source, return_tensors="np")["pixel_values"]
        assert ours.shape == theirs.shape, (name, image, ours.shape, theirs.shape)
        predicted = worker.handle({"id": "p", "input": {"images": encoded}})["predictions"][0]["label"]
        logits = host.run_batch({"pixel_values": theirs.astype(np.float32)}, None)["logits"]
        expected = host.labels[int(logits.argmax())]
        rows.append((image, type(reference).__name__, float(np.abs(ours - theirs).max()), predicted == expected))
    return rows


def check(name: str, folder, photos: dict[str, str]) -> None:
    rows = parity_rows(name, folder, photos)
    for image, processor, worst, same_top1 in rows:
        print(f"parity | {name} | {processor} | {image} | {worst:.2e} | {'same' if same_top1 else 'DIFFERENT'} top-1")
    bad = [r for r in rows if r[2] > TOLERANCE or not r[3]]
    assert not bad, f"{name}: {bad}"


@pytest.mark.parametrize("name", QUICK_ARCHITECTURES)
def test_preprocess_op_matches_autoimageprocessor(name, tmp_path):
    check(name, build(name, tmp_path / name), photos(full=False))


@pytest.mark.full
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_every_architecture_on_every_variant(name, tmp_path):
    check(name, build(name, tmp_path / name), photos(full=True))
