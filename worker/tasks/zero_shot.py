"""zero-shot-image-classification: CLIP-family models (CLIPModel, SiglipModel) choosing among the
labels the request names, as transformers' `zero-shot-image-classification` pipeline answers.

Stages, each request field routed to the one that reads it: preprocess is the image processor's
(pixels only); the forward is the vision tower alone (`get_image_features`), so jobs with different
labels share one micro-batch; postprocess takes `candidate_labels` and `hypothesis_template`, gets the
label set's text embeddings from the bounded cache (worker/zero_shot.py: the text tower runs once per
distinct adapter, template and labels) and scores as the model's forward does. `embed` answers image
vectors (`get_image_features`) and, for `texts`, text vectors (`get_text_features`), in one space.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from worker.clip_towers import image_features, load_tokenizer, logit_scale_bias, text_features
from worker.errors import ModelLoadFailed
from worker.schema import EmbedInput, Images, PredictInput
from worker.tasks.base import Arrays, ImageMeta, Task
from worker.zero_shot import LabelEmbeddings, Texts, ZeroShotFields, zero_shot_predictions

_ENTRY_BYTES = 48  # one ranked entry's keys, braces and score, without its label


class ZeroShotInput(ZeroShotFields, PredictInput):
    """Classify images into the request's own labels (CLIP, SigLIP)."""


class ZeroShotEmbedInput(EmbedInput):
    """Embed images (`get_image_features`) as `embeddings` and texts (`get_text_features`) as `text_embeddings`."""

    images: Images | None = Field(None, description="as for every task; omitted when only `texts` are embedded")
    texts: Texts | None = Field(None, description="texts to embed as sent (no template), 1 to 256")

    @model_validator(mode="after")
    def _something(self) -> ZeroShotEmbedInput:
        if self.images is None and self.texts is None:
            raise ValueError("send `images`, `texts` or both")
        return self


class ZeroShotImageClassification(Task):
    name = "zero-shot-image-classification"
    request = ZeroShotInput
    embed_request = ZeroShotEmbedInput
    mapping = "MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES"
    output_advice = "send fewer candidate_labels"

    def __init__(self, fns: Any) -> None:
        super().__init__(fns)
        self.tokenizer: Any = None
        self.label_embeddings = LabelEmbeddings()
        # The text tower runs in postprocess, outside the host's forward: this lock keeps it and the
        # vision forward (both choose peft's global active adapter) one at a time.
        self._tower_lock = threading.RLock()
        self._model: Any = None  # the served model as the last forward saw it (a PeftModel once adapters load)

    def load_processor(self, base: Path) -> None:
        super().load_processor(base)
        self.tokenizer = load_tokenizer(base)

    def load_model(self, base: Path, device: str, dtype: str) -> Any:
        import torch
        from transformers import AutoModel

        try:
            model = AutoModel.from_pretrained(str(base), dtype=getattr(torch, dtype), use_safetensors=True)
        except Exception as exc:  # one line naming the folder (the message of from_pretrained says which file)
            raise ModelLoadFailed(f"{base}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from None
        if not hasattr(model, "get_text_features") or not hasattr(model, "get_image_features"):
            raise ModelLoadFailed(
                f"{base}: {type(model).__name__} has no text and image towers (CLIPModel, SiglipModel)"
            )
        self._model = model.to(device).eval()
        self.dimensions = int(getattr(model.config, "projection_dim", 0) or model.config.text_config.hidden_size)
        self.pooling = f"get_image_features / get_text_features of {type(model).__name__} (projected, shared space)"
        return self._model

    def blank_inputs(self) -> Arrays:
        size = self.processor.height, self.processor.width
        return {"pixel_values": np.zeros((1, 3, *size), dtype=np.float32)}

    def _vision(self, model: Any, inputs: Arrays, adapter: str | None) -> Arrays:
        from worker.tasks.torch_forward import run, to_numpy

        with self._tower_lock:
            self._model = model
            return {"image_embeds": to_numpy(run(model, inputs, adapter, lambda m, t: image_features(m, **t)))}

    def forward(self, model: Any, inputs: Arrays, adapter: str | None) -> Arrays:
        return self._vision(model, inputs, adapter)

    def embed(self, model: Any, inputs: Arrays, adapter: str | None) -> Arrays:
        return {"embeddings": self._vision(model, inputs, adapter)["image_embeds"]}

    def text_embeddings(self, texts: Sequence[str], adapter: str | None, field: str = "texts") -> np.ndarray:
        """`get_text_features` of `texts` through `adapter` (None = the base), as the pipeline tokenises."""
        from worker.tasks.torch_forward import run

        with self._tower_lock:
            return run(self._model, {}, adapter, lambda m, _: text_features(m, self.tokenizer, texts, field))

    def embed_texts(self, model: Any, texts: Sequence[str], adapter: str | None) -> np.ndarray:
        """The `embed` op's texts: (len(texts), D) `get_text_features` through `adapter`; the host holds
        its model lock (the same order as a vision forward: host lock, then the tower lock)."""
        with self._tower_lock:
            self._model = model
            return self.text_embeddings(texts, adapter)

    def output_bytes(self, request: ZeroShotInput, sizes: Sequence[tuple[int, int]]) -> int:
        labels = sum(len(json.dumps(label)) + _ENTRY_BYTES for label in request.candidate_labels)
        return len(sizes) * (labels + 16)

    def postprocess(self, outputs: Arrays, metas: Sequence[ImageMeta], request: ZeroShotInput) -> dict[str, Any]:
        labels = tuple(request.candidate_labels)
        key = (request.adapter, request.hypothesis_template, labels)
        label_embeds = self.label_embeddings.get(
            key, lambda sentences: self.text_embeddings(sentences, request.adapter, "candidate_labels")
        )
        scale, bias = logit_scale_bias(self._model)
        return {"predictions": zero_shot_predictions(outputs["image_embeds"], label_embeds, labels, scale, bias)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "label_cache": self.label_embeddings.stats()}
