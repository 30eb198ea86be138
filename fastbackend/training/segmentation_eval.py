"""Evaluating a semantic segmenter: mean IoU, per-class IoU and pixel accuracy (torchmetrics), worst images.

Predictions are made as the worker serves them: the model's own preprocessing, the logits
upsampled to each mask's size and argmax'd (worker/segmentation/answer.py, as transformers'
`post_process_semantic_segmentation`). IoU and accuracy are torchmetrics' `MulticlassJaccardIndex`
and `MulticlassAccuracy` with the ignore index 255 skipped; a class absent from both the masks and
the predictions has no IoU (NaN) and stays out of the mean, as `evaluate`'s mean_iou does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fastbackend.training.segmentation_data import PairSet
from worker.segmentation.datasets import IGNORE_INDEX

ACTIVE = "<active>"  # the model as it is: a PeftModel's active adapter, else the plain model


def predict_class_maps(model: Any, pairs: PairSet, prep, *, batch_size: int = 32, adapter: str | None = ACTIVE):
    """Each image's class map at its mask's size, as the worker answers it (`adapter` None: a PeftModel's base)."""
    from exported.preprocess import preprocess_image
    from worker.segmentation.answer import class_map
    from worker.segmentation.stages import forward_logits

    if adapter == ACTIVE:
        adapter = getattr(model, "active_adapter", None) if hasattr(model, "peft_config") else None

    maps = []
    for start in range(0, len(pairs), batch_size):
        images = pairs.images[start : start + batch_size]
        pixels = np.stack([preprocess_image(image, prep) for image in images]).astype(np.float32)
        logits = forward_logits(model, pixels, adapter)
        maps += [class_map(row, mask.shape) for row, mask in zip(logits, pairs.masks[start : start + batch_size])]
    return maps


def _metrics(num_labels: int):
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

    iou = MulticlassJaccardIndex(num_labels, average="none", ignore_index=IGNORE_INDEX, zero_division=math.nan)
    accuracy = MulticlassAccuracy(num_labels, average="micro", ignore_index=IGNORE_INDEX)
    return iou, accuracy


def _mean(values: np.ndarray) -> float:
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else math.nan


def segmentation_scores(predicted: Sequence[np.ndarray], masks: Sequence[np.ndarray], labels: Sequence[str]):
    """{"mean_iou", "pixel_accuracy", "per_class_iou": {label: IoU or None}, "per_image_iou": [...]}."""
    import torch

    iou, accuracy = _metrics(len(labels))
    per_image = []
    for pred, mask in zip(predicted, masks):
        p, t = torch.as_tensor(pred, dtype=torch.long)[None], torch.as_tensor(mask, dtype=torch.long)[None]
        iou.update(p, t)
        accuracy.update(p, t)
        one, _ = _metrics(len(labels))
        per_image.append(_mean(one(p, t).numpy()))
    per_class = iou.compute().numpy()
    return {
        "mean_iou": _mean(per_class),
        "pixel_accuracy": float(accuracy.compute()),
        "per_class_iou": {label: None if math.isnan(v) else float(v) for label, v in zip(labels, per_class)},
        "per_image_iou": per_image,
    }


def evaluate_segmenter(
    model: Any, pairs: PairSet, prep, labels: Sequence[str], *, adapter: str | None = ACTIVE, batch_size: int = 32
) -> dict[str, Any]:
    """Scores of a model on image/mask pairs: as it is, or one adapter of a PeftModel (None: its base)."""
    maps = predict_class_maps(model, pairs, prep, batch_size=batch_size, adapter=adapter)
    return {**segmentation_scores(maps, pairs.masks, labels), "predicted": maps}


def overlay(image: np.ndarray, ids: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """An RGB image with each class id (background 0 and the ignore index left clear) tinted."""
    import matplotlib

    colours = (np.asarray(matplotlib.colormaps["tab20"].colors) * 255).astype(np.float32)
    shown = image.astype(np.float32).copy()
    tinted = (ids > 0) & (ids != IGNORE_INDEX)
    shown[tinted] = (1 - alpha) * shown[tinted] + alpha * colours[ids[tinted] % len(colours)]
    return shown.clip(0, 255).astype(np.uint8)


def show_pairs(images: Sequence[np.ndarray], columns: Sequence[tuple[str, Sequence[np.ndarray]]], titles=None):
    """A figure: one row per image, one column per (name, class maps) overlaid on it."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(images), len(columns), figsize=(2 * len(columns), 2 * len(images)), squeeze=False)
    for r, image in enumerate(images):
        for c, (name, maps) in enumerate(columns):
            axes[r][c].imshow(overlay(image, np.asarray(maps[r])))
            axes[r][c].set_axis_off()
            axes[r][c].set_title(name if titles is None or c else f"{name} {titles[r]}", fontsize=8)
    fig.tight_layout()
    return fig


def show_worst(pairs: PairSet, scores: dict[str, Any], count: int = 6):
    """The `count` images of lowest IoU, with the true and the predicted masks overlaid."""
    worst = np.argsort(np.nan_to_num(scores["per_image_iou"], nan=1.0))[:count]
    titles = [f"#{i} IoU {scores['per_image_iou'][i]:.2f}" for i in worst]
    return show_pairs(
        [pairs.images[i] for i in worst],
        [("true", [pairs.masks[i] for i in worst]), ("predicted", [scores["predicted"][i] for i in worst])],
        titles,
    )


def show_augmentations(pairs: PairSet, seed: int, count: int = 3, columns: int = 5):
    """A figure: per row one pair as it is, then `columns - 1` draws of train_augment on image and mask
    together, the mask overlaid (the digits' colours must stay on their ink through every draw)."""
    from fastbackend.training.segmentation_data import augmented, train_augment

    draws = [pairs.subset(range(count))] + [
        augmented(pairs.subset(range(count)), train_augment(seed + n)) for n in range(columns - 1)
    ]
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(count, columns, figsize=(1.8 * columns, 1.8 * count), squeeze=False)
    for c, draw in enumerate(draws):
        for r in range(count):
            axes[r][c].imshow(overlay(draw.images[r], np.asarray(draw.masks[r])))
            axes[r][c].set_axis_off()
            axes[r][c].set_title("as is" if c == 0 else f"draw {c}", fontsize=8)
    fig.tight_layout()
    return fig


def iou_table(scores: dict[str, Any]) -> str:
    """Per-class IoU as a text table (classes absent from masks and predictions: -)."""
    rows = [f"{label:<16} {'-' if v is None else f'{v:.3f}'}" for label, v in scores["per_class_iou"].items()]
    return "\n".join([f"{'class':<16} IoU", *rows, f"{'mean':<16} {scores['mean_iou']:.3f}"])
