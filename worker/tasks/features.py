"""image-feature-extraction: one vector per image from a bare backbone (ViTModel, Dinov2Model,
CLIPVisionModel, ConvNextModel ...), as transformers' `image-feature-extraction` pipeline with
`pool=True` gives it: the model's `pooler_output` (ViT: tanh(dense(CLS)); Dinov2 and CLIP's vision
tower: the layer-normed CLS token; ConvNeXt: the layer-normed mean over positions). A backbone
built without a pooler gives its first token. `predict` is the `embed` op.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from worker.errors import ModelLoadFailed
from worker.schema import EmbedOptions, PredictInput
from worker.tasks import embeddings
from worker.tasks.base import Arrays, ImageMeta, Task, Training


class FeatureExtractionInput(PredictInput, EmbedOptions):
    """Embed images with the base backbone or a named adapter (the same as the `embed` op)."""


class ImageFeatureExtraction(Task):
    name = "image-feature-extraction"
    request = FeatureExtractionInput
    mapping = "MODEL_MAPPING_NAMES"
    output_advice = "use encoding_format base64"
    training = Training(
        dataset="a labelled dataset as for image-classification (image folder or manifest): a gallery split "
        "and a query split; labels are only compared, never predicted",
        readers=("worker.datasets:load_dataset",),
        loss="none: a backbone is served as it is (its embeddings are evaluated, not trained here)",
        metrics=("recall@1", "recall@5"),
        evaluate="fastbackend.embeddings:recall_at_k",
    )

    def load_model(self, base: Path, device: str, dtype: str) -> Any:
        import torch
        from transformers import AutoModel

        from worker.tasks.torch_forward import feature_dimensions

        weights = base / "model.safetensors"
        try:
            model, info = AutoModel.from_pretrained(
                str(base), dtype=getattr(torch, dtype), use_safetensors=True, output_loading_info=True
            )
        except Exception as exc:
            raise ModelLoadFailed(f"{weights}: cannot load ({type(exc).__name__}: {exc})") from exc
        problems = {k: v for k, v in info.items() if k in ("missing_keys", "mismatched_keys") and v}
        if problems:
            raise ModelLoadFailed(f"{weights}: weights do not fit the model config: {problems}")
        self.dimensions = feature_dimensions(model)
        # ViTModel built with add_pooling_layer=False has `pooler = None`; its pooler_output is then None too.
        has_pooler = getattr(model, "pooler", True) is not None
        self.pooling = f"{type(model).__name__}.pooler_output" if has_pooler else "the first token (no pooler)"
        return model.to(device).eval()

    def forward(self, model: Any, inputs: Arrays, adapter: str | None) -> Arrays:
        return self.embed(model, inputs, adapter)

    def output_bytes(self, request: FeatureExtractionInput, sizes: Sequence[tuple[int, int]]) -> int:
        return embeddings.answer_bytes(len(sizes), self.dimensions, request.encoding_format)

    def postprocess(
        self, outputs: Arrays, metas: Sequence[ImageMeta], request: FeatureExtractionInput
    ) -> dict[str, Any]:
        return embeddings.encode(outputs["embeddings"], request, self.pooling)
