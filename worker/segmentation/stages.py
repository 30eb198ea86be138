"""The `image-segmentation` task's stages, for the task seam: model, request, forward, size, answer.

The task module on the seam (worker/tasks/) is a thin subclass that calls these: its request
is `PredictInput` plus `SegmentationOptions`, its forward `forward_logits`, its size estimate
`answer_bytes` and its postprocess `answers`. Preprocessing is the parity engine's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from worker.config import BUCKET_ENV_VARS
from worker.errors import ErrorCode, ModelLoadFailed, WorkerError
from worker.segmentation.answer import (
    class_map,
    compact_answer,
    estimate_image_bytes,
    masks_answer,
    output_shape,
    uploaded_compact_answer,
    uploaded_masks_answer,
)
from worker.uploads import Bucket, job_prefix

MAPPING = "MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES"  # transformers' auto-mapping served
OUTPUT_ADVICE = (
    'use "format": "compact" (one class-id PNG per image), "output_size": "model", or "output": "upload" '
    "(each PNG put in the worker's bucket, answered by URL; needs BUCKET_ENDPOINT_URL, BUCKET_ACCESS_KEY_ID and "
    "BUCKET_SECRET_ACCESS_KEY on the worker)"
)


NO_BUCKET = f'"output": "upload" needs a bucket, and this worker has none ({", ".join(BUCKET_ENV_VARS)} unset)'


class SegmentationOptions(BaseModel):
    """The segmentation request's own fields (routed to the postprocess only)."""

    format: Literal["masks", "compact"] = Field(
        "masks",
        description='"masks": one {label, score: null, mask} per class present, as transformers\' '
        'image-segmentation pipeline (mask: base64 PNG, mode L, 0/255); "compact": one class-id PNG '
        "(8-bit, 16-bit past 256 classes) and each label's pixel area",
    )
    output_size: Literal["original", "model"] = Field(
        "original", description='"original": the upright photo\'s size; "model": the logits\' own grid'
    )
    output: Literal["inline", "upload"] = Field(
        "inline",
        description='"inline": PNGs in the answer as base64; "upload": each PNG put in the worker\'s bucket '
        "(runpod's rp_upload, BUCKET_* variables) and answered by its URL (`mask_url`, `class_map_url`)",
    )


def load_model(base: Path, device: str, dtype: str) -> tuple[Any, list[str]]:
    """The base segmenter (AutoModelForSemanticSegmentation, safetensors) in eval mode, and its labels."""
    import torch
    from transformers import AutoModelForSemanticSegmentation

    if not (Path(base) / "config.json").is_file():
        raise ModelLoadFailed(f"{Path(base) / 'config.json'}: missing (no model folder at {base})")
    try:
        model, info = AutoModelForSemanticSegmentation.from_pretrained(
            str(base), dtype=getattr(torch, dtype), use_safetensors=True, output_loading_info=True
        )
    except Exception as exc:
        raise ModelLoadFailed(f"{base}: cannot load as a semantic segmenter ({type(exc).__name__}: {exc})") from exc
    if info.get("missing_keys") or info.get("mismatched_keys"):
        raise ModelLoadFailed(f"{base}/model.safetensors: weights do not fit the model config: {info}")
    model = model.to(device).eval()
    labels = [str(model.config.id2label.get(i, i)) for i in range(model.config.num_labels)]
    return model, labels


def forward_logits(model: Any, pixel_values: np.ndarray, adapter: str | None) -> np.ndarray:
    """Logits (N, C, h, w) as float32; with a PeftModel, the base alone when `adapter` is None."""
    import sys

    import torch

    peft = sys.modules.get("peft")
    is_peft = peft is not None and isinstance(model, peft.PeftModel)
    first = next(model.parameters())
    x = torch.from_numpy(pixel_values).to(device=first.device, dtype=first.dtype)
    with torch.inference_mode():
        if is_peft and adapter is None:
            with model.disable_adapter():
                logits = model(pixel_values=x).logits
        else:
            if is_peft and model.active_adapter != adapter:
                model.set_adapter(adapter)
            logits = model(pixel_values=x).logits
    return logits.float().cpu().numpy()


def answer_bytes(
    options: SegmentationOptions,
    sizes: Sequence[tuple[int, int]],
    labels: Sequence[str],
    grid: tuple[int, int],
    uploaded: bool = False,
) -> int:
    """The answer's expected JSON size before any decode: `sizes` are the headers' (height, width),
    `grid` bounds the logits' (the model's input size); `uploaded`: URLs instead of the PNGs."""
    total = 0
    for height, width in sizes:
        h, w = output_shape((height, width), grid, options.output_size)
        # The header's size is before EXIF turns it: the longer side as rows bounds either way.
        total += estimate_image_bytes(max(h, w), min(h, w), options.format, labels, uploaded=uploaded)
    return total


def answers(
    logits: np.ndarray,
    originals: Sequence[tuple[int, int]],
    options: SegmentationOptions,
    labels: Sequence[str],
    bucket: Bucket | None = None,
) -> list[Any]:
    """One answer per image from its logits and upright original (height, width); with "output":
    "upload", its PNGs put in `bucket` under `<job prefix>/<image index>/` and answered by URL."""
    upload = options.output == "upload"
    if upload and bucket is None:  # output_bytes refuses it before the work; never answer inline instead
        raise WorkerError(ErrorCode.INVALID_INPUT, NO_BUCKET, field="output")
    prefix = job_prefix() if upload else ""
    results = []
    for n, (row, original) in enumerate(zip(logits, originals)):
        size = original if options.output_size == "original" else None
        ids = class_map(row, size)
        if upload:

            def put(name: str, data: bytes, n: int = n) -> str:
                return bucket.put(f"{prefix}/{n}/{name}", data)

            make = uploaded_masks_answer if options.format == "masks" else uploaded_compact_answer
            results.append(make(ids, labels, put))
        else:
            results.append(masks_answer(ids, labels) if options.format == "masks" else compact_answer(ids, labels))
    return results
