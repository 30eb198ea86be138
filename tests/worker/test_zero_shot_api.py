"""zero-shot-image-classification through RunPod's local API: CLIP and SigLIP (tiny random configs,
tokenizers built by tests/fixtures/clip_models.py) against transformers' own pipeline and model on
scikit-learn's photos and variants, decoded from the same JPEG bytes the worker receives."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fixtures.clip_models import build
from fixtures.photos import jpeg_b64, variants
from PIL import Image

from worker.zero_shot import MAX_CANDIDATE_LABELS

pytest.importorskip("worker.tasks.base", reason="needs the task seam (branch seam)")

WORDS = ["cat", "dog", "flower", "building", "digit", "tree", "a red car", "the sea", "snow", "a bird on a wire"]
LABEL_SETS = {2: WORDS[:2], 5: WORDS[:5], 20: WORDS + [f"{w} at night" for w in WORDS]}


@pytest.fixture(scope="module", params=["clip", "siglip"])
def served(request, root, tmp_path_factory):
    from fastbackend.local import serve_api

    work = tmp_path_factory.mktemp(request.param)
    folder = build(request.param, work / "base")
    env = {"FASTBACKEND_BASE_MODEL": str(folder), "FASTBACKEND_ADAPTERS_DIR": str(work / "adapters")}
    with serve_api(root, env=env, log_file=work / "api.log") as api:
        yield api, folder


@pytest.fixture(scope="module")
def photos():
    return {name: jpeg_b64(image) for name, image in variants(full=False).items()}


def decoded(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def output(api, job_input: dict) -> dict:
    answer = api.runsync({"input": job_input})
    assert answer["status"] == "COMPLETED", answer
    return answer["output"]


@pytest.mark.parametrize("count", sorted(LABEL_SETS))
def test_answers_match_the_pipeline(served, photos, count):
    from transformers import pipeline

    api, folder = served
    labels = LABEL_SETS[count]
    reference = pipeline("zero-shot-image-classification", model=str(folder))
    answer = output(api, {"images": list(photos.values()), "candidate_labels": labels})
    worst = 0.0
    for (name, b64), ours in zip(photos.items(), answer["predictions"]):
        theirs = reference(decoded(b64), candidate_labels=labels)
        assert [e["label"] for e in ours] == [e["label"] for e in theirs], name
        worst = max(worst, *(abs(a["score"] - b["score"]) for a, b in zip(ours, theirs)))
    assert worst < 1e-4, worst


def test_a_custom_template_matches_the_pipeline(served, photos):
    from transformers import pipeline

    api, folder = served
    reference = pipeline("zero-shot-image-classification", model=str(folder))
    template = "a {} in {{braces}}"
    ours = output(api, {"images": photos["china"], "candidate_labels": WORDS, "hypothesis_template": template})
    theirs = reference(decoded(photos["china"]), candidate_labels=WORDS, hypothesis_template=template)
    assert [e["label"] for e in ours["predictions"][0]] == [e["label"] for e in theirs]


def test_image_embeddings_are_get_image_features(served, photos):
    import torch
    from transformers import AutoImageProcessor, AutoModel

    api, folder = served
    model, processor = AutoModel.from_pretrained(folder).eval(), AutoImageProcessor.from_pretrained(folder)
    answer = output(api, {"op": "embed", "images": list(photos.values())})
    pixels = processor(images=[decoded(b).convert("RGB") for b in photos.values()], return_tensors="pt")
    with torch.inference_mode():
        theirs = model.get_image_features(pixel_values=pixels["pixel_values"]).pooler_output.numpy()
    assert np.abs(np.asarray(answer["embeddings"], dtype=np.float32) - theirs).max() < 1e-4


def reference_text_features(folder, texts):
    """get_text_features of the model loaded as a user loads it, tokenised as its pipeline does."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    model, tokenizer = AutoModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    siglip = model.config.model_type == "siglip"
    kwargs = {"padding": "max_length", "max_length": 64, "truncation": True} if siglip else {"padding": True}
    with torch.inference_mode():
        return model.get_text_features(**tokenizer(texts, return_tensors="pt", **kwargs)).pooler_output.numpy()


def test_text_embeddings_are_get_text_features(served):
    from worker.tasks.embeddings import decode

    api, folder = served
    texts = ["a photo of a cat", "dog", "the flower of the building", "this is a digit"]
    theirs = reference_text_features(folder, texts)
    answer = output(api, {"op": "embed", "texts": texts})
    assert "embeddings" not in answer and answer["dimensions"] == theirs.shape[1]
    assert np.abs(np.asarray(answer["text_embeddings"], dtype=np.float32) - theirs).max() < 1e-4
    unit = output(api, {"op": "embed", "texts": texts, "normalize": True, "encoding_format": "base64"})
    norms = np.linalg.norm(theirs, axis=1, keepdims=True)
    assert np.abs(np.stack([decode(e) for e in unit["text_embeddings"]]) - theirs / norms).max() < 1e-5


def test_images_and_texts_in_one_job_share_the_space(served, photos):
    api, folder = served
    both = output(api, {"op": "embed", "images": [photos["china"]], "texts": ["cat", "dog"], "normalize": True})
    images, texts = np.asarray(both["embeddings"]), np.asarray(both["text_embeddings"])
    assert images.shape[1] == texts.shape[1] == both["dimensions"]
    # the zero-shot answer is the softmax / sigmoid of these cosines times the model's scale
    job = {"images": [photos["china"]], "candidate_labels": ["cat", "dog"], "hypothesis_template": "{}"}
    ranking = output(api, job)
    assert ranking["predictions"][0][0]["label"] == ["cat", "dog"][int(np.argmax(images @ texts.T))]


@pytest.mark.parametrize(
    ("job", "field"),
    [
        ({"texts": [f"t{i}" for i in range(10_000)]}, "texts"),
        ({"texts": ["cat", "x" * 1_000_000]}, "texts[1]"),
        ({"texts": []}, "texts"),
        ({"texts": ["cat", 3, None]}, "texts[1]"),
        ({"texts": "cat"}, "texts"),
        ({}, "input"),
    ],
    ids=["10000-texts", "1MB-text", "empty", "non-strings", "not-a-list", "nothing"],
)
def test_hostile_texts_are_invalid_input(served, job, field):
    api, _ = served
    answer = api.runsync({"input": {"op": "embed", **job}})
    assert answer["status"] == "FAILED" and answer["error"].startswith(f"INVALID_INPUT: {field}"), answer
    assert len(str(answer)) < 4096
    assert output(api, {"op": "ping"})


def test_a_text_longer_than_clips_text_tower_is_invalid_input(served):
    api, folder = served
    answer = api.runsync({"input": {"op": "embed", "texts": ["cat", "x " * 200]}})
    if "siglip" in folder.parent.name:  # SigLIP truncates to 64 tokens, as its pipeline does
        assert answer["status"] == "COMPLETED", answer
    else:
        assert answer["status"] == "FAILED" and answer["error"].startswith("INVALID_INPUT: texts[1]"), answer


@pytest.mark.parametrize(
    ("labels", "field"),
    [
        ([f"l{i}" for i in range(10_000)], "candidate_labels"),
        (["cat", "x" * 1_000_000], "candidate_labels[1]"),
        ([], "candidate_labels"),
        (["cat", 3, None], "candidate_labels[1]"),
    ],
    ids=["10000-labels", "1MB-label", "empty", "non-strings"],
)
def test_hostile_labels_are_invalid_input(served, photos, labels, field):
    api, _ = served
    answer = api.runsync({"input": {"images": photos["china-small"], "candidate_labels": labels}})
    assert answer["status"] == "FAILED" and answer["error"].startswith(f"INVALID_INPUT: {field}")
    assert len(str(answer)) < 4096
    assert output(api, {"op": "ping"})  # the worker still serves


def test_bound_is_published():
    assert MAX_CANDIDATE_LABELS == 1000
