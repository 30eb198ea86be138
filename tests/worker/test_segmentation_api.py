"""`image-segmentation` through RunPod's local API, equal to transformers' `image-segmentation` pipeline.

A tiny random SegFormer and BEiT (built from configs, their processor saved beside them) are served
as the image-segmentation task from their config's architectures. On scikit-learn's photos (JPEG,
decoded upright as the pipeline does): the masks answer equals the pipeline's labels and masks on
at least 99.9% of pixels; the compact form holds the same class map; a job whose masks would pass
the result limit is refused OUTPUT_TOO_LARGE with the advice, before any work. BEiT runs under
`make test-full`; the in-process parity test (test_segmentation_parity.py) checks both on every run.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fixtures.photos import jpeg_b64, variants
from fixtures.segmenters import build
from PIL import Image


def _image(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


def answered(api, job: dict) -> dict:
    answer = api.runsync({"input": job})
    assert answer["status"] == "COMPLETED", answer
    return answer["output"]


# SegFormer in `make test` (one server start, ~20 s of 2-core CPU); BEiT under `make test-full`.
@pytest.mark.parametrize("name", ["segformer", pytest.param("beit", marks=pytest.mark.full)])
def test_masks_through_local_api_equal_the_pipelines(name, root, tmp_path):
    from transformers import pipeline

    from fastbackend.local import serve_api

    base = build(name, tmp_path / name)
    photos = {key: variants(False)[key] for key in ("china", "flower-portrait", "china-gray")}
    encoded = [jpeg_b64(image) for image in photos.values()]
    env = {
        "FASTBACKEND_BASE_MODEL": str(base),
        "FASTBACKEND_ADAPTERS_DIR": str(tmp_path / "none"),
        "FASTBACKEND_MAX_OUTPUT_BYTES": "10000000",
    }
    with serve_api(root, env=env, log_file=tmp_path / "api.log") as api:
        health = answered(api, {"op": "health"})
        masks = answered(api, {"images": encoded})
        compact = answered(api, {"images": encoded, "format": "compact"})
        too_large = api.runsync({"input": {"images": [jpeg_b64(variants(True)["china-12mp"])] * 4}})
    assert health["task"]["name"] == "image-segmentation"
    reference = pipeline("image-segmentation", model=str(base))
    for text, served, small in zip(encoded, masks["predictions"], compact["predictions"]):
        expected = reference(_image(text))
        assert [e["label"] for e in served] == [e["label"] for e in expected]
        for entry, theirs in zip(served, expected):
            mask = np.array(_image(entry["mask"]))
            assert entry["score"] is None and mask.shape == np.array(theirs["mask"]).shape
            assert (mask == np.array(theirs["mask"])).mean() >= 0.999, (name, entry["label"])
        ids = np.array(_image(small["class_map"]))
        labels = [e["label"] for e in served]
        assert list(small["areas"]) == labels and sum(small["areas"].values()) == ids.size
    assert too_large["status"] == "FAILED" and too_large["error"].startswith("OUTPUT_TOO_LARGE"), too_large
    assert '"format": "compact"' in too_large["error"]
