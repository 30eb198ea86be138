"""Notebook functions without a model: the runtime's contract filled with numpy stand-ins.

The runtime under test (Worker, ModelHost, ops, batching) is real; only what the notebooks
would provide (torch model, transforms) is replaced, so these tests need no weights.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from worker.contract import NotebookFunctions

LABELS = ["cat", "dog"]


def stub_functions() -> NotebookFunctions:
    def top_k(logits, k, labels):
        return [{"label": labels[int(np.argmax(row))], "score": 1.0} for row in logits]

    return NotebookFunctions(
        read_preprocess_config=lambda base: SimpleNamespace(num_channels=3, height=4, width=4),
        build_eval_transform=lambda config: None,
        to_pixel_values=lambda images, transform, config: np.zeros((len(images), 3, 4, 4), np.float32),
        resize_target=lambda height, width, config: (4, 4),
        load_base_model=lambda base, device, dtype: {"adapters": []},
        model_fingerprint=lambda base: "",
        read_adapter_meta=lambda path: {"task": "stub"},
        attach_adapter=lambda model, path, name, base_fingerprint: {"adapters": [*model["adapters"], name]},
        detach_adapter=lambda model, name: model["adapters"].remove(name),
        merge_adapter=lambda model, name: model,
        predict_logits=lambda model, pixels, adapter: np.tile(np.array([0.0, 1.0], np.float32), (len(pixels), 1)),
        top_k=top_k,
        model_labels=lambda model: LABELS,
    )


def write_stub_adapter(folder: Path, config: dict | None = None) -> Path:
    """An adapter folder the runtime accepts as complete: its config and a valid (empty) safetensors file."""
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps(config or {}))
    (folder / "adapter_model.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")
    return folder
