"""Contrastive LoRA training of CLIP-family models (fastbackend/training/zero_shot.py) through the
project's one training loop: the loss is the model's own, and a resumed run ends bit-identical to an
uninterrupted one (tiny random CLIP from tests/fixtures/clip_models.py, 48 inverted digits)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures.clip_models import build

from exported.demo_models import load_digit_task
from exported.preprocess import build_eval_transform, read_preprocess_config, to_pixel_values
from exported.train_adapter import TrainSettings, fit, last_checkpoint
from fastbackend.training.zero_shot import CaptionContrastive, load_clip, new_clip_adapter, target_modules
from fastbackend.training.zero_shot_demo import CLASS_NAMES

TEMPLATES = ["a photo of the digit {}", "{}"]


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    work = tmp_path_factory.mktemp("clip-training")
    return {kind: build(kind, work / kind) for kind in ("clip", "siglip")}


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_the_loss_is_the_models_own_when_each_image_has_its_caption(bases, kind):
    """Ten digits, one of each class, each with its own caption: the CLIP loss is the image-to-text
    cross-entropy of the model's logits_per_image; the SigLIP loss is SiglipModel's own loss."""
    model, tokenizer = load_clip(bases[kind])
    prep = read_preprocess_config(bases[kind])
    images, labels = load_digit_task("digits", "test")
    first = [int(np.flatnonzero(labels == c)[0]) for c in range(10)]
    pixels = torch.from_numpy(to_pixel_values([images[i] for i in first], build_eval_transform(prep), prep))
    ours = CaptionContrastive(model, tokenizer, CLASS_NAMES, TEMPLATES[:1])(pixels, torch.arange(10))
    kwargs = {"padding": "max_length", "max_length": 64} if kind == "siglip" else {"padding": True}
    tokens = tokenizer([f"a photo of the digit {n}" for n in CLASS_NAMES], return_tensors="pt", **kwargs)
    with torch.no_grad():
        theirs = model(pixel_values=pixels, return_loss=kind == "siglip", **tokens)
    expected = (
        theirs.loss
        if kind == "siglip"
        else torch.nn.functional.cross_entropy(theirs.logits_per_image, torch.arange(10))
    )
    assert torch.allclose(ours.logits, theirs.logits_per_image, atol=1e-5)
    assert abs(ours.loss.item() - expected.item()) < 1e-5


def test_tower_targets():
    import re

    both = re.compile(target_modules("both"))
    assert both.match("base_model.model.vision_model.encoder.layers.1.self_attn.q_proj")
    assert both.match("base_model.model.text_model.encoder.layers.0.self_attn.v_proj")
    assert not re.compile(target_modules("vision")).match(
        "base_model.model.text_model.encoder.layers.0.self_attn.v_proj"
    )
    with pytest.raises(ValueError, match="towers"):
        target_modules("all")


def test_resumed_run_ends_bit_identical_to_an_uninterrupted_one(bases, tmp_path):
    base = bases["clip"]
    prep = read_preprocess_config(base)
    images, labels = load_digit_task("inverted", "train")
    train, val = (list(images[:48]), labels[:48]), (list(images[48:64]), labels[48:64])
    settings = TrainSettings(epochs=2, lr=1e-2, batch_size=16, seed=3, augment=False, schedule="cosine")

    def run(folder, resume=False, stop_after=None):
        def on_epoch(row):
            if row["epoch"] == stop_after:
                raise Interrupted

        model, tokenizer = new_clip_adapter(base, towers="both", rank=4, alpha=8, seed=3)
        wrapped = CaptionContrastive(model, tokenizer, CLASS_NAMES, TEMPLATES)
        history = fit(wrapped, prep, *train, settings, val=val, checkpoint_dir=folder, resume=resume, on_epoch=on_epoch)
        return model, history

    whole, whole_history = run(tmp_path / "whole")
    with pytest.raises(Interrupted):
        run(tmp_path / "cut", stop_after=1)
    assert last_checkpoint(tmp_path / "cut").name == "epoch-001.pt"
    resumed, resumed_history = run(tmp_path / "cut", resume=True)

    def trainable(model):
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    expected, got = trainable(whole), trainable(resumed)
    assert expected.keys() == got.keys() and any("text_model" in n for n in expected)
    assert [n for n in expected if not torch.equal(expected[n], got[n])] == []
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in whole_history["epochs"]]
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in resumed_history["epochs"]] == strip
    assert whole_history["epochs"][-1]["train_loss"] < whole_history["epochs"][0]["train_loss"]
