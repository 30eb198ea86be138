"""Segmentation answers from logits, model-free: torch's upsampling and argmax, the pipeline's masks,
the compact form, and the size estimate made before an answer is built."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from worker.segmentation.answer import (
    class_map,
    class_map_png,
    compact_answer,
    estimate_image_bytes,
    label_areas,
    masks_answer,
    output_shape,
)

LABELS = ["background", "cat", "dog"]


def _png(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


def _torch_reference(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    up = F.interpolate(torch.from_numpy(logits)[None], size=size, mode="bilinear", align_corners=False)
    return up[0].argmax(0).numpy()


@pytest.mark.parametrize(
    "grid, size",
    [((16, 16), (640, 427)), ((16, 12), (37, 5000)), ((8, 8), (8, 8)), ((16, 16), (3, 2)), ((5, 7), (1, 1))],
)
def test_class_map_is_torchs_interpolate_and_argmax(grid, size):
    logits = np.random.default_rng(sum(size)).normal(size=(4, *grid)).astype(np.float32)
    ours, theirs = class_map(logits, size), _torch_reference(logits, size)
    assert ours.shape == size
    assert (ours == theirs).mean() >= 0.9999


def test_class_map_on_the_model_grid_is_a_plain_argmax():
    logits = np.random.default_rng(1).normal(size=(3, 6, 5)).astype(np.float32)
    assert (class_map(logits, None) == logits.argmax(0)).all()


def test_masks_are_the_pipelines_one_per_present_class_ascending():
    ids = np.array([[2, 2, 0], [0, 2, 2]])
    answer = masks_answer(ids, LABELS)
    assert [entry["label"] for entry in answer] == ["background", "dog"]  # cat is absent
    assert all(entry["score"] is None for entry in answer)
    first = _png(answer[0]["mask"])
    assert first.mode == "L" and first.size == (3, 2)
    assert (np.array(first) == np.where(ids == 0, 255, 0)).all()
    assert set(np.unique(np.array(_png(answer[1]["mask"])))) == {0, 255}


def test_compact_form_round_trips_8_and_16_bit():
    ids = np.array([[0, 1, 1], [2, 2, 2]])
    answer = compact_answer(ids, LABELS)
    image = _png(answer["class_map"])
    assert image.mode == "L" and (np.array(image) == ids).all()
    assert answer["areas"] == {"background": 1, "cat": 2, "dog": 3} and answer["size"] == [2, 3]
    many = [f"class {i}" for i in range(300)]
    wide = np.array([[0, 299], [256, 7]])
    decoded = _png(base64.b64encode(class_map_png(wide, len(many))).decode())
    assert decoded.mode.startswith("I") and (np.array(decoded) == wide).all()


def test_areas_name_ids_past_the_labels_by_number():
    assert label_areas(np.array([[0, 5]]), LABELS) == {"background": 1, "5": 1}


def test_estimate_bounds_what_real_masks_of_smooth_regions_take():
    yy, xx = np.mgrid[0:600, 0:800]
    ids = ((xx // 200 + yy // 150) % 3).astype(np.int64)  # blocks, as a segmenter's regions
    real = len(json.dumps(masks_answer(ids, LABELS)))
    assert real <= estimate_image_bytes(600, 800, "masks", LABELS)
    compact = len(json.dumps(compact_answer(ids, LABELS)))
    assert compact <= estimate_image_bytes(600, 800, "compact", LABELS)


def test_sixteen_12mp_photos_of_masks_pass_the_result_limit_but_compact_fits():
    per_image = estimate_image_bytes(3000, 4000, "masks", LABELS)
    assert 16 * per_image > 20_000_000
    assert 16 * estimate_image_bytes(3000, 4000, "compact", LABELS) < 20_000_000


def test_output_shape():
    assert output_shape((480, 640), (128, 128), "original") == (480, 640)
    assert output_shape((480, 640), (128, 128), "model") == (128, 128)


def test_request_options_route_to_the_answer_and_refuse_unknown_values():
    import pydantic

    from worker.segmentation.stages import SegmentationOptions, answer_bytes, answers

    logits = np.random.default_rng(2).normal(size=(2, 3, 4, 4)).astype(np.float32)
    compact = SegmentationOptions(format="compact", output_size="model")
    small = answers(logits, [(40, 30), (8, 8)], compact, LABELS)
    assert [a["size"] for a in small] == [[4, 4], [4, 4]]
    full = answers(logits, [(40, 30), (8, 8)], SegmentationOptions(), LABELS)
    assert _png(full[0][0]["mask"]).size == (30, 40)
    assert answer_bytes(compact, [(3000, 4000)], LABELS, (64, 64)) < answer_bytes(
        SegmentationOptions(), [(3000, 4000)], LABELS, (64, 64)
    )
    with pytest.raises(pydantic.ValidationError):
        SegmentationOptions(format="rle")
