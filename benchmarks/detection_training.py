"""How far this CPU trains a small detector on digit scenes: the mAP curve within a time budget.

    python -m benchmarks.detection_training [--minutes 10] [--arch rt_detr] [--train 600]

A small detector from a config (fastbackend/training/detection_demo.py: RT-DETR by default, on a
transformers ResNet, no pretrained weights: no hub here) learns scikit-learn's digits on 96x96
scenes written as a COCO dataset, through the training loop of the detection notebooks
(fastbackend/training/detection.py: albumentations BboxParams, the model's own loss, AdamW,
pycocotools mAP on held-out scenes after each epoch, answered through the serving path).
Prints the curve: epoch, seconds, training loss, mAP@.5, mAP@[.5:.95]; stops after the epoch that
passes `--minutes`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--arch", default="rt_detr", choices=["rt_detr", "conditional_detr", "detr"])
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    import torch

    if args.threads:  # on a loaded shared machine one thread trains ~10x faster than two fighting for cores
        torch.set_num_threads(args.threads)

    from benchmarks.report import save
    from fastbackend.training.detection import DetectionTraining, default_augmentation, fit
    from fastbackend.training.detection_demo import small_detector, write_scene_dataset
    from worker.detection.detector import Detector

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        data = write_scene_dataset(Path(tmp) / "scenes", {"train": args.train, "val": args.val})
        model, processor = small_detector(args.arch, width=args.width)
        model.save_pretrained(Path(tmp) / "model")
        processor.save_pretrained(Path(tmp) / "model")
        detector = Detector.load(Path(tmp) / "model")
        detector.model = model.train()
        settings = DetectionTraining(
            epochs=10_000,
            batch_size=args.batch,
            lr=args.lr,
            head_lr=args.head_lr,
            patience=0,
            monitor="map_50",
            max_minutes=args.minutes,
        )
        start = time.perf_counter()
        rows = []

        def report(row):
            elapsed = time.perf_counter() - start
            rows.append({**{k: v for k, v in row.items() if k != "per_class"}, "elapsed": round(elapsed, 1)})
            cells = [row["epoch"], f"{elapsed:.0f}", f"{row['train_loss']:.3f}", f"{row['map_50']:.3f}"]
            print("| " + " | ".join(map(str, cells)) + f" | {row['map']:.3f} |", flush=True)

        print(f"{args.arch}, {sum(p.numel() for p in model.parameters())} parameters, {args.train} scenes")
        print("| epoch | seconds | train loss | mAP@.5 | mAP@[.5:.95] |\n|---|---|---|---|---|", flush=True)
        history = fit(
            detector, data.split("train"), data.split("val"), settings, augment=default_augmentation(), on_epoch=report
        )
        print(f"best: epoch {history['best_epoch']}, mAP@.5 {history['best']['map_50']:.3f}", flush=True)
    save("detection_training", {"arch": args.arch, "args": vars(args), "curve": rows})


if __name__ == "__main__":
    main()
