"""Detection outputs to the answer transformers' `object-detection` pipeline gives.

The model's own image processor decodes its outputs (`post_process_object_detection`: DETR's
softmax without the no-object class, Conditional DETR's sigmoid top-k, ...), with each image's
upright original (height, width) as its target size, so boxes are in the photo's own pixels.
The answer per image is the pipeline's: `[{"score", "label", "box": {"xmin", "ymin", "xmax",
"ymax"}}]`, boxes as the pipeline's integers (`box.int()`: truncated toward zero), in the
processor's order. `max_detections` keeps the highest-scoring ones, still in that order.
`float_boxes=True` gives the boxes unrounded (to 0.01 px) instead: what a mAP evaluation wants,
and what two runs equal within float noise still agree on (truncation can turn 2999.99998 and
3000.00001 into 2999 and 3000).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np

OUTPUT_NAMES = ("logits", "pred_boxes")  # the batch-first arrays a detector's forward yields
DEFAULT_THRESHOLD = 0.5  # the pipeline's
# A detection in JSON, label aside: {"score": 0.12345678901234568, "label": "", "box": {"xmin": -1234.56, ...
DETECTION_JSON_BYTES = 140


def keep_top(detections: list[dict[str, Any]], max_detections: int | None) -> list[dict[str, Any]]:
    """The `max_detections` highest-scoring detections, in their original order (ties: the first)."""
    if max_detections is None or len(detections) <= max_detections:
        return detections
    ranked = sorted(range(len(detections)), key=lambda i: (-detections[i]["score"], i))[:max_detections]
    return [detections[i] for i in sorted(ranked)]


def to_answer(
    raw: Mapping[str, Any], id2label: Mapping[int, str], max_detections: int | None, float_boxes: bool = False
) -> list[dict]:
    """One image's post-processed dict (`scores`, `labels`, `boxes` tensors) as the pipeline's list."""
    scores = raw["scores"].tolist()
    labels = [id2label[int(label)] for label in raw["labels"].tolist()]
    if float_boxes:
        boxes = [[round(float(v), 2) for v in box] for box in raw["boxes"].tolist()]
    else:
        boxes = raw["boxes"].int().tolist()
    detections = [
        {"score": score, "label": label, "box": {"xmin": b[0], "ymin": b[1], "xmax": b[2], "ymax": b[3]}}
        for score, label, b in zip(scores, labels, boxes)
    ]
    return keep_top(detections, max_detections)


def detect(
    post_process: Callable[..., list[dict[str, Any]]],
    outputs: Mapping[str, np.ndarray],
    original_sizes: Sequence[tuple[int, int]],
    id2label: Mapping[int, str],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    max_detections: int | None = None,
    float_boxes: bool = False,
) -> list[list[dict[str, Any]]]:
    """A batch's outputs as one answer list per image.

    Args:
        post_process: the model's image processor's `post_process_object_detection`.
        outputs: `logits` and `pred_boxes`, batch-first, one row per image.
        original_sizes: each image's upright original (height, width): the boxes' frame.
        id2label: the model config's label names.
        threshold: keep detections scoring above it (the pipeline's default 0.5).
        max_detections: at most this many per image (None: all above the threshold).
        float_boxes: boxes in float pixels (0.01 px) rather than the pipeline's truncated integers.
    """
    import torch

    if len(original_sizes) != len(outputs["logits"]):
        raise ValueError(f"{len(original_sizes)} sizes for {len(outputs['logits'])} images")
    model_outputs = SimpleNamespace(**{name: torch.from_numpy(np.asarray(outputs[name])) for name in OUTPUT_NAMES})
    target_sizes = torch.IntTensor([list(size) for size in original_sizes])  # as the pipeline builds it
    raw = post_process(model_outputs, threshold, target_sizes)
    return [to_answer(image, id2label, max_detections, float_boxes) for image in raw]


def answer_bytes_bound(images: int, candidates: int, longest_label: int, max_detections: int | None) -> int:
    """An upper bound on the answer's JSON size, known before the forward (OUTPUT_TOO_LARGE early).

    `candidates` bounds the detections per image: queries x classes covers every DETR-family
    post-processing (DETR keeps at most one per query, Conditional DETR a top-k of queries x classes).
    """
    per_image = candidates if max_detections is None else min(candidates, max_detections)
    return images * (2 + per_image * (DETECTION_JSON_BYTES + longest_label))
