"""image-classification: ranked labels per image, as transformers' `image-classification` pipeline.

The model, its forward and the ranking are the notebooks' (`load_base_model`, `predict_logits`,
`top_k` in exported/inference.py); this module routes the request's fields to the stage that
reads them: `top_k` and `return_logits` to the postprocess, nothing to preprocess or forward.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, StrictBool, StrictInt

from worker.schema import PredictInput
from worker.tasks.base import Arrays, ImageMeta, Task, Training

MAX_TOP_K = 100
_ENTRY_BYTES = 64  # a ranked entry's keys, index and score, without its label
_LOGIT_BYTES = 25  # one float as JSON (at most 24 characters), with its comma


class ClassificationInput(PredictInput):
    """Classify images with the base model or a named adapter."""

    top_k: StrictInt = Field(1, ge=1, le=MAX_TOP_K, description="how many ranked labels to return per image")
    return_logits: StrictBool = Field(False, description="also return the raw logits")


class ImageClassification(Task):
    name = "image-classification"
    request = ClassificationInput
    mapping = "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"
    output_advice = "ask for less (top_k, return_logits)"
    training = Training(
        dataset="an image folder (one subfolder per class, the folder name is the label) or a CSV/JSONL "
        "manifest with `path`, `label` and optionally `split` columns",
        readers=("worker.datasets:load_dataset",),
        loss="the model's own: cross-entropy of the classifier's logits against `labels` (`outputs.loss`)",
        metrics=("accuracy", "top_k_accuracy", "macro_precision", "macro_recall", "per_class", "confusion"),
        evaluate="exported.inference:classification_metrics",
        trainer="exported.train_adapter:fit",
    )

    def load_model(self, base: Path, device: str, dtype: str) -> Any:
        from worker.tasks.torch_forward import feature_dimensions

        model = self.fns.load_base_model(base, device=device, dtype=dtype)
        self.labels = self.fns.model_labels(model)
        self.dimensions = feature_dimensions(model)
        self.pooling = f"the input of the classification head ({type(model).__name__})"
        return model

    def forward(self, model: Any, inputs: Arrays, adapter: str | None) -> Arrays:
        return {"logits": self.fns.predict_logits(model, inputs["pixel_values"], adapter)}

    def output_bytes(self, request: ClassificationInput, sizes: Sequence[tuple[int, int]]) -> int:
        # The longest label in every place a label appears: a bound, not a guess (check_output measures).
        label = max((len(json.dumps(label)) for label in self.labels), default=2)
        ranked = min(request.top_k, len(self.labels))
        per_image = 2 * _ENTRY_BYTES + (ranked + 1) * (label + _ENTRY_BYTES)
        if request.return_logits:
            per_image += len(self.labels) * _LOGIT_BYTES
        return len(sizes) * per_image

    def postprocess(self, outputs: Arrays, metas: Sequence[ImageMeta], request: ClassificationInput) -> dict[str, Any]:
        logits = outputs["logits"]
        predictions = self.fns.top_k(logits, request.top_k, self.labels)
        if request.return_logits:
            for prediction, row in zip(predictions, logits):
                prediction["logits"] = [float(v) for v in row]
        return {"predictions": predictions}
