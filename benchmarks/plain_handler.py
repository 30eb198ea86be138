"""The baseline: a plain synchronous RunPod handler of the same model, as one writes it by hand.

    python -m benchmarks.plain_handler      (RunPod's production mode when RUNPOD_WEBHOOK_GET_JOB is set)

Setup before start(), then one job at a time: decode, preprocess, forward, top-1. No
validation, no micro-batching, no concurrency: RunPod's default for a sync handler.
"""

from __future__ import annotations

import base64
import io
import os

import numpy as np
from PIL import Image

from exported import inference, preprocess

MODELS = os.environ.get("PLAIN_MODELS", "models")
MODEL = inference.load_base_model(f"{MODELS}/base")
for _name in ("inverted", "rot90"):
    MODEL = inference.attach_adapter(MODEL, f"{MODELS}/adapters/{_name}", _name)
CONFIG = preprocess.read_preprocess_config(f"{MODELS}/base")
TRANSFORM = preprocess.build_eval_transform(CONFIG)
LABELS = inference.model_labels(MODEL)


def handler(job: dict) -> dict:
    try:
        job_input = job["input"]
        encoded = job_input["images"] if isinstance(job_input["images"], list) else [job_input["images"]]
        images = [np.asarray(Image.open(io.BytesIO(base64.b64decode(e))).convert("RGB")) for e in encoded]
        logits = inference.predict_logits(
            MODEL, preprocess.to_pixel_values(images, TRANSFORM, CONFIG), job_input.get("adapter")
        )
        return {"status": "success", "predictions": inference.top_k(logits, 1, LABELS)}
    except Exception as exc:
        return {"status": "error", "error": str(exc)}


if __name__ == "__main__":
    import runpod

    runpod.serverless.start({"handler": handler})
