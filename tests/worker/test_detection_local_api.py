"""object-detection through RunPod's local API: the same detections as transformers' pipeline.

For each tiny detector of tests/fixtures/detection.py (DETR and Conditional DETR on a transformers
ResNet backbone, YOLOS), the generated handler serves it under `--rp_serve_api`; scikit-learn's
photos and their portrait, grayscale, very wide, 12 MP and EXIF-rotated variants are sent as JPEG,
one job each, at the pipeline's default threshold. The reference is `pipeline("object-detection",
model=folder)` on the same bytes (its load_image turns EXIF-rotated photos upright). Same labels
in the same order, scores within 1e-4, integer boxes equal (1 px where float noise straddles an
integer), and with `float_boxes` within 0.5 px of the pipeline's boxes before it truncates them.
A job holding a landscape, a portrait and an EXIF-turned photo gets each image's own answer (one
forward per resized shape). `make test` serves DETR; `make test-full` every architecture.
"""

from __future__ import annotations

import base64
import io

import pytest
from fixtures.detection import ARCHITECTURES, build
from fixtures.images import encode, exif_rotated
from fixtures.photos import variants

SCORE_TOLERANCE = 1e-4
BOX_TOLERANCE = 0.5
KEYS = ("xmin", "ymin", "xmax", "ymax")


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    images = variants(full=True)
    encoded = {name: encode(image, "JPEG", quality=90) for name, image in images.items()}
    encoded["china-exif-rotated"] = exif_rotated(images["china"], "JPEG", 6)
    encoded["flower-12mp-exif-rotated"] = exif_rotated(images["flower-12mp-portrait"], "JPEG", 8)
    return encoded


def _output(api, job: dict) -> dict:
    answer = api.runsync({"input": job})
    assert answer["status"] == "COMPLETED", answer
    return answer["output"]


def _pipeline_float_boxes(reference, image) -> list[list[float]]:
    outputs = reference._forward(reference.preprocess(image))
    raw = reference.image_processor.post_process_object_detection(outputs, 0.5, outputs["target_size"])
    return raw[0]["boxes"].tolist()


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=() if n == "detr" else pytest.mark.full) for n in ARCHITECTURES]
)
def test_local_api_answers_as_the_pipeline(name, photos, root, tmp_path) -> None:
    from PIL import Image
    from transformers import pipeline

    from fastbackend.local import serve_api

    folder = build(name, tmp_path / name)
    reference = pipeline("object-detection", model=str(folder))
    env = {
        "FASTBACKEND_BASE_MODEL": str(folder),
        "FASTBACKEND_ADAPTERS_DIR": str(tmp_path / "no-adapters"),
        "FASTBACKEND_MAX_IMAGE_SIDE": "5000",
        "FASTBACKEND_MAX_IMAGE_PIXELS": "20000000",
    }
    found, alone = 0, {}
    with serve_api(root, env=env, log_file=tmp_path / "api.log") as api:
        health = _output(api, {"op": "health"})
        assert health["task"]["name"] == "object-detection", health
        for photo, data in photos.items():
            image = base64.b64encode(data).decode("ascii")
            answer = _output(api, {"images": image})
            exact = _output(api, {"images": image, "float_boxes": True})
            assert answer["status"] == "success", (photo, answer)
            ours, ours_float = answer["predictions"][0], exact["predictions"][0]
            theirs = reference(Image.open(io.BytesIO(data)))
            assert [d["label"] for d in ours] == [d["label"] for d in theirs], photo
            for a, b in zip(ours, theirs):
                assert abs(a["score"] - b["score"]) <= SCORE_TOLERANCE, photo
                assert max(abs(a["box"][k] - b["box"][k]) for k in KEYS) <= 1, photo
            for a, b in zip(ours_float, _pipeline_float_boxes(reference, Image.open(io.BytesIO(data)))):
                assert max(abs(a["box"][k] - v) for k, v in zip(KEYS, b)) <= BOX_TOLERANCE, photo
            found += len(ours)
            alone[photo] = answer["predictions"][0]
        # One job of images with different resized shapes: one forward per shape, each its own answer.
        mixed = ["china", "flower-portrait", "china-exif-rotated", "china"]
        job = {"images": [base64.b64encode(photos[p]).decode("ascii") for p in mixed]}
        for photo, together in zip(mixed, _output(api, job)["predictions"]):
            assert [(d["label"], d["box"]) for d in together] == [(d["label"], d["box"]) for d in alone[photo]], photo
            assert all(abs(a["score"] - b["score"]) <= 1e-5 for a, b in zip(together, alone[photo])), photo
        limited = _output(api, {"images": base64.b64encode(photos["china"]).decode(), "max_detections": 1})
        assert len(limited["predictions"][0]) <= 1
    assert found > 0, f"{name}: no detections: the comparison would be empty"
