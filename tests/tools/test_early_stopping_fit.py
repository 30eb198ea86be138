"""Early stopping in `fit` on a tiny ViT built from its config (the rules: tests/unit/test_early_stopping.py)."""

from __future__ import annotations

import json

import numpy as np

from exported.train_adapter import scaled_patience


def test_fit_keeps_the_best_loss_epoch_and_says_when_it_ran_out_of_epochs(tmp_path):
    """A tiny ViT base built from its config; every epoch lowers the loss on this easy task."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    from exported.demo_models import load_digit_task
    from exported.preprocess import read_preprocess_config
    from exported.train_adapter import TrainSettings, fit, new_adapter_model

    config = ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=1,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=10,
    )
    torch.manual_seed(0)
    ViTForImageClassification(config).save_pretrained(tmp_path / "base")
    processor = {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "do_rescale": True,
        "do_normalize": True,
        "image_mean": [0.5],
        "image_std": [0.5],
        "size": {"height": 8, "width": 8},
    }
    (tmp_path / "base" / "preprocessor_config.json").write_text(json.dumps(processor))
    prep = read_preprocess_config(tmp_path / "base")
    images, labels = load_digit_task("digits", "train")
    train, val = (list(images[:128]), labels[:128]), (list(images[128:164]), labels[128:164])
    model = new_adapter_model(tmp_path / "base", rank=4, alpha=8)
    settings = TrainSettings(epochs=3, lr=1e-2, batch_size=32, patience=2, augment=False)
    result = fit(model, prep, *train, settings, val=val)
    losses = [row["val_loss"] for row in result["epochs"]]
    best = int(np.argmin(losses)) + 1
    assert result["best_epoch"] == best and result["best_val_loss"] == min(losses)
    assert result["patience"] == scaled_patience(2, 36) == 5
    assert result["still_improving"] is (best == 3)
