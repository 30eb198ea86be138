"""A CLIP-family model's two towers (CLIPModel, SiglipModel): loading with the tokenizer beside it,
and each tower's features as the model's own `get_image_features` / `get_text_features` give them.

torch and transformers are imported where used: importing the runtime stays cheap.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from worker.errors import ModelLoadFailed
from worker.zero_shot import max_text_tokens, tokenizer_kwargs, too_many_tokens

TEXT_TOWERS = ("text_model", "text_projection")  # CLIPModel's and SiglipModel's text-side modules
# Packages a slow tokenizer may need that this project does not install, with what each brings along.
TOKENIZER_PACKAGES = {"sentencepiece": ("protobuf",), "protobuf": ()}


def load_tokenizer(base: Path) -> Any:
    """The tokenizer saved beside the base (AutoTokenizer, offline).

    Raises:
        ModelLoadFailed: one line naming the folder when none is there or it cannot be read.
    """
    from transformers import AutoTokenizer

    names = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "spiece.model")
    if not any((base / name).is_file() for name in names):
        raise ModelLoadFailed(
            f"{base}: no tokenizer beside the model (tokenizer.json or tokenizer_config.json); a CLIP-family "
            "model needs its text tokenizer: save it with tokenizer.save_pretrained (or the processor's)"
        )
    try:
        return AutoTokenizer.from_pretrained(str(base))
    except Exception as exc:  # transformers raises many types for a broken tokenizer; one line names it
        said = " ".join(str(exc).split())
        missing = [p for p in TOKENIZER_PACKAGES if p.lower() in said.lower()] if isinstance(exc, ImportError) else []
        if missing:  # a hub SigLIP's SiglipTokenizer is a SentencePiece model (protobuf reads its files)
            raise ModelLoadFailed(
                f"{base}: its tokenizer needs {' and '.join(missing)}, not installed in this image: "
                f"pip install {' '.join(dict.fromkeys((*missing, *TOKENIZER_PACKAGES[missing[0]])))}"
            ) from None
        raise ModelLoadFailed(f"{base}: tokenizer unreadable ({type(exc).__name__}: {said[:200]})") from None


def _inner(model: Any) -> Any:
    peft = sys.modules.get("peft")
    return model.get_base_model() if peft is not None and isinstance(model, peft.PeftModel) else model


def _pooled(output: Any) -> Any:
    # transformers 5 returns the model output with the projection in pooler_output; 4.x a tensor.
    return getattr(output, "pooler_output", output)


def image_features(model: Any, pixel_values: Any) -> Any:
    """`get_image_features` of a (peft-wrapped) CLIP-family model: (N, D), projected, not normalised."""
    return _pooled(_inner(model).get_image_features(pixel_values=pixel_values))


def tokenize(tokenizer: Any, config: Any, texts: Sequence[str], field: str = "candidate_labels") -> dict[str, Any]:
    """The texts as the pipeline tokenises them (pt tensors).

    Raises:
        WorkerError: INVALID_INPUT naming a text longer than the text tower reads (CLIP, not truncated).
    """
    encoded = tokenizer(list(texts), return_tensors="pt", **tokenizer_kwargs(config))
    lengths = encoded["attention_mask"].sum(dim=1).tolist() if "attention_mask" in encoded else []
    error = too_many_tokens(lengths, max_text_tokens(config), field)
    if error is not None:
        raise error
    return dict(encoded)


def text_features(model: Any, tokenizer: Any, texts: Sequence[str], field: str = "candidate_labels") -> np.ndarray:
    """`get_text_features` of the texts as the pipeline tokenises them: (len(texts), D) float32.
    The caller holds the model's lock and has chosen the adapter (peft)."""
    import torch

    inner = _inner(model)
    tokens = tokenize(tokenizer, inner.config, texts, field)
    device = next(model.parameters()).device
    with torch.inference_mode():
        features = _pooled(inner.get_text_features(**{k: v.to(device) for k, v in tokens.items()}))
    return features.float().cpu().numpy()


def logit_scale_bias(model: Any) -> tuple[float, float | None]:
    """The model's `logit_scale.exp()` and (SigLIP) `logit_bias`, as its forward applies them."""
    inner = _inner(model)
    scale = float(inner.logit_scale.detach().float().exp().item())
    bias = getattr(inner, "logit_bias", None)
    return scale, (float(bias.detach().float().reshape(-1)[0].item()) if bias is not None else None)
