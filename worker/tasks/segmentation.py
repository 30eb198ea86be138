"""image-segmentation (semantic): one mask per class present, as transformers' `image-segmentation` pipeline.

The stages are worker/segmentation/stages.py's; this module routes the request's `format`,
`output_size` and `output` to the postprocess (and the size estimate), nothing to preprocess or
forward. With runpod's BUCKET_* variables set, `"output": "upload"` puts each PNG in the bucket
(worker/uploads.py) and answers its URL.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from worker.config import bucket_configured
from worker.errors import ErrorCode, WorkerError
from worker.schema import PredictInput
from worker.segmentation.stages import (
    MAPPING,
    NO_BUCKET,
    OUTPUT_ADVICE,
    SegmentationOptions,
    answer_bytes,
    answers,
    forward_logits,
    load_model,
)
from worker.tasks.base import Arrays, ImageMeta, Task
from worker.uploads import Bucket


class SegmentationInput(PredictInput, SegmentationOptions):
    """Segment images with the base model or a named adapter."""


class ImageSegmentation(Task):
    name = "image-segmentation"
    request = SegmentationInput
    mapping = MAPPING
    output_advice = OUTPUT_ADVICE

    bucket: Bucket | None = None  # the operator's bucket for "output": "upload" (runpod's BUCKET_* variables)

    def load_model(self, base: Path, device: str, dtype: str) -> Any:
        model, self.labels = load_model(base, device, dtype)
        if self.config is not None and bucket_configured():
            self.bucket = Bucket.open(self.config.upload_bucket)
        return model

    def forward(self, model: Any, inputs: Arrays, adapter: str | None) -> Arrays:
        return {"logits": forward_logits(model, inputs["pixel_values"], adapter)}

    def output_bytes(self, request: SegmentationInput, sizes: Sequence[tuple[int, int]]) -> int:
        grid = (self.processor.height, self.processor.width)
        uploaded = request.output == "upload" and self.bucket is not None
        size = answer_bytes(request, sizes, self.labels, grid, uploaded=uploaded)
        # Asked to upload with no bucket: nothing can go out of band. An answer too large inline is
        # OUTPUT_TOO_LARGE (its advice names the bucket variables), any other a refused field: never
        # answered inline in its place.
        limit = self.config.max_output_bytes if self.config is not None else size
        if request.output == "upload" and self.bucket is None and size <= limit:
            raise WorkerError(ErrorCode.INVALID_INPUT, NO_BUCKET, field="output")
        return size

    def postprocess(self, outputs: Arrays, metas: Sequence[ImageMeta], request: SegmentationInput) -> dict[str, Any]:
        originals = [meta.original_size for meta in metas]
        return {"predictions": answers(outputs["logits"], originals, request, self.labels, self.bucket)}

    def describe(self) -> dict[str, Any]:
        upload = {"upload": {"bucket": self.bucket.shown() if self.bucket else None}}
        return {**super().describe(), **upload}
