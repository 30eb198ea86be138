"""What the runtime needs from the exported notebook modules.

The generated handler fills a NotebookFunctions from the exported modules that define these
functions (`fastbackend export` finds them, and fails naming any that no notebook exports); the
runtime never imports exported code itself, so the same runtime serves any notebooks that
provide these functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NotebookFunctions:
    # preprocessing (notebooks/01_preprocess.ipynb)
    read_preprocess_config: Callable[[str], Any]
    build_eval_transform: Callable[[Any], Any]
    to_pixel_values: Callable[[list, Any, Any], Any]
    resize_target: Callable[[int, int, Any], tuple[int, int]]  # (h, w) the resize makes; fast decode's floor
    # loading and inference (notebooks/02_inference.ipynb)
    load_base_model: Callable[..., Any]
    model_fingerprint: Callable[[str], str]
    read_adapter_meta: Callable[[str], dict]
    attach_adapter: Callable[..., Any]
    detach_adapter: Callable[[Any, str], None]
    merge_adapter: Callable[[Any, str], Any]
    predict_logits: Callable[..., Any]
    top_k: Callable[..., list]
    model_labels: Callable[[Any], list]

    @classmethod
    def from_modules(cls, *modules: Any) -> NotebookFunctions:
        """Take each function from the first module that defines it.

        Raises:
            AttributeError: a function is missing; names it and the modules searched.
        """
        from dataclasses import fields

        found = {}
        for f in fields(cls):
            owner = next((m for m in modules if hasattr(m, f.name)), None)
            if owner is None:
                names = ", ".join(m.__name__ for m in modules)
                raise AttributeError(f"no exported function {f.name!r} in {names}; export it from a notebook")
            found[f.name] = getattr(owner, f.name)
        return cls(**found)
