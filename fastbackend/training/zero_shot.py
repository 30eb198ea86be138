"""Training and evaluating CLIP-family models (CLIPModel, SiglipModel) on an image folder whose class
names are the captions: the contrastive objective with the model's own logit scale.

`CaptionContrastive` wraps the model so that the project's one training loop (`fit` of
exported/train_adapter.py: checkpoints, resume, early stopping, curves) trains it as it trains a
classifier: its forward takes `pixel_values` and `labels` and answers `loss` and `logits`, the
logits being the model's own `logits_per_image` against one caption per class ("a photo of the
digit seven"). The loss is the model's:
- CLIP: the image-to-text half of its contrastive loss (cross-entropy of `logit_scale.exp()` times
  the cosine similarities) over the class captions. With class names as captions, several images of
  a batch share one caption, so the captions are the classes (deduplicated) rather than the batch;
- SigLIP: its pairwise sigmoid loss (`logit_scale`, `logit_bias`), +1 for an image's own caption,
  -1 for every other, summed over the captions and averaged over the images, as SiglipModel's.
Both towers run at every step, so LoRA on the text tower (or a model trained from scratch) learns too.

Evaluation answers what the served task answers: zero-shot accuracy with the class names through
a hypothesis template, and image-to-text recall@k against the captions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worker.clip_towers import image_features, text_features, tokenize
from worker.zero_shot import is_siglip, normalized, sentences

TASK = "zero-shot-image-classification"
# LoRA's default targets per tower (peft matches a regex against the full module name). The vision
# tower also adapts its patch embedding: a shift in the pixels (inverted images) is first seen there.
TOWER_TARGETS = {
    "vision": r"vision_model\.(embeddings\.patch_embedding|encoder\.layers\.\d+\.self_attn\.(q_proj|v_proj))",
    "text": r"text_model\.encoder\.layers\.\d+\.self_attn\.(q_proj|v_proj)",
}
TOWERS = ("vision", "text", "both")


def target_modules(towers: str) -> str:
    """The LoRA target regex for `towers` ("vision", "text" or "both")."""
    if towers not in TOWERS:
        raise ValueError(f"towers must be one of {TOWERS}, got {towers!r}")
    chosen = [TOWER_TARGETS[t] for t in ("vision", "text") if towers in (t, "both")]
    return r".*(" + "|".join(chosen) + r")$"


@dataclass
class Output:
    """What `fit` reads of a forward: the loss and the (images, classes) logits."""

    loss: torch.Tensor
    logits: torch.Tensor


def _inner(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def scale_and_bias(model: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    inner = _inner(model)
    return inner.logit_scale.exp(), getattr(inner, "logit_bias", None)


class CaptionContrastive(torch.nn.Module):
    """A CLIP-family model (a PeftModel or a bare one) with captions for each class, trained by `fit`.

    Each of `templates` makes one caption per class from `class_names` ("a photo of the digit {}"
    -> "a photo of the digit seven"). `forward(pixel_values, labels)` scores every image against
    every caption (the model's logits_per_image); the loss is the model's contrastive loss (module
    docstring) per template, averaged over the templates, so each phrasing learns to pick the class;
    `logits` (what `fit` counts accuracy on) are the mean over the templates, (images, classes).
    """

    def __init__(self, model: Any, tokenizer: Any, class_names: Sequence[str], templates: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.siglip = is_siglip(_inner(model).config)
        self.shape = (len(templates), len(class_names))
        every = [caption for template in templates for caption in sentences(class_names, template)]
        self.tokens = tokenize(tokenizer, _inner(model).config, every, "captions")

    def caption_logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(images, templates, classes): logit_scale.exp() x cosine (+ logit_bias for SigLIP)."""
        inner = _inner(self.model)
        device = pixel_values.device
        images = image_features(self.model, pixel_values)
        texts = inner.get_text_features(**{k: v.to(device) for k, v in self.tokens.items()})
        texts = getattr(texts, "pooler_output", texts)  # transformers 5: the output; 4.x: the tensor
        images = images / images.norm(dim=-1, keepdim=True)
        texts = texts / texts.norm(dim=-1, keepdim=True)
        scale, bias = scale_and_bias(self.model)
        logits = scale * images @ texts.T
        logits = logits + bias if bias is not None else logits
        return logits.reshape(len(images), *self.shape)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> Output:
        logits = self.caption_logits(pixel_values)
        if labels is None:
            return Output(torch.zeros((), device=logits.device), logits.mean(dim=1))
        templates, classes = self.shape
        flat, targets = logits.reshape(-1, classes), labels.repeat_interleave(templates)
        if self.siglip:
            signs = 2 * torch.nn.functional.one_hot(targets, classes).to(flat.dtype) - 1
            loss = -torch.nn.functional.logsigmoid(signs * flat).sum(dim=1).mean()
        else:
            loss = torch.nn.functional.cross_entropy(flat, targets)
        return Output(loss, logits.mean(dim=1))


def load_clip(base_dir: str | Path, device: str = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer) as the worker loads them: AutoModel (safetensors) and the tokenizer beside it."""
    from transformers import AutoModel

    from worker.clip_towers import load_tokenizer

    model = AutoModel.from_pretrained(str(base_dir), use_safetensors=True).to(device).eval()
    return model, load_tokenizer(Path(base_dir))


def new_clip_adapter(
    base_dir: str | Path, *, towers: str = "vision", rank: int = 8, alpha: int = 16, seed: int = 0, device: str = "cpu"
) -> tuple[Any, Any]:
    """(PeftModel with a fresh LoRA adapter on `towers`, tokenizer) to train."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = load_clip(base_dir, device)
    torch.manual_seed(seed)  # LoRA's initial weights
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=target_modules(towers))
    return get_peft_model(model, config), tokenizer


def embed_images(model: Any, prep: Any, images: Sequence[np.ndarray], batch_size: int = 128) -> np.ndarray:
    """(N, D) normalised `get_image_features` of uint8 images on the eval transform's pixels (as served)."""
    from exported.preprocess import build_eval_transform, to_pixel_values

    transform = build_eval_transform(prep)
    device = next(model.parameters()).device
    rows = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(to_pixel_values(images[start : start + batch_size], transform, prep)).to(device)
            rows.append(image_features(model, x).float().cpu().numpy())
    return normalized(np.concatenate(rows))


def embed_texts(model: Any, tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
    """(len(texts), D) normalised `get_text_features`, tokenised as the pipeline does."""
    model.eval()
    with torch.inference_mode():
        return normalized(text_features(model, tokenizer, texts, "captions"))


def zero_shot_accuracy(image_embeds: np.ndarray, class_embeds: np.ndarray, labels: Sequence[int]) -> float:
    """How often the nearest class sentence (cosine) is the image's class: the served top-1 label."""
    return float(((image_embeds @ class_embeds.T).argmax(axis=1) == np.asarray(labels)).mean())


def image_to_text_recall(
    image_embeds: np.ndarray,
    caption_embeds: np.ndarray,
    caption_labels: Sequence[int],
    labels: Sequence[int],
    ks: Sequence[int] = (1, 5),
) -> dict[int, float]:
    """{k: recall@k} of image-to-text retrieval: is a caption of the image's class among its k nearest?"""
    from fastbackend.embeddings import recall_at_k

    return recall_at_k(caption_embeds, caption_labels, image_embeds, labels, ks=ks)
