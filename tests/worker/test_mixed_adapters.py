"""Jobs for different adapters share one forward, with the answers of one forward per adapter, for
every architecture of README's support table.

For each architecture (tests/fixtures/architectures.py) two LoRA adapters with random weights are
saved as peft saves them; a micro-batching worker gets three concurrent jobs (adapter one, the base,
adapter two) that meet in one batch. Each job's logits must equal peft's own for that adapter alone
(and the base alone) within 1e-5. Where peft cannot mix the layout (Swin: its window attention
reshapes the batch inside the LoRA layers) the worker falls back to per-adapter forwards, says so in
`health`, and the answers are still equal. Mixed forwards take the batched path (worker/lora_rows.py:
one gather and two matmuls per LoRA layer, not peft's loop over adapters), as `health` says. `make
test` runs two representatives (ViT mixed, Swin falling back); `make test-full` runs them all.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from fixtures.architectures import ARCHITECTURES, build
from test_architectures import _images, save_lora_adapter, worker_for

from worker import lora_rows

TOLERANCE = 1e-5
REPRESENTATIVE = ["vit", "swin"]
CANNOT_MIX = {"swin"}  # peft raises: len(adapter_names) != the windows' batch


def alone(base_dir, adapter_dir, pixels: np.ndarray) -> np.ndarray:
    """peft's logits for one adapter (None: the base) on its own."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageClassification

    base = AutoModelForImageClassification.from_pretrained(base_dir).eval()
    model = PeftModel.from_pretrained(base, adapter_dir).eval() if adapter_dir else base
    with torch.inference_mode():
        return model(pixel_values=torch.from_numpy(pixels)).logits.numpy()


@pytest.mark.parametrize(
    "name", [n if n in REPRESENTATIVE else pytest.param(n, marks=pytest.mark.full) for n in ARCHITECTURES]
)
def test_two_adapters_and_the_base_in_one_batch_equal_each_alone(name, tmp_path):
    base_dir = build(name, tmp_path / "base")
    for seed, adapter in ((1, "one"), (2, "two")):
        save_lora_adapter(name, base_dir, tmp_path / "adapters" / adapter, seed=seed)
    worker = worker_for(base_dir, tmp_path / "adapters", concurrency=3, max_batch_wait_ms=2000)
    image = _images()[0]
    adapters = ["one", None, "two"]
    jobs = [{"id": str(a), "input": {"images": image, "adapter": a, "return_logits": True}} for a in adapters]

    async def together():
        return await asyncio.gather(*(worker.handle_async(j) for j in jobs))

    answers = asyncio.run(together())
    assert all(a["status"] == "success" for a in answers), answers
    pixels = np.array(worker.handle({"input": {"op": "preprocess", "images": image, "return_pixels": True}})["pixels"])
    pixels = pixels.astype(np.float32)
    mixing = worker.handle({"input": {"op": "health"}})["adapter_mixing"]
    forwards = worker.batcher.stats()["batch_size_histogram"]
    if name in CANNOT_MIX:
        assert [layout["mixed"] for layout in mixing["layouts"]] == [False], mixing
        assert "peft cannot mix" in mixing["layouts"][0]["reason"]
        assert forwards != {"3": 1}, "an unmixable layout must not share a forward"
    else:
        assert [layout["mixed"] for layout in mixing["layouts"]] == [True], mixing
        assert forwards == {"3": 1}, f"the three jobs met in one forward: {forwards}"
        assert mixing["path"] == lora_rows.PATH, mixing  # one pass per LoRA layer, not peft's loop
    for adapter, answer in zip(adapters, answers):
        served = np.array([p["logits"] for p in answer["predictions"]])
        expected = alone(base_dir, tmp_path / "adapters" / adapter if adapter else None, pixels)
        assert np.abs(served - expected).max() <= TOLERANCE, f"{name} {adapter}: {np.abs(served - expected).max()}"
    one, two = (np.array(answers[i]["predictions"][0]["logits"]) for i in (0, 2))
    assert np.abs(one - two).max() > 1e-3, "the adapters differ, or the check would be empty"
