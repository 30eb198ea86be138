"""The batched mixed-adapter forward (worker/lora_rows.py): one pass per LoRA layer, each row through
its own adapter, equal to peft's forward of that adapter alone.

One batch on a tiny ViT holds adapters of every shape the batched path must get right: different
ranks (zero-padded), rsLoRA scaling, a LoRA bias, a Conv2d target (the patch projection), an adapter
that targets fewer modules than the others, a `modules_to_save` head beside adapters without one,
and the base. Where the batched path does not apply (DoRA) the worker falls back and says so:
the DoRA layout does not mix, its answers are still its own.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from fixtures.architectures import build
from test_architectures import _images, worker_for

from worker import lora_rows

TOLERANCE = 1e-5
SHAPES = {  # name -> LoraConfig fields
    "rank2": {"r": 2, "target_modules": ["q_proj", "v_proj"]},
    "rank4-bias-conv": {"r": 4, "target_modules": ["q_proj", "v_proj", "projection"], "lora_bias": True},
    "query-rslora": {"r": 3, "target_modules": ["q_proj"], "use_rslora": True},
    "head": {"r": 4, "target_modules": ["q_proj", "v_proj"], "modules_to_save": ["classifier"]},
}


def save_adapter(base_dir, folder, seed: int, **fields) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(base_dir)
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(lora_alpha=8, init_lora_weights=False, **fields))
    with torch.no_grad():  # a head trained away from the base's, and B biases that are not zero
        for name, parameter in peft_model.named_parameters():
            if "modules_to_save" in name or ("lora_B" in name and name.endswith("bias")):
                parameter.add_(torch.randn_like(parameter))
    peft_model.save_pretrained(folder)


def alone(base_dir, adapter_dir, pixels: np.ndarray) -> np.ndarray:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(base_dir).eval()
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir).eval()
    with torch.inference_mode():
        return model(pixel_values=torch.from_numpy(pixels)).logits.numpy()


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora-rows")
    return build("vit", folder / "base"), folder / "adapters"


def test_every_adapter_shape_in_one_batch_equals_each_alone(vit):
    base_dir, adapters = vit
    for seed, (name, fields) in enumerate(SHAPES.items(), start=1):
        save_adapter(base_dir, adapters / name, seed, **fields)
    host = worker_for(base_dir, adapters).host
    keys = {}
    for name in SHAPES:
        with host.serving(name) as (key, _):
            keys[name] = key
    rows = ["rank2", None, "rank4-bias-conv", "query-rslora", "head", "rank2", None, "head"]
    c = host.preprocess_config
    pixels = np.random.default_rng(0).standard_normal((len(rows), c.num_channels, c.height, c.width))
    pixels = pixels.astype(np.float32)
    mixed = host.run_batch({"pixel_values": pixels}, [keys.get(r) for r in rows])["logits"]
    assert host.mix_path == lora_rows.PATH, host.mix_path
    for i, name in enumerate(rows):
        expected = alone(base_dir, adapters / name if name else None, pixels[i : i + 1])
        assert np.abs(mixed[i] - expected[0]).max() <= TOLERANCE, (name, np.abs(mixed[i] - expected[0]).max())
    answers = {name: alone(base_dir, adapters / name, pixels[:1]) for name in SHAPES}
    assert min(np.abs(a - b).max() for a in answers.values() for b in answers.values() if a is not b) > 1e-3


def test_a_dora_adapter_falls_back_to_per_adapter_forwards(vit, tmp_path):
    base_dir, _ = vit
    adapters = tmp_path / "adapters"
    save_adapter(base_dir, adapters / "plain", 1, r=4, target_modules=["q_proj", "v_proj"])
    save_adapter(base_dir, adapters / "dora", 2, r=4, target_modules=["q_proj", "v_proj"], use_dora=True)
    worker = worker_for(base_dir, adapters, concurrency=3, max_batch_wait_ms=2000)
    image = _images()[0]
    names = ["plain", "dora", None]
    jobs = [{"id": str(a), "input": {"images": image, "adapter": a, "return_logits": True}} for a in names]

    async def together():
        return await asyncio.gather(*(worker.handle_async(j) for j in jobs))

    answers = asyncio.run(together())
    assert all(a["status"] == "success" for a in answers), answers
    layouts = {
        layout["dora"]: layout for layout in worker.handle({"input": {"op": "health"}})["adapter_mixing"]["layouts"]
    }
    assert layouts[False]["mixed"] and not layouts[True]["mixed"], layouts
    assert "DoRA" in layouts[True]["reason"]
    pixels = worker.handle({"input": {"op": "preprocess", "images": image, "return_pixels": True}})["pixels"]
    pixels = np.array(pixels, dtype=np.float32)
    for name, answer in zip(names, answers):
        expected = alone(base_dir, adapters / name if name else None, pixels)
        served = np.array(answer["predictions"][0]["logits"])
        assert np.abs(served - expected[0]).max() <= TOLERANCE, name
