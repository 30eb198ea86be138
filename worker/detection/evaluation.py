"""Detections scored against a dataset: COCO results JSON, and mAP by pycocotools' own COCOeval.

`coco_results` turns answers (the worker's or the pipeline's: `[{"score", "label", "box"}]` per
image) into the results list pycocotools evaluates (`image_id`, `category_id`, `bbox` = [x, y, w,
h], `score`), the file `fastbackend batch` writes on request. `mean_average_precision` scores them
against a `DetectionDataset`: mAP@[.5:.95], mAP@.5 and the AP of each class, as COCOeval reports
them (pycocotools is a development dependency: imported here, where it is used).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from typing import Any

from worker.detection.datasets import DetectionDataset


def category_ids(names: Sequence[str]) -> dict[str, int]:
    """The COCO category id of each class name: its index + 1 (as `write_coco` numbers them)."""
    return {name: index + 1 for index, name in enumerate(names)}


def coco_results(
    answers: Sequence[Sequence[Mapping[str, Any]]], image_ids: Sequence[int], categories: Mapping[str, int]
) -> list[dict[str, Any]]:
    """Answers (one list per image, in `image_ids`' order) as pycocotools' detection results.

    Raises:
        ValueError: a label that is not among `categories` (the model's labels and the dataset's differ).
    """
    if len(answers) != len(image_ids):
        raise ValueError(f"{len(answers)} answers for {len(image_ids)} image ids")
    results = []
    for image_id, detections in zip(image_ids, answers):
        for d in detections:
            if d["label"] not in categories:
                raise ValueError(f"label {d['label']!r} is not a dataset category ({', '.join(categories)})")
            box = d["box"]
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": categories[d["label"]],
                    "bbox": [box["xmin"], box["ymin"], box["xmax"] - box["xmin"], box["ymax"] - box["ymin"]],
                    "score": float(d["score"]),
                }
            )
    return results


def coco_ground_truth(dataset: DetectionDataset) -> dict[str, Any]:
    """The dataset as a COCO ground-truth dict: image ids 1..N in item order, categories 1..K."""
    images, annotations = [], []
    for image_id, item in enumerate(dataset.items, 1):
        images.append({"id": image_id, "file_name": item.path.name, "width": item.width, "height": item.height})
        for box, label in zip(item.boxes, item.labels):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label + 1,
                    "bbox": list(box),
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": cid, "name": name} for name, cid in category_ids(dataset.names).items()]
    return {"images": images, "annotations": annotations, "categories": categories}


def mean_average_precision(dataset: DetectionDataset, answers: Sequence[Sequence[Mapping[str, Any]]]) -> dict:
    """mAP@[.5:.95] (`map`), mAP@.5 (`map_50`) and per-class AP@[.5:.95] (`per_class`), by COCOeval.

    A class without ground truth has AP -1 in COCOeval; it is reported as None.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    truth = COCO()
    truth.dataset = coco_ground_truth(dataset)
    with contextlib.redirect_stdout(io.StringIO()):  # COCO and COCOeval print progress
        truth.createIndex()
        results = coco_results(answers, range(1, len(dataset.items) + 1), category_ids(dataset.names))
        if not results:
            return {"map": 0.0, "map_50": 0.0, "per_class": dict.fromkeys(dataset.names, 0.0)}
        evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    precision = evaluation.eval["precision"]  # [iou, recall, class, area, max_dets]
    per_class = {}
    for index, name in enumerate(dataset.names):
        values = precision[:, :, index, 0, -1]
        values = values[values > -1]
        per_class[name] = float(values.mean()) if values.size else None
    return {"map": float(evaluation.stats[0]), "map_50": float(evaluation.stats[1]), "per_class": per_class}
