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
