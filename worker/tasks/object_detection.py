"""object-detection: boxes on the upright photo, as transformers' `object-detection` pipeline answers.

The model's own processor is reproduced by `worker.detection.processor` (DETR, Conditional DETR,
YOLOS: resize by shortest/longest edge, rescale, normalise, `pixel_mask`); images are never padded
together (each keeps its resized shape, and the batcher only batches equal shapes), so each answer
is the image's alone, as the pipeline computes it. `threshold`, `max_detections` and `float_boxes`
go to the postprocess, which runs the processor's own `post_process_object_detection` with each
image's upright original size (worker/detection/answer.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, StrictBool, StrictFloat, StrictInt

from worker.detection.answer import DEFAULT_THRESHOLD, answer_bytes_bound, detect
from worker.detection.detector import forward as detector_forward
from worker.detection.processor import prepare, read_detection_processor, resized_size
from worker.errors import ModelLoadFailed
from worker.schema import PredictInput
from worker.tasks.base import Arrays, ImageMeta, Task, Training

MAX_DETECTIONS = 1000


class DetectionInput(PredictInput):
    """Detect objects in images with the base model or a named adapter."""

    threshold: StrictFloat | StrictInt = Field(
        DEFAULT_THRESHOLD, ge=0, le=1, description="keep detections scoring above it (the pipeline's 0.5)"
    )
    max_detections: StrictInt | None = Field(
        None, ge=1, le=MAX_DETECTIONS, description="at most this many per image, the highest-scoring (null: all)"
    )
    float_boxes: StrictBool = Field(
        False, description="boxes in float pixels (0.01 px) instead of the pipeline's integers"
    )


class ObjectDetection(Task):
    name = "object-detection"
    request = DetectionInput
    mapping = "MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES"
    output_advice = "ask for less (a higher threshold, max_detections)"
    training = Training(
        dataset="COCO JSON (`<split>.json`: images, annotations with [x, y, w, h] pixel boxes, categories) or "
        "YOLO text labels (images/<split>/, labels/<split>/, data.yaml)",
        readers=("worker.detection.datasets:load_coco", "worker.detection.datasets:load_yolo"),
        loss="the model's own: Hungarian-matched set loss (DETR: CE + L1 + GIoU; RT-DETR: VFL + denoising)",
        metrics=("map", "map_50", "per_class"),
        evaluate="worker.detection.evaluation:mean_average_precision",
        trainer="fastbackend.training.detection:fit",
    )

    def load_processor(self, base: Path) -> None:
        self.processor = read_detection_processor(base)
        self.post_process = None

    @property
    def channels(self) -> int:
        return 3

    def resize_target(self, height: int, width: int) -> tuple[int, int]:
        return resized_size(height, width, self.processor)

    @property
    def resample(self) -> int:
        return self.processor.resample

    def blank_inputs(self) -> Arrays:
        # the shape a 64x64 image is resized to: a model with fixed anchors (RT-DETR's anchor_image_size) takes no other
        h, w = self.processor.pad_size or resized_size(64, 64, self.processor)
        return {"pixel_values": np.zeros((1, 3, h, w), np.float32), "pixel_mask": np.ones((1, h, w), np.int64)}

    def load_model(self, base: Path, device: str, dtype: str) -> Any:
        import inspect

        import torch
        from transformers import AutoImageProcessor, AutoModelForObjectDetection

        try:
            model = AutoModelForObjectDetection.from_pretrained(base, dtype=getattr(torch, dtype)).to(device).eval()
            self.post_process = AutoImageProcessor.from_pretrained(base, backend="pil").post_process_object_detection
        except (OSError, ValueError) as exc:
            raise ModelLoadFailed(f"{base}: {str(exc).splitlines()[0]}") from None
        self.id2label = {int(k): v for k, v in model.config.id2label.items()}
        self.labels = [self.id2label[i] for i in sorted(self.id2label)]
        self.takes_pixel_mask = "pixel_mask" in inspect.signature(model.forward).parameters
        config = model.config
        self.candidates = int(getattr(config, "num_queries", 0) or getattr(config, "num_detection_tokens", 100)) * (
            len(self.labels) + 1
        )
        return model

    def preprocess(self, image: Any, original_size: tuple[int, int]) -> tuple[Arrays, ImageMeta]:
        prepared = prepare(image, self.processor)
        h, w = prepared.pixel_mask.shape
        meta = ImageMeta(tuple(original_size), prepared.resized_size, (0, 0, h, w))
        return {"pixel_values": prepared.pixel_values[None], "pixel_mask": prepared.pixel_mask[None]}, meta

    def forward(self, model: Any, inputs: Arrays, adapter: str | None) -> Arrays:
        return detector_forward(model, inputs, adapter, self.takes_pixel_mask)

    def output_bytes(self, request: DetectionInput, sizes: Sequence[tuple[int, int]]) -> int:
        label = max((len(json.dumps(label)) for label in self.labels), default=2)
        return 256 + answer_bytes_bound(len(sizes), self.candidates, label, request.max_detections)

    def postprocess(self, outputs: Arrays, metas: Sequence[ImageMeta], request: DetectionInput) -> dict[str, Any]:
        found = detect(
            self.post_process,
            outputs,
            [meta.original_size for meta in metas],
            self.id2label,
            threshold=float(request.threshold),
            max_detections=request.max_detections,
            float_boxes=request.float_boxes,
        )
        return {"predictions": found}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "labels": len(self.labels), "processor": self.processor.processor}
