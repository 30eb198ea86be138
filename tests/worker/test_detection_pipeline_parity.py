"""The worker's detections are the object-detection pipeline's, per architecture, on real photos.

Each tiny detector of tests/fixtures/detection.py (DETR and Conditional DETR on a transformers
ResNet backbone, YOLOS, RT-DETR; random weights, class head scaled so scores spread) is saved with
its processor. scikit-learn's photos and their portrait, grayscale, very wide, 12 MP and EXIF-rotated
variants go through the worker's decode step (which turns EXIF-rotated photos upright) and
`Detector.detect` (several images per call, so same-shape micro-batches form). The reference is
`pipeline("object-detection", model=folder)` on the same bytes opened by PIL (its load_image turns
them upright itself). Same detections (count, labels, order) and scores within 1e-4; boxes within
0.5 px as floats (`float_boxes=True` against the pipeline's own preprocess/_forward stages and its
processor's post-processing, before the pipeline truncates them), and the default integer boxes
equal to the pipeline's except where float noise straddles an integer (then 1 px apart).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from fixtures.detection import ARCHITECTURES, build
from fixtures.images import encode, exif_rotated
from fixtures.photos import variants

SCORE_TOLERANCE = 1e-4
BOX_TOLERANCE = 0.5


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    """Encoded photos: the worker decodes them; the pipeline opens the same bytes (and turns them itself)."""

    images = variants(full=True)
    encoded = {name: encode(image, "JPEG", quality=90) for name, image in images.items()}
    encoded["china-exif-rotated"] = exif_rotated(images["china"], "JPEG", 6)
    encoded["flower-12mp-exif-rotated"] = exif_rotated(images["flower-12mp-portrait"], "JPEG", 8)
    encoded["china-copy"] = encoded["china"]  # same shape as china: one micro-batch of two
    return encoded


def _decoded(data: bytes):
    from worker.config import WorkerConfig
    from worker.decoding import decode_image

    limits = replace(WorkerConfig(), max_image_bytes=10**8, max_image_side=10**5, max_image_pixels=10**9)
    return decode_image(data, channels=3, limits=limits)


def pipeline_float_boxes(reference, image, threshold: float) -> list[list[float]]:
    """The pipeline's boxes before its `box.int()`: its own stages, its processor's post-processing."""
    outputs = reference._forward(reference.preprocess(image))
    raw = reference.image_processor.post_process_object_detection(outputs, threshold, outputs["target_size"])
    return raw[0]["boxes"].tolist()


def compare(ours: list[dict], theirs: list[dict]) -> tuple[float, float]:
    """(max box difference in px, max score difference); asserts the same detections."""
    assert [d["label"] for d in ours] == [d["label"] for d in theirs]
    box = max((abs(a["box"][k] - b["box"][k]) for a, b in zip(ours, theirs) for k in a["box"]), default=0.0)
    score = max((abs(a["score"] - b["score"]) for a, b in zip(ours, theirs)), default=0.0)
    return float(box), float(score)


QUICK = ("detr", "yolos")  # with and without a pixel mask; the others in make test-full


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in QUICK else pytest.mark.full) for n in ARCHITECTURES])
@pytest.mark.parametrize("threshold", [0.5, pytest.param(0.75, marks=pytest.mark.full)])
def test_same_detections_as_the_pipeline(name, threshold, photos, tmp_path) -> None:
    import io

    from PIL import Image
    from transformers import pipeline

    from worker.detection.detector import Detector

    folder = build(name, tmp_path / name)
    reference = pipeline("object-detection", model=str(folder))
    detector = Detector.load(folder)
    upright = {photo: _decoded(data) for photo, data in photos.items()}
    ours = detector.detect(list(upright.values()), threshold=threshold)
    ours_float = detector.detect(list(upright.values()), threshold=threshold, float_boxes=True)
    found = 0
    for (photo, image), answer, answer_float in zip(upright.items(), ours, ours_float):
        opened = Image.open(io.BytesIO(photos[photo]))
        theirs = reference(opened, threshold=threshold)
        box, score = compare(answer, theirs)
        assert box <= 1 and score <= SCORE_TOLERANCE, (name, photo, box, score)
        theirs_float = pipeline_float_boxes(reference, Image.open(io.BytesIO(photos[photo])), threshold)
        assert len(theirs_float) == len(answer_float)
        for detection, box_theirs in zip(answer_float, theirs_float):
            ours_box = [detection["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")]
            assert max(abs(a - b) for a, b in zip(ours_box, box_theirs)) <= BOX_TOLERANCE, (name, photo)
        for detection in answer:
            assert 0 <= detection["box"]["xmin"] <= image.width and 0 <= detection["box"]["ymax"] <= image.height + 1
        found += len(answer)
    if threshold == 0.5:
        assert found > 0, f"{name}: no detections at the default threshold: the comparison would be empty"
