"""Detection processors resolved from their fields, model-free: resize rules, refusals, the answer's shape."""

from __future__ import annotations

import pytest
from PIL import Image

from worker.detection.answer import answer_bytes_bound, keep_top
from worker.detection.detector import group_by_shape
from worker.detection.processor import Refused, build_detection_processor, prepare, resized_size

DETR = {"image_processor_type": "DetrImageProcessor"}
YOLOS = {"image_processor_type": "YolosImageProcessor"}


def _resolved(fields: dict, model_type: str = "detr"):
    return build_detection_processor(fields, {"model_type": model_type})


# (fields, image (h, w), resized (h, w)) by transformers' rules
RESIZES = [
    (DETR, (427, 640), (800, 1199)),  # shortest edge 800, longest 1199 < 1333
    (DETR, (3000, 4000), (800, 1066)),
    (DETR, (100, 640), (208, 1333)),  # very wide: the longest edge capped at 1333
    (DETR, (800, 1000), (800, 1000)),  # already at the size: unchanged
    ({**DETR, "size": 120, "max_size": 200}, (427, 640), (120, 179)),  # legacy int size
    ({**DETR, "size": {"height": 100, "width": 140}}, (427, 640), (100, 140)),
    ({**DETR, "size": {"max_height": 128, "max_width": 128}}, (427, 640), (85, 128)),
    ({**DETR, "do_resize": False}, (427, 640), (427, 640)),
    (YOLOS, (427, 640), (800, 1184)),  # YOLOS: both edges floored to multiples of 16
    (YOLOS, (640, 427), (1184, 800)),
    ({"image_processor_type": "RTDetrImageProcessor"}, (427, 640), (640, 640)),  # its class default
]


@pytest.mark.parametrize(("fields", "size", "expected"), RESIZES)
def test_resize_rules(fields, size, expected) -> None:
    assert resized_size(*size, _resolved(fields)) == expected


def test_the_model_type_names_the_processor_when_the_file_does_not() -> None:
    assert _resolved({}, "yolos").processor == "YolosImageProcessor"
    assert _resolved({}, "conditional_detr").resize == "aspect"


REFUSALS = [
    ({"image_processor_type": "ViTImageProcessor"}, "image_processor_type"),
    ({**DETR, "size": {"shortest_edge": 800}}, "size="),
    ({**DETR, "size": 800, "max_size": None}, "max_size=null"),
    ({**DETR, "size": {"height": 0, "width": 10}}, "positive"),
    ({**DETR, "resample": 9}, "resample=9"),
    ({**DETR, "image_mean": [0.5, 0.5]}, "image_mean="),
    ({**DETR, "pad_size": {"height": 10}}, "pad_size="),
    ({**DETR, "do_reduce_labels": True}, "do_reduce_labels=True"),
    ({"image_processor_type": "RTDetrImageProcessor", "size": 640}, "takes a size dict"),
]


@pytest.mark.parametrize(("fields", "named"), REFUSALS)
def test_a_field_not_reproduced_is_refused_by_name(fields, named) -> None:
    with pytest.raises(Refused, match=named.replace("[", r"\[")):
        _resolved(fields)


def test_pad_size_pads_bottom_right_with_a_mask_of_the_image() -> None:
    processor = _resolved({**DETR, "size": {"height": 20, "width": 30}, "pad_size": {"height": 32, "width": 40}})
    prepared = prepare(Image.new("RGB", (90, 60), (255, 0, 0)), processor)
    assert prepared.pixel_values.shape == (3, 32, 40) and prepared.pixel_mask.shape == (32, 40)
    assert prepared.pixel_mask[:20, :30].all() and prepared.pixel_mask.sum() == 600
    assert (prepared.pixel_values[:, 20:, :] == 0).all() and (prepared.pixel_values[:, :, 30:] == 0).all()
    assert prepared.original_size == (60, 90) and prepared.resized_size == (20, 30)


def test_an_image_larger_than_pad_size_is_an_error_naming_it() -> None:
    processor = _resolved({**DETR, "size": {"height": 50, "width": 50}, "pad_size": {"height": 32, "width": 32}})
    with pytest.raises(ValueError, match="pad_size"):
        prepare(Image.new("RGB", (10, 10)), processor)


def _detection(score: float) -> dict:
    return {"score": score, "label": "x", "box": {"xmin": 0, "ymin": 0, "xmax": 1, "ymax": 1}}


def test_max_detections_keeps_the_best_in_their_order() -> None:
    found = [_detection(s) for s in (0.6, 0.9, 0.7, 0.95)]
    assert [d["score"] for d in keep_top(found, 2)] == [0.9, 0.95]
    assert keep_top(found, None) == found and keep_top(found, 10) == found


def test_images_are_grouped_by_shape_in_first_seen_order() -> None:
    processor = _resolved({**DETR, "size": {"shortest_edge": 16, "longest_edge": 64}})
    images = [Image.new("RGB", size) for size in ((40, 20), (20, 40), (80, 40), (40, 40))]
    assert group_by_shape([prepare(image, processor) for image in images]) == [[0, 2], [1], [3]]


def test_the_answer_bound_covers_every_candidate() -> None:
    assert answer_bytes_bound(2, 100, 10, None) > answer_bytes_bound(2, 100, 10, 5) > 0
    import json

    widest = {"score": 0.12345678901234568, "label": "0123456789", "box": {}}
    widest["box"] = {k: -12345.67 for k in ("xmin", "ymin", "xmax", "ymax")}
    assert len(json.dumps([widest] * 3)) <= answer_bytes_bound(1, 3, 10, None)
