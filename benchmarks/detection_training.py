"""How far this CPU trains a small detector on digit scenes: the mAP curve within a time budget.

    python -m benchmarks.detection_training [--minutes 8] [--arch conditional_detr]

A Conditional DETR (transformers ResNet backbone from a config, no pretrained weights: no hub
here) learns scikit-learn's digits on 96x96 scenes (worker/detection/scenes.py) with
albumentations' bounding-box-aware transforms (`BboxParams(format="coco")`), the model's own loss
(Hungarian matching, class + L1 + GIoU) and AdamW. After each epoch, held-out scenes are answered
through `worker.detection` (the serving path: processor, model, post_process, pipeline-shaped
answers with float boxes) and scored by pycocotools (`evaluation.mean_average_precision`).
Prints the curve: epoch, seconds, training loss, mAP@.5, mAP@[.5:.95].
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def _model(arch: str, classes: int):
    from transformers import (
        ConditionalDetrConfig,
        ConditionalDetrForObjectDetection,
        DetrConfig,
        DetrForObjectDetection,
        ResNetConfig,
    )

    backbone = ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32, 64], depths=[1, 1, 1], layer_type="basic", out_features=["stage3"]
    )
    labels = {i: str(i) for i in range(classes)}
    kinds = {
        "detr": (DetrConfig, DetrForObjectDetection),
        "conditional_detr": (ConditionalDetrConfig, ConditionalDetrForObjectDetection),
    }
    config_class, model_class = kinds[arch]
    config = config_class(
        use_timm_backbone=False,
        backbone_config=backbone,
        use_pretrained_backbone=False,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        num_queries=10,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
        dropout=0.0,
    )
    return model_class(config)


def _targets(boxes, labels, size: int):
    import torch

    cxcywh = [[(x + w / 2) / size, (y + h / 2) / size, w / size, h / size] for x, y, w, h in boxes]
    return {
        "class_labels": torch.tensor(list(labels), dtype=torch.long),
        "boxes": torch.tensor(cxcywh, dtype=torch.float32).reshape(-1, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--arch", default="conditional_detr", choices=["detr", "conditional_detr"])
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()

    import albumentations as A
    import torch
    import transformers
    from PIL import Image
    from sklearn.datasets import load_digits

    from worker.detection.datasets import DetectionDataset, DetectionItem
    from worker.detection.detector import Detector
    from worker.detection.evaluation import mean_average_precision
    from worker.detection.processor import prepare
    from worker.detection.scenes import digit_scenes

    torch.manual_seed(0)
    digits = load_digits()
    cut = len(digits.images) * 4 // 5  # held-out digits for the held-out scenes
    size = 96
    train = digit_scenes(digits.images[:cut], digits.target[:cut], args.train, seed=0, size=size)
    held = digit_scenes(digits.images[cut:], digits.target[cut:], 100, seed=1, size=size)
    truth = DetectionDataset(
        tuple(DetectionItem(Path(f"{i}.png"), size, size, "val", s.boxes, s.labels) for i, s in enumerate(held)),
        tuple(str(i) for i in range(10)),
    )
    augment = A.Compose(
        [A.Affine(scale=(0.85, 1.15), translate_percent=(-0.05, 0.05), p=0.7), A.RandomBrightnessContrast(p=0.3)],
        bbox_params=A.BboxParams(format="coco", label_fields=["labels"], min_visibility=0.5),
        seed=0,
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        model = _model(args.arch, 10)
        model.save_pretrained(folder)
        kind = "ConditionalDetrImageProcessor" if args.arch == "conditional_detr" else "DetrImageProcessor"
        getattr(transformers, kind + "Pil")(size={"height": size, "width": size}).save_pretrained(folder)
        detector = Detector.load(folder)
        detector.model = model  # the one being trained, evaluated through the serving path
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-4)
        start, epoch = time.perf_counter(), 0
        print("| epoch | seconds | train loss | mAP@.5 | mAP@[.5:.95] |", flush=True)
        while time.perf_counter() - start < args.minutes * 60:
            epoch += 1
            model.train()
            order = np.random.default_rng(epoch).permutation(len(train))
            losses = []
            for first in range(0, len(order), args.batch):
                pixels, targets = [], []
                for index in order[first : first + args.batch]:
                    scene = train[index]
                    out = augment(
                        image=scene.image, bboxes=np.array(scene.boxes).reshape(-1, 4), labels=list(scene.labels)
                    )
                    pixels.append(prepare(Image.fromarray(out["image"]), detector.processor).pixel_values)
                    targets.append(_targets(out["bboxes"], out["labels"], size))
                loss = model(pixel_values=torch.from_numpy(np.stack(pixels)), labels=targets).loss
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
                optimizer.step()
                losses.append(float(loss.detach()))
            model.eval()
            answers = detector.detect([Image.fromarray(s.image) for s in held], threshold=0.05, float_boxes=True)
            scores = mean_average_precision(truth, answers)
            elapsed = time.perf_counter() - start
            print(
                f"| {epoch} | {elapsed:.0f} | {np.mean(losses):.3f} | {scores['map_50']:.3f} | {scores['map']:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
