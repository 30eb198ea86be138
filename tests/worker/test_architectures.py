"""The common architectures, served with a LoRA adapter: through RunPod's local API, and merged.

For each architecture (tests/fixtures/architectures.py: a tiny random model and its processor; the
default LoRA `target_modules` of notebook 03, `default_target_modules`), a peft LoRA adapter with
random weights is saved as peft saves it. The worker serves it through `--rp_serve_api`; its
logits must equal peft's own (the adapter active on the base) within 1e-4, and a worker serving
the adapter merged into the base (FASTBACKEND_MERGE_ADAPTER) must answer the same within 1e-4.
`make test` runs one representative (ConvNeXt: LoRA on its pointwise layers, never the depthwise
ones); `make test-full` (the `full` marker) runs them all.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fixtures.architectures import ARCHITECTURES, build
from PIL import Image

TOLERANCE = 1e-4
REPRESENTATIVE = ["convnext"]


def _images() -> list[str]:
    from sklearn.datasets import load_sample_images

    out = []
    for array in load_sample_images().images:
        buffer = io.BytesIO()
        Image.fromarray(array).resize((160, 107)).save(buffer, format="PNG")
        out.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return out


def save_lora_adapter(name: str, base_dir, adapter_dir, seed: int = 1) -> None:
    """A LoRA adapter on the architecture's default target modules, random (non-zero) weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageClassification

    from exported.train_adapter import default_target_modules

    model = AutoModelForImageClassification.from_pretrained(base_dir)
    torch.manual_seed(seed)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=default_target_modules(model.config.model_type), init_lora_weights=False
    )
    get_peft_model(model, config).save_pretrained(adapter_dir)


def peft_logits(base_dir, adapter_dir, pixels: np.ndarray) -> np.ndarray:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageClassification

    model = PeftModel.from_pretrained(AutoModelForImageClassification.from_pretrained(base_dir), adapter_dir).eval()
    with torch.inference_mode():
        return model(pixel_values=torch.from_numpy(pixels)).logits.numpy()


def worker_for(base_dir, adapters_dir, **overrides):
    """An in-process worker with the generated handler's notebook functions."""
    from exported.handler import WORKER as GENERATED
    from worker.config import WorkerConfig
    from worker.runtime import Worker

    config = WorkerConfig(base_model=str(base_dir), adapters_dir=str(adapters_dir), warmup=False, **overrides)
    return Worker(GENERATED.functions).setup(config)


@pytest.mark.parametrize(
    "name", [n if n in REPRESENTATIVE else pytest.param(n, marks=pytest.mark.full) for n in ARCHITECTURES]
)
def test_served_with_lora_through_local_api_and_merged(name, root, tmp_path):
    from fastbackend.local import serve_api

    base_dir = build(name, tmp_path / "base" / name)
    save_lora_adapter(name, base_dir, tmp_path / "adapters" / "tuned")
    images = _images()
    job = {"images": images, "adapter": "tuned", "return_logits": True}
    env = {"FASTBACKEND_BASE_MODEL": str(base_dir), "FASTBACKEND_ADAPTERS_DIR": str(tmp_path / "adapters")}
    with serve_api(root, env=env, log_file=tmp_path / "api.log") as api:
        answer = api.runsync({"input": job})
        pixels = api.runsync({"input": {"op": "preprocess", "images": images, "return_pixels": True}})
    assert answer["status"] == "COMPLETED", answer
    served = np.array([p["logits"] for p in answer["output"]["predictions"]])
    expected = peft_logits(base_dir, tmp_path / "adapters" / "tuned", np.array(pixels["output"]["pixels"], np.float32))
    base_only = worker_for(base_dir, tmp_path / "adapters", preload_adapters=())
    no_adapter = {k: v for k, v in job.items() if k != "adapter"}
    plain = np.array([p["logits"] for p in base_only.handle({"input": no_adapter})["predictions"]])
    merged = worker_for(base_dir, tmp_path / "adapters", merge_adapter="tuned")
    merged_logits = np.array([p["logits"] for p in merged.handle({"input": job})["predictions"]])
    assert np.abs(served - expected).max() <= TOLERANCE, f"{name}: served vs peft {np.abs(served - expected).max()}"
    assert np.abs(merged_logits - served).max() <= TOLERANCE, f"{name}: merged vs unmerged"
    assert np.abs(plain - served).max() > 1e-3, f"{name}: the adapter changes nothing; the check would be empty"
