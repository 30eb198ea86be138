"""The one training loop (exported from 03_train_adapter.ipynb): resume, split, broken datasets.

In `make test`: a small in-process resume comparison on the demo base (the train pipeline and the
broken-dataset notebook runs are in test_train_pipeline.py, marked `full`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from exported.demo_models import load_digit_task
from exported.preprocess import read_preprocess_config
from exported.train_adapter import (
    TrainSettings,
    default_target_modules,
    fit,
    last_checkpoint,
    new_adapter_model,
    split_dataset,
)
from worker.datasets import Dataset, DatasetItem


class Interrupted(Exception):
    pass


def _trainable(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_resumed_run_ends_bit_identical_to_an_uninterrupted_one(models_dir, tmp_path):
    base = models_dir / "base"
    prep = read_preprocess_config(base)
    images, labels = load_digit_task("inverted", "train")
    train, val = (list(images[:192]), labels[:192]), (list(images[192:256]), labels[192:256])
    # The cosine lr comes from the step alone and the augmentations from the epoch: both resume.
    settings = TrainSettings(epochs=3, lr=1e-2, batch_size=32, seed=5, augment=True, schedule="cosine")

    def run(folder, resume=False, stop_after=None):
        def on_epoch(row):
            if row["epoch"] == stop_after:
                raise Interrupted

        model = new_adapter_model(base, rank=4, alpha=8, seed=5)
        history = fit(model, prep, *train, settings, val=val, checkpoint_dir=folder, resume=resume, on_epoch=on_epoch)
        return model, history

    whole, whole_history = run(tmp_path / "whole")
    with pytest.raises(Interrupted):
        run(tmp_path / "cut", stop_after=1)
    assert last_checkpoint(tmp_path / "cut").name == "epoch-001.pt"
    resumed, resumed_history = run(tmp_path / "cut", resume=True)

    expected, got = _trainable(whole), _trainable(resumed)
    assert expected.keys() == got.keys() and len(expected) > 0
    differing = [n for n in expected if not torch.equal(expected[n], got[n])]
    assert differing == [], f"{len(differing)} tensors differ, first {differing[:1]}"
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in whole_history["epochs"]]
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in resumed_history["epochs"]] == strip
    assert resumed_history["best_epoch"] == whole_history["best_epoch"]


def test_resume_refuses_other_settings(models_dir, tmp_path):
    base = models_dir / "base"
    prep = read_preprocess_config(base)
    images, labels = load_digit_task("inverted", "train")
    data = (list(images[:32]), labels[:32])
    fit(new_adapter_model(base), prep, *data, TrainSettings(epochs=1, batch_size=32), checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"epoch-001.pt: written with other settings"):
        fit(
            new_adapter_model(base),
            prep,
            *data,
            TrainSettings(epochs=2, lr=0.5, batch_size=32),
            checkpoint_dir=tmp_path,
            resume=True,
        )


def test_seeded_split_is_stratified_repeatable_and_keeps_a_manifests_own_split(tmp_path):
    items = tuple(DatasetItem(tmp_path / f"{i}.png", "ab"[i % 2]) for i in range(20))
    data = Dataset(tmp_path, ("a", "b"), items)
    train, val = split_dataset(data, val_fraction=0.2, seed=1)
    assert len(val) == 4 and sorted(data.targets[val].tolist()) == [0, 0, 1, 1]
    assert np.array_equal(split_dataset(data, 0.2, 1)[1], val) and not np.array_equal(
        split_dataset(data, 0.2, 2)[1], val
    )
    assert sorted([*train, *val]) == list(range(20))
    marked = tuple(DatasetItem(i.path, i.label, "val" if n < 3 else "train") for n, i in enumerate(items))
    assert split_dataset(Dataset(tmp_path, ("a", "b"), marked), 0.2, 1)[1].tolist() == [0, 1, 2]


def test_target_modules_default_per_architecture():
    assert default_target_modules("vit") == ["q_proj", "v_proj", "projection"]
    with pytest.raises(ValueError, match="no default LoRA target_modules for model type 'efficientnet'"):
        default_target_modules("efficientnet")


def test_cosine_schedule_decays_from_lr_to_zero_and_unknown_schedules_are_refused():
    cosine = TrainSettings(lr=0.02, schedule="cosine")
    assert [round(cosine.lr_at(p), 6) for p in (0, 0.5, 1)] == [0.02, 0.01, 0.0]
    assert TrainSettings(lr=0.02).lr_at(0.9) == 0.02
    with pytest.raises(ValueError, match="schedule must be one of"):
        TrainSettings(schedule="step")
