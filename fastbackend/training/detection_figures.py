"""Figures of the detection notebooks: boxes drawn on images (augmentations, predictions vs truth),
and the mAP curve of a training run. matplotlib is imported where it is used."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fastbackend.training.detection import augmented, read_image
from worker.detection.datasets import DetectionDataset, DetectionItem


def _boxes(ax: Any, boxes: Sequence[Sequence[float]], captions: Sequence[str], color: str) -> None:
    from matplotlib.patches import Rectangle

    for (x, y, w, h), caption in zip(boxes, captions):
        ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=color, linewidth=1.5))
        ax.text(x, y, caption, color="white", fontsize=7, va="bottom", bbox={"facecolor": color, "pad": 1, "lw": 0})


def _grid(count: int, columns: int) -> tuple[Any, np.ndarray]:
    import matplotlib.pyplot as plt

    rows = max(1, -(-count // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return figure, axes.flat


def augmentation_grid(items: Sequence[DetectionItem], augment: Any, names: Sequence[str], columns: int = 5):
    """Per row one image as it is, then `columns - 1` augmentations, with their boxes moved along."""
    figure, axes = _grid(len(items) * columns, columns)
    for row, item in enumerate(items):
        for column in range(columns):
            image, boxes, labels = augmented(item, augment if column else None)
            ax = axes[row * columns + column]
            ax.imshow(image)
            _boxes(ax, boxes, [names[label] for label in labels], "tab:green")
            ax.set_title("as it is" if column == 0 else f"augmented {column}", fontsize=8)
    figure.tight_layout()
    return figure


def prediction_grid(dataset: DetectionDataset, answers: Sequence[Sequence[dict]], threshold: float = 0.5, count=10):
    """The first `count` images: truth in green, detections scoring over `threshold` in red."""
    figure, axes = _grid(min(count, len(dataset.items)), 5)
    for ax, item, found in zip(axes, dataset.items[:count], answers[:count]):
        ax.imshow(read_image(item.path))
        _boxes(ax, item.boxes, [dataset.names[label] for label in item.labels], "tab:green")
        kept = [d for d in found if d["score"] > threshold]
        boxes = [[d["box"]["xmin"], d["box"]["ymin"], d["box"]["xmax"] - d["box"]["xmin"],
                  d["box"]["ymax"] - d["box"]["ymin"]] for d in kept]  # fmt: skip
        _boxes(ax, boxes, [f"{d['label']} {d['score']:.2f}" for d in kept], "tab:red")
        ax.set_title(item.path.name, fontsize=8)
    figure.tight_layout()
    return figure


def map_curve(history: dict[str, Any]):
    """mAP@.5 and mAP@[.5:.95] of the validation split per epoch, the best epoch marked."""
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history["epochs"]]
    figure, ax = plt.subplots(figsize=(5, 3))
    ax.plot(epochs, [row["map_50"] for row in history["epochs"]], marker="o", label="mAP@.5")
    ax.plot(epochs, [row["map"] for row in history["epochs"]], marker="o", label="mAP@[.5:.95]")
    if history.get("best_epoch"):
        ax.axvline(history["best_epoch"], color="grey", linestyle=":", label="best epoch")
    ax.set_xlabel("epoch")
    ax.set_ylim(0, 1)
    ax.legend()
    figure.tight_layout()
    return figure
