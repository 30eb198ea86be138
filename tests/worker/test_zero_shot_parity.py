"""CLIP and SigLIP zero-shot answers and embeddings against transformers' own pipeline and model.

In process, on the model's own image processor's pixels (the served path through the local API is
tests/worker/test_zero_shot_api.py): the text tower through the label cache, the vision tower as the
task's forward runs it, the scores as worker/zero_shot.py computes them.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from fixtures.clip_models import build
from fixtures.photos import variants

from worker.clip_towers import image_features, load_tokenizer, logit_scale_bias, text_features
from worker.zero_shot import DEFAULT_TEMPLATE, LabelEmbeddings, zero_shot_predictions

WORDS = ["cat", "dog", "flower", "building", "digit", "tree", "a red car", "the sea", "snow", "a bird on a wire"]
LABEL_SETS = {2: WORDS[:2], 5: WORDS[:5], 20: WORDS + [f"{w} at night" for w in WORDS]}


@pytest.fixture(scope="module", params=["clip", "siglip"])
def served(request, tmp_path_factory):
    from transformers import AutoImageProcessor, AutoModel, pipeline

    folder = build(request.param, tmp_path_factory.mktemp(request.param) / "base")
    model = AutoModel.from_pretrained(folder).eval()
    reference = pipeline("zero-shot-image-classification", model=str(folder))
    return model, load_tokenizer(folder), AutoImageProcessor.from_pretrained(folder), reference


HEAVY = pytest.mark.full


@pytest.mark.parametrize("count", [pytest.param(2, marks=HEAVY), 5, pytest.param(20, marks=HEAVY)])
def test_scores_match_the_pipeline(served, count):
    model, tokenizer, processor, reference = served
    labels = LABEL_SETS[count]
    cache = LabelEmbeddings()
    scale, bias = logit_scale_bias(model)
    worst = 0.0
    for name, image in variants(full=False).items():
        pixels = processor(images=[image.convert("RGB")], return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            embeds = image_features(model, pixels).numpy()
        key = (None, DEFAULT_TEMPLATE, tuple(labels))
        label_embeds = cache.get(key, lambda texts: text_features(model, tokenizer, texts))
        ours = zero_shot_predictions(embeds, label_embeds, labels, scale, bias)[0]
        theirs = reference(image, candidate_labels=labels)
        assert [e["label"] for e in ours] == [e["label"] for e in theirs], name
        worst = max(worst, max(abs(a["score"] - b["score"]) for a, b in zip(ours, theirs)))
    assert worst < 1e-4
    assert cache.stats()["tokenizations"] == 1


def test_embeddings_match_the_models_own_features(served):
    model, tokenizer, processor, _ = served
    image = variants(full=False)["china"]
    pixels = processor(images=[image], return_tensors="pt")["pixel_values"]
    texts = ["a photo of a cat", "the sea"]
    with torch.inference_mode():
        ours = image_features(model, pixels).numpy()
        theirs = model.get_image_features(pixel_values=pixels).pooler_output.numpy()
        tokens = tokenizer(texts, return_tensors="pt", padding=True)
        if "siglip" in model.config.model_type:
            tokens = tokenizer(texts, return_tensors="pt", padding="max_length", max_length=64)
        text_theirs = model.get_text_features(**tokens).pooler_output.numpy()
    assert np.abs(ours - theirs).max() < 1e-4
    assert np.abs(text_features(model, tokenizer, texts) - text_theirs).max() < 1e-4


def test_a_missing_tokenizer_is_one_line(tmp_path):
    from worker.errors import ModelLoadFailed

    with pytest.raises(ModelLoadFailed) as caught:
        load_tokenizer(tmp_path)
    assert "\n" not in str(caught.value) and str(tmp_path) in str(caught.value)


def test_a_tokenizer_needing_sentencepiece_is_one_line_naming_the_package(tmp_path):
    """A hub SigLIP folder (SiglipTokenizer, spiece.model) where sentencepiece is not installed."""
    from worker.errors import ModelLoadFailed

    pytest.importorskip("transformers")
    if importlib.util.find_spec("sentencepiece") is not None:
        pytest.skip("sentencepiece is installed here")
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "SiglipTokenizer"}')
    (tmp_path / "spiece.model").write_bytes(b"\0" * 64)
    with pytest.raises(ModelLoadFailed) as caught:
        load_tokenizer(tmp_path)
    message = str(caught.value)
    assert "\n" not in message and str(tmp_path) in message
    assert "pip install sentencepiece protobuf" in message, message
