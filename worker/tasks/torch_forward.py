"""Running a (peft-wrapped) transformers model on named numpy inputs, and its pooled features.

`run` is what every task's forward shares: arrays to the model's device (floats in its dtype),
`torch.inference_mode()`, the adapter chosen the way peft wants it (the base through
`disable_adapter()`, an adapter by `set_adapter` only when it changes), outputs back as float32.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np

Arrays = dict[str, np.ndarray]
# The attribute holding a transformers image classifier's head (the first present is the head).
HEAD_NAMES = ("classifier", "head", "fc", "cls_classifier")


def base_model(model: Any) -> Any:
    """The transformers model under a PeftModel (itself otherwise)."""
    peft = sys.modules.get("peft")
    return model.get_base_model() if peft is not None and isinstance(model, peft.PeftModel) else model


def run(model: Any, inputs: Arrays, adapter: str | None, call: Callable[[Any, dict[str, Any]], Any]) -> Any:
    """`call(model, tensors)` under inference mode, through `adapter` (None = the base)."""
    import torch

    peft = sys.modules.get("peft")  # without peft imported no model can be a PeftModel
    is_peft = peft is not None and isinstance(model, peft.PeftModel)
    first = next(model.parameters())
    tensors = {}
    for name, array in inputs.items():
        x = torch.from_numpy(array)
        dtype = first.dtype if x.is_floating_point() else x.dtype
        tensors[name] = x.to(device=first.device, dtype=dtype, non_blocking=True)
    with torch.inference_mode():
        if is_peft and adapter is None:
            with model.disable_adapter():
                return call(model, tensors)
        if is_peft and model.active_adapter != adapter:
            model.set_adapter(adapter)  # walks every module: only when the adapter changes
        return call(model, tensors)


def to_numpy(tensor: Any) -> np.ndarray:
    return tensor.float().cpu().numpy()


def classification_head(model: Any) -> Any | None:
    """The module a classifier's head is (peft's ModulesToSaveWrapper where it trains it), or None."""
    inner = base_model(model)
    for name in HEAD_NAMES:
        module = getattr(inner, name, None)
        if module is not None and callable(module):
            return module
    return None


def head_features(model: Any, tensors: dict[str, Any]) -> Any:
    """What the classification head reads, per image and flattened: the classifier's own pooling
    (ViT: the final layer-normed CLS token; ConvNeXt and Swin: the pooled, normed features)."""
    head = classification_head(model)
    captured: list = []
    handle = head.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    try:
        model(**tensors)
    finally:
        handle.remove()
    return captured[0].flatten(1)


def pooled_output(model: Any, tensors: dict[str, Any]) -> Any:
    """A backbone's pooled output, as the `image-feature-extraction` pipeline with `pool=True` gives
    it (`pooler_output`); a backbone built without a pooler gives its first token (CLS)."""
    outputs = model(**tensors)
    pooled = getattr(outputs, "pooler_output", None)
    if pooled is None:
        pooled = outputs.last_hidden_state[:, 0]
    return pooled.flatten(1)


def feature_dimensions(model: Any) -> int:
    """The embedding's length, from the model before any forward: the head's input features where a
    Linear head reads them, else the config's hidden size (the last stage's, for CNNs)."""
    head = classification_head(model)
    linear = getattr(head, "original_module", head)  # peft wraps a trained head
    linear = linear[-1] if hasattr(linear, "__getitem__") and not hasattr(linear, "in_features") else linear
    if hasattr(linear, "in_features"):
        return int(linear.in_features)
    config = getattr(base_model(model), "config", None)
    sizes = getattr(config, "hidden_sizes", None)
    return int(sizes[-1] if sizes else getattr(config, "hidden_size", 0) or 0)
