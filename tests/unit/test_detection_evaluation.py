"""Detections scored by pycocotools' COCOeval, model-free: perfect answers score 1, shifted ones less."""

from __future__ import annotations

import pytest
from fixtures.detection_datasets import coco

from worker.detection.datasets import load_coco
from worker.detection.evaluation import category_ids, coco_results, mean_average_precision


def _answers(dataset, shift: float = 0.0) -> list[list[dict]]:
    answers = []
    for item in dataset.items:
        answers.append(
            [
                {
                    "score": 0.9,
                    "label": dataset.names[label],
                    "box": {"xmin": x + shift, "ymin": y, "xmax": x + w + shift, "ymax": y + h},
                }
                for (x, y, w, h), label in zip(item.boxes, item.labels)
            ]
        )
    return answers


@pytest.fixture
def dataset(tmp_path):
    return load_coco(coco(tmp_path))


def test_the_truth_scores_one(dataset) -> None:
    scores = mean_average_precision(dataset, _answers(dataset))
    assert scores["map"] == pytest.approx(1.0) and scores["map_50"] == pytest.approx(1.0)
    assert scores["per_class"] == {"cat": pytest.approx(1.0), "dog": pytest.approx(1.0)}


def test_shifted_boxes_score_less_and_no_answers_score_zero(dataset) -> None:
    shifted = mean_average_precision(dataset, _answers(dataset, shift=3.0))
    assert 0 < shifted["map"] < 1
    assert mean_average_precision(dataset, [[] for _ in dataset.items])["map"] == 0.0


def test_coco_results_are_pycocotools_rows(dataset) -> None:
    rows = coco_results(_answers(dataset)[:1], [42], category_ids(dataset.names))
    assert rows[0] == {"image_id": 42, "category_id": 1, "bbox": [4.0, 4.0, 20.0, 10.0], "score": 0.9}
    with pytest.raises(ValueError, match="'bird' is not a dataset category"):
        coco_results([[{**_answers(dataset)[0][0], "label": "bird"}]], [1], category_ids(dataset.names))
