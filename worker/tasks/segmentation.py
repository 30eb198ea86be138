"""image-segmentation (semantic): one mask per class present, as transformers' `image-segmentation` pipeline.

The stages are worker/segmentation/stages.py's; this module routes the request's `format` and
`output_size` to the postprocess (and the size estimate), nothing to preprocess or forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from worker.schema import PredictInput
from worker.segmentation.stages import (
    MAPPING,
    OUTPUT_ADVICE,
    SegmentationOptions,
    answer_bytes,
    answers,
    forward_logits,
    load_model,
)
from worker.tasks.base import Arrays, ImageMeta, Task


class SegmentationInput(PredictInput, SegmentationOptions):
    """Segment images with the base model or a named adapter."""


class ImageSegmentation(Task):
    name = "image-segmentation"
    request = SegmentationInput
    mapping = MAPPING
    output_advice = OUTPUT_ADVICE

    def load_model(self, base: Path, device: str, dtype: str) -> Any:
        model, self.labels = load_model(base, device, dtype)
        return model

    def forward(self, model: Any, inputs: Arrays, adapter: str | None) -> Arrays:
        return {"logits": forward_logits(model, inputs["pixel_values"], adapter)}

    def output_bytes(self, request: SegmentationInput, sizes: Sequence[tuple[int, int]]) -> int:
        return answer_bytes(request, sizes, self.labels, (self.processor.height, self.processor.width))

    def postprocess(self, outputs: Arrays, metas: Sequence[ImageMeta], request: SegmentationInput) -> dict[str, Any]:
        originals = [meta.original_size for meta in metas]
        return {"predictions": answers(outputs["logits"], originals, request, self.labels)}
