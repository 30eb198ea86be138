"""Segmentation training (fastbackend/training/segmentation.py) on a tiny SegFormer and tiny digit scenes.

- Resume: a run stopped after its first epoch and resumed from its checkpoint ends with the same
  adapter weights, history and metrics as a run never interrupted (CPU, the model's own loss,
  albumentations on image and mask, torchmetrics' IoU every epoch).
- Broken datasets stop `load_dataset` before any training step with one error naming the file
  (the unit layer, tests/unit/test_segmentation_datasets.py, has every kind).
"""

from __future__ import annotations

import pytest


def _tiny_base(folder):
    from fastbackend.training.segmentation import new_segformer
    from worker.segmentation.scenes import SCENE_LABELS

    model = new_segformer(
        SCENE_LABELS, 32, folder, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
        patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2], decoder_hidden_size=16,
    )  # fmt: skip
    model.save_pretrained(folder)
    return folder


class Interrupted(Exception):
    pass


def test_resumed_training_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    import torch

    from exported.preprocess import read_preprocess_config
    from fastbackend.training.segmentation import SegmentationTrainSettings, fit_segmenter, new_lora_segmenter
    from fastbackend.training.segmentation_data import demo_scenes
    from worker.segmentation.scenes import SCENE_LABELS

    torch.set_num_threads(1)
    base = _tiny_base(tmp_path / "base")
    prep = read_preprocess_config(base)
    train = demo_scenes("train", 12, seed=1, size=32)
    val = demo_scenes("test", 4, seed=2, size=32, shifted=True)
    settings = SegmentationTrainSettings(epochs=2, lr=3e-3, batch_size=4, seed=3, patience=5)

    def run(folder, on_epoch=None, resume=False, model=None):
        model = model or new_lora_segmenter(base, rank=2, alpha=4, seed=0)
        history = fit_segmenter(model, train, prep, SCENE_LABELS, settings, val=val, checkpoint_dir=folder,
                                resume=resume, on_epoch=on_epoch)  # fmt: skip
        return model, history

    whole, whole_history = run(tmp_path / "whole")

    def stop(row):
        if row["epoch"] == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        run(tmp_path / "resumed", on_epoch=stop)
    assert [p.name for p in sorted((tmp_path / "resumed").iterdir())] == ["epoch-001.pt"]
    resumed, resumed_history = run(tmp_path / "resumed", resume=True)
    mine = {n: p for n, p in resumed.named_parameters() if p.requires_grad}
    theirs = {n: p for n, p in whole.named_parameters() if p.requires_grad}
    assert mine.keys() == theirs.keys() and any("lora_" in n for n in mine) and any("classifier" in n for n in mine)
    assert all(torch.equal(mine[n], theirs[n]) for n in mine)
    assert resumed_history["epochs"] == whole_history["epochs"]
    row = whole_history["epochs"][-1]
    assert set(row["val_per_class_iou"]) == set(SCENE_LABELS) and 0 <= row["val_mean_iou"] <= 1
    _served_adapter_answers_as_trained(whole, base, prep, val, tmp_path / "adapter")


def _served_adapter_answers_as_trained(model, base, prep, val, folder):
    """The adapter saved and attached to a freshly loaded base, as the worker does, gives the trained
    model's logits: nothing it learned (a frozen batch norm's statistics included) lives in memory only."""
    import numpy as np

    from exported.inference import attach_adapter
    from exported.train_adapter import save_adapter
    from fastbackend.training.segmentation_data import model_batch
    from worker.segmentation.stages import forward_logits, load_model

    save_adapter(model, folder, base_dir=base, base_name="tiny", task="image-segmentation", description="test")
    served = attach_adapter(load_model(base, "cpu", "float32")[0], folder, "served")
    pixels, _ = model_batch(val, prep)
    model.eval()
    trained = forward_logits(model, pixels, model.active_adapter)
    assert np.allclose(forward_logits(served, pixels, "served"), trained, atol=1e-5)


def test_a_broken_dataset_stops_before_training(tmp_path):
    from fastbackend.training.segmentation_data import demo_scenes, load_dataset, write_pairs
    from worker.segmentation.datasets import SegmentationDatasetError

    root = write_pairs(demo_scenes("train", 3, seed=1, size=32), tmp_path / "data", "train")
    write_pairs(demo_scenes("test", 2, seed=2, size=32), root, "val")
    assert {split: len(pairs) for split, pairs in load_dataset(root, 11).items()} == {"train": 3, "val": 2}
    (root / "masks" / "val" / "0001.png").unlink()
    with pytest.raises(SegmentationDatasetError, match=r"images/val/0001.png: no mask .*masks/val/0001.png"):
        load_dataset(root, 11)
