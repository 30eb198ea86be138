"""Loading refuses what would otherwise predict wrongly, and names the file at fault."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from exported.inference import attach_adapter, load_base_model, model_fingerprint, predict_logits
from worker.errors import AdapterIncompatible, ErrorCode, ModelLoadFailed


@pytest.fixture
def base_copy(models_dir, tmp_path) -> Path:
    return Path(shutil.copytree(models_dir / "base", tmp_path / "base"))


@pytest.fixture
def adapter_copy(models_dir, tmp_path) -> Path:
    return Path(shutil.copytree(models_dir / "adapters" / "inverted", tmp_path / "inverted"))


def test_missing_models_folder_names_the_missing_file(tmp_path):
    with pytest.raises(ModelLoadFailed, match=r"nowhere/config.json: missing") as err:
        load_base_model(tmp_path / "nowhere")
    assert err.value.code is ErrorCode.MODEL_LOAD_FAILED


def test_corrupt_base_safetensors_names_the_file(base_copy):
    weights = base_copy / "model.safetensors"
    weights.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(ModelLoadFailed, match=str(weights)):
        load_base_model(base_copy)


def test_base_weights_missing_tensors_are_refused_not_randomly_initialised(base_copy):
    weights = base_copy / "model.safetensors"
    tensors = load_file(weights)
    tensors.pop(next(k for k in tensors if "query" in k))  # saved in the hub (pre-5) layout
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(ModelLoadFailed, match="do not fit"):
        load_base_model(base_copy)


def test_adapter_with_pre_transformers_5_module_names_is_refused(models_dir, adapter_copy):
    """An adapter made when ViT's modules were `query`/`value` must not load with a warning."""
    weights = adapter_copy / "adapter_model.safetensors"
    renamed = {k.replace("q_proj", "query").replace("v_proj", "value"): v for k, v in load_file(weights).items()}
    save_file(renamed, weights, metadata={"format": "pt"})
    config_file = adapter_copy / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["target_modules"] = ["query", "value", "projection"]
    config_file.write_text(json.dumps(config))
    with pytest.raises(AdapterIncompatible, match=str(weights)):
        attach_adapter(load_base_model(models_dir / "base"), adapter_copy, "inverted")


def test_adapter_for_another_architecture_is_refused(models_dir, adapter_copy):
    weights = adapter_copy / "adapter_model.safetensors"
    widened = {
        k: torch.zeros(v.shape[0], v.shape[1] * 2, *v.shape[2:]) if "lora_A" in k else v
        for k, v in load_file(weights).items()
    }
    save_file(widened, weights, metadata={"format": "pt"})
    with pytest.raises(AdapterIncompatible, match="do not match the base"):
        attach_adapter(load_base_model(models_dir / "base"), adapter_copy, "inverted")


def test_adapter_trained_on_another_base_of_the_same_shape_is_refused(models_dir, adapter_copy):
    meta_file = adapter_copy / "fastbackend.json"
    meta = json.loads(meta_file.read_text())
    meta["base_fingerprint"] = "0123456789abcdef"
    meta_file.write_text(json.dumps(meta))
    base = models_dir / "base"
    with pytest.raises(AdapterIncompatible, match="trained for another base model"):
        attach_adapter(load_base_model(base), adapter_copy, "inverted", base_fingerprint=model_fingerprint(base))


def test_corrupt_adapter_weights_name_the_file(models_dir, adapter_copy):
    weights = adapter_copy / "adapter_model.safetensors"
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(AdapterIncompatible, match=f"{weights}: unreadable"):
        attach_adapter(load_base_model(models_dir / "base"), adapter_copy, "inverted")


def test_a_refused_adapter_leaves_the_served_model_untouched(models_dir, adapter_copy):
    base = load_base_model(models_dir / "base")
    pixels = torch.zeros(2, 1, 16, 16).numpy()
    before = predict_logits(base, pixels)
    (adapter_copy / "adapter_model.safetensors").write_bytes(b"broken")
    with pytest.raises(AdapterIncompatible):
        attach_adapter(base, adapter_copy, "inverted")
    assert (predict_logits(base, pixels) == before).all()
