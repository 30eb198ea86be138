"""Scores of 02_inference (classification_metrics) and a sweep ranked by its validation metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exported.inference import classification_metrics
from fastbackend.pipeline.execute import RunResult
from fastbackend.pipeline.summary import best_line, metrics_table


def test_accuracy_top_k_per_class_and_confusion_counts():
    # 4 images, 3 labels: rows are logits; true labels 0, 0, 1, 2.
    logits = np.array([[3, 1, 0], [1, 3, 0], [0, 3, 1], [2, 0, 1]], dtype=np.float32)
    result = classification_metrics(logits, np.array([0, 0, 1, 2]), ["a", "b", "c"], k=2)
    assert result["accuracy"] == 0.5
    assert result["top_k_accuracy"] == 1.0 and result["k"] == 2
    assert result["confusion"].tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    assert result["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "support": 2}
    assert result["per_class"]["b"] == {"precision": 0.5, "recall": 1.0, "support": 1}
    assert result["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "support": 1}
    assert result["macro_recall"] == 0.5


def _point(label, value, adapter=None):
    metrics = {"val_accuracy": value} if value is not None else {}
    if adapter:
        metrics["adapter_dir"] = adapter
    return RunResult("train", label, {}, Path("runs") / label, "ok", 1.0, metrics, ())


def test_a_sweep_lists_its_points_best_first_and_names_the_best_adapter():
    points = [_point("lr=0.1", 0.5), _point("lr=0.01", 0.9, "runs/x/lr=0.01/adapters/d"), _point("lr=1", None)]
    header = metrics_table(points, "val_accuracy").splitlines()[0].split()
    assert header == ["lr=0.01", "lr=0.1", "lr=1"]
    assert best_line(points, "val_accuracy") == "best: lr=0.01 (val_accuracy 0.9): runs/x/lr=0.01/adapters/d"
    assert metrics_table(points).splitlines()[0].split() == ["lr=0.1", "lr=0.01", "lr=1"]
