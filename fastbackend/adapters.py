"""`fastbackend adapters stamp`: check an adapter against the base it will be served on, run it
once, and write its `fastbackend.json` (the base's fingerprint: the strongest check the worker
makes). The checks are the worker's own (worker.models, exported.inference), not a copy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from exported.inference import ADAPTER_META_FILE, attach_adapter, load_base_model, model_fingerprint, predict_logits
from exported.preprocess import build_eval_transform, read_preprocess_config, to_pixel_values
from worker.errors import AdapterIncompatible
from worker.hub import local_model_dir
from worker.models import adapter_folder, skip_reason
from worker.tasks import task_name_for


def stamp(adapter_dir: str | Path, base_model: str, *, task: str = "", description: str = "") -> dict[str, Any]:
    """Verify `adapter_dir` against `base_model` (a folder or a cached hub id), run it once on a
    gray image, and write `fastbackend.json`; returns what was written.

    Raises:
        ModelLoadFailed: the base cannot be loaded.
        AdapterIncompatible: no adapter, a name the worker would skip, another base (peft's
            `base_model_name_or_path`, or a fingerprint already recorded), keys or shapes that do
            not match, or non-finite outputs.
    """
    path = Path(adapter_dir)
    if not path.is_dir():
        raise AdapterIncompatible(f"{path}: not a folder")
    folder = adapter_folder(path)
    reason = skip_reason(path, folder, base_model)
    if reason:
        raise AdapterIncompatible(f"{path}: {reason}" if folder is None else reason)
    base_dir = local_model_dir(base_model)
    fingerprint = model_fingerprint(base_dir)
    config = read_preprocess_config(base_dir)
    model = attach_adapter(load_base_model(base_dir), folder, "stamp", base_fingerprint=fingerprint)
    gray = np.full((config.height, config.width, 3), 128, dtype=np.uint8)
    logits = predict_logits(model, to_pixel_values([gray], build_eval_transform(config), config), adapter="stamp")
    if not np.isfinite(logits).all():
        raise AdapterIncompatible(f"{folder}: the adapter gives non-finite outputs on {base_model}")
    meta_path = folder / ADAPTER_META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta["base_fingerprint"] = fingerprint
    meta["task"] = task or meta.get("task") or task_name_for(base_dir)  # the pipeline task the base serves
    meta["description"] = description or meta.get("description") or f"LoRA adapter for {base_model}"
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta
