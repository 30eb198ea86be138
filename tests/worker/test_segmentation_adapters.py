"""The documented SegFormer adapter layout shares a forward: peft's mixed-adapter batch (`adapter_names`)
works with only the classifier in modules_to_save, and fails with the whole decode head (a BatchNorm)."""

from __future__ import annotations

import copy

import pytest
from fixtures.segmenters import build

TARGETS = ["q_proj", "v_proj", "linear_fuse"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from worker.segmentation.stages import load_model

    return load_model(build("segformer", tmp_path_factory.mktemp("segformer")), "cpu", "float32")[0]


def _two_adapters(base, modules_to_save):
    import torch
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, target_modules=TARGETS, modules_to_save=modules_to_save)
    model = get_peft_model(copy.deepcopy(base), config, adapter_name="a")
    model.add_adapter("b", config)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                parameter += 0.05 * torch.randn_like(parameter)
    return model.eval()


def test_classifier_only_layout_mixes_adapters_in_one_batch(base):
    import torch

    from worker.segmentation.stages import forward_logits

    model = _two_adapters(base, ["classifier"])
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        mixed = model(pixel_values=x, adapter_names=["a", "b"]).logits
    alone = [forward_logits(model, x[i : i + 1].numpy(), name) for i, name in enumerate("ab")]
    assert torch.allclose(mixed[0], torch.from_numpy(alone[0][0]), atol=1e-5)
    assert torch.allclose(mixed[1], torch.from_numpy(alone[1][0]), atol=1e-5)
    assert not torch.allclose(torch.from_numpy(alone[0]), torch.from_numpy(alone[1]), atol=1e-4)


def test_whole_decode_head_breaks_mixed_batches(base):
    import torch

    model = _two_adapters(base, ["decode_head"])
    with pytest.raises(TypeError, match="Mixed batching is only supported"), torch.inference_mode():
        model(pixel_values=torch.randn(2, 3, 64, 64), adapter_names=["a", "b"])
