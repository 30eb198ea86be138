"""A loaded DETR-family detector: images in, the object-detection pipeline's answers out.

`Detector.load(model_dir)` reads the model (`AutoModelForObjectDetection.from_pretrained`), its
processor's pixel steps (`processor.read_detection_processor`) and the processor itself, whose
`post_process_object_detection` decodes the outputs. `detect(images)` groups the images by their
resized shape, runs one forward per group (same-shape micro-batches: no padding between images,
so each answer is the one the image gets alone), and answers in the images' order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worker.detection.answer import DEFAULT_THRESHOLD, OUTPUT_NAMES, detect
from worker.detection.processor import DetectionProcessor, Prepared, prepare, read_detection_processor
from worker.errors import ModelLoadFailed


def group_by_shape(prepared: Sequence[Prepared]) -> list[list[int]]:
    """Indices of images sharing one pixel_values shape, in first-seen order: one forward each."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, item in enumerate(prepared):
        groups.setdefault(item.pixel_values.shape, []).append(index)
    return list(groups.values())


def stack(prepared: Sequence[Prepared]) -> dict[str, np.ndarray]:
    """Same-shape images as the model's batch-first inputs."""
    return {
        "pixel_values": np.stack([item.pixel_values for item in prepared]),
        "pixel_mask": np.stack([item.pixel_mask for item in prepared]),
    }


def forward(model: Any, inputs: dict[str, np.ndarray], adapter: str | None, takes_pixel_mask: bool) -> dict:
    """A detector's forward on batch-first arrays through `adapter`: `logits` and `pred_boxes` as float32
    (the worker's task and `Detector` share it; `pixel_mask` only to a model whose forward takes it)."""
    from worker.tasks.torch_forward import run, to_numpy

    feed = inputs if takes_pixel_mask else {"pixel_values": inputs["pixel_values"]}
    outputs = run(model, feed, adapter, lambda m, tensors: m(**tensors))
    return {name: to_numpy(getattr(outputs, name)) for name in OUTPUT_NAMES}


@dataclass
class Detector:
    model: Any
    processor: DetectionProcessor
    post_process: Any  # the image processor's post_process_object_detection
    id2label: dict[int, str]
    takes_pixel_mask: bool
    adapter: str | None = None  # a PeftModel's adapter to answer with (None: the base)

    @classmethod
    def load(cls, model_dir: str | Path, *, dtype: Any = None) -> Detector:
        """Load the detector in `model_dir` (config, weights, preprocessor_config.json).

        Raises:
            ModelLoadFailed: a file is missing or the processor is not reproduced (named).
        """
        import inspect

        from transformers import AutoImageProcessor, AutoModelForObjectDetection

        processor = read_detection_processor(model_dir)
        try:
            model = AutoModelForObjectDetection.from_pretrained(model_dir, dtype=dtype).eval()
            image_processor = AutoImageProcessor.from_pretrained(model_dir, backend="pil")
        except (OSError, ValueError) as exc:
            raise ModelLoadFailed(f"{model_dir}: {str(exc).splitlines()[0]}") from None
        takes_mask = "pixel_mask" in inspect.signature(model.forward).parameters
        id2label = {int(k): v for k, v in model.config.id2label.items()}
        return cls(model, processor, image_processor.post_process_object_detection, id2label, takes_mask)

    def forward(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One same-shape batch through the model: its outputs as batch-first named float32 arrays."""
        return forward(self.model, inputs, self.adapter, self.takes_pixel_mask)

    def detect(
        self,
        images: Sequence[Any],
        *,
        threshold: float = DEFAULT_THRESHOLD,
        max_detections: int | None = None,
        float_boxes: bool = False,
    ) -> list[list[dict[str, Any]]]:
        """Upright 8-bit images to one answer each, as the object-detection pipeline gives it."""
        prepared = [prepare(image, self.processor) for image in images]
        answers: list[list[dict[str, Any]] | None] = [None] * len(prepared)
        for group in group_by_shape(prepared):
            outputs = self.forward(stack([prepared[i] for i in group]))
            sizes = [prepared[i].original_size for i in group]
            found = detect(
                self.post_process,
                outputs,
                sizes,
                self.id2label,
                threshold=threshold,
                max_detections=max_detections,
                float_boxes=float_boxes,
            )
            for index, answer in zip(group, found):
                answers[index] = answer
        return answers  # type: ignore[return-value]
