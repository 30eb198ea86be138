"""`fastbackend adapters stamp`: check an adapter against the base it will be served on, run it
once, and write its `fastbackend.json` (the base's fingerprint: the strongest check the worker
makes). The checks are the worker's own (worker.models, exported.inference), not a copy."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from exported.inference import ADAPTER_META_FILE, attach_adapter, load_base_model, model_fingerprint, predict_logits
from exported.preprocess import build_eval_transform, read_preprocess_config, to_pixel_values
from worker.adapters import adapter_folder, publish_folder, skip_reason, staging_folder
from worker.errors import AdapterIncompatible
from worker.hub import local_model_dir
from worker.tasks import task_name_for


def stamp(
    adapter_dir: str | Path,
    base_model: str,
    *,
    task: str = "",
    description: str = "",
    publish_to: str | Path | None = None,
) -> dict[str, Any]:
    """Verify `adapter_dir` against `base_model` (a folder or a cached hub id), run it once on a
    gray image, and write `fastbackend.json`; returns what was written.

    `fastbackend.json` is replaced atomically (written beside it, then renamed). With `publish_to`
    (a live adapters folder) the stamped copy is written there under a hidden name and renamed to
    the adapter's name (worker.adapters.publish_folder): workers never see it half-written.

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
    staged = None
    if publish_to is not None:
        staged = staging_folder(Path(publish_to) / path.name)
        shutil.copytree(folder, staged, dirs_exist_ok=True)
        staged.chmod(0o755)
        folder = staged
    meta_path = folder / ADAPTER_META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta["base_fingerprint"] = fingerprint
    meta["task"] = task or meta.get("task") or task_name_for(base_dir)  # the pipeline task the base serves
    meta["description"] = description or meta.get("description") or f"LoRA adapter for {base_model}"
    partial = meta_path.with_name(f".{ADAPTER_META_FILE}.partial")
    partial.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    os.replace(partial, meta_path)
    if staged is not None:
        publish_folder(staged, Path(publish_to) / path.name)
    return meta
