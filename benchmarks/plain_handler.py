"""The baseline: an idiomatic hand-written RunPod handler doing the worker's predict job.

    PLAIN_MODEL=models/base python -m benchmarks.plain_handler --rp_serve_api --rp_api_port 8000

What one writes from RunPod's examples: everything imported at the top, the model (and the
adapter named by PLAIN_ADAPTER, if any) and its AutoImageProcessor loaded at import, and a
`handler(job)` that decodes the base64 images with PIL, runs the processor and the model, and
returns the top label per image. No validation, limits, metrics or logging. The cold-start and
batch-1 benchmarks measure the worker against it, and benchmarks/production.py runs it in
RunPod's production mode (a sync handler: one job at a time).
"""

import base64
import io
import os

import albumentations  # noqa: F401  (a typical worker imports its augmentation library too)
import peft
import runpod
import torch
import transformers
from PIL import Image

MODEL_DIR = os.environ.get("PLAIN_MODEL", "models/base")
ADAPTER_DIR = os.environ.get("PLAIN_ADAPTER", "")

processor = transformers.AutoImageProcessor.from_pretrained(MODEL_DIR, backend="pil")
model = transformers.AutoModelForImageClassification.from_pretrained(MODEL_DIR).eval()
if ADAPTER_DIR:
    model = peft.PeftModel.from_pretrained(model, ADAPTER_DIR).eval()
MODE = "RGB" if model.config.num_channels == 3 else "L"


def handler(job):
    images = job["input"]["images"]
    images = [images] if isinstance(images, str) else images
    pil = [Image.open(io.BytesIO(base64.b64decode(i))).convert(MODE) for i in images]
    pixels = processor(pil, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        probs = model(pixel_values=pixels).logits.softmax(-1)
    scores, indices = probs.max(-1)
    labels = model.config.id2label
    predictions = [{"label": labels[int(i)], "score": float(s)} for s, i in zip(scores, indices)]
    return {"status": "success", "predictions": predictions}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
