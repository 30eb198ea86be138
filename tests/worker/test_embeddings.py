"""`embed` through RunPod's local API, equal to transformers' `image-feature-extraction` pipeline.

Bare backbones (tiny random ViTModel and Dinov2Model built from configs, their processor saved
beside them) are served as the image-feature-extraction task: `predict` and `embed` answer the
model's pooler_output, as the pipeline with `pool=True` gives it. The demo classifier's `embed` is
what its head reads (ViT: the final layer-normed CLS token), which the pipeline gives as the first
token of its `pool=False` output. Photos: scikit-learn's two, and a 12 MP variant of each; the
pipeline runs on the PIL backend (no torchvision here), on the same upright images.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from worker.tasks.embeddings import decode

TOLERANCE = 1e-4
_VIT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
BACKBONES = {
    # name: (model class, config class and settings, processor class and fields)
    "vit": (
        "ViTModel",
        "ViTConfig",
        {**_VIT, "image_size": 64, "patch_size": 16},
        "ViTImageProcessorPil",
        {"size": {"height": 64, "width": 64}},
    ),
    "dinov2": (
        "Dinov2Model",
        "Dinov2Config",
        {**_VIT, "image_size": 64, "patch_size": 8},
        "BitImageProcessorPil",
        {"size": {"shortest_edge": 72}, "crop_size": {"height": 64, "width": 64}},
    ),
}


def build_backbone(name: str, folder):
    import torch
    import transformers

    model_class, config_class, settings, processor, fields = BACKBONES[name]
    torch.manual_seed(0)
    getattr(transformers, model_class)(getattr(transformers, config_class)(**settings)).eval().save_pretrained(folder)
    getattr(transformers, processor)(**fields).save_pretrained(folder)
    return folder


def photos(full: bool = True) -> dict[str, Image.Image]:
    from sklearn.datasets import load_sample_images

    china, flower = (Image.fromarray(a) for a in load_sample_images().images)
    out = {"china": china, "flower": flower}
    if full:
        out["china-12mp"] = china.resize((4000, 3000), Image.Resampling.BICUBIC)
        out["flower-12mp-portrait"] = flower.resize((3000, 4000), Image.Resampling.BICUBIC)
    return out


def jpeg_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decoded(encoded: str, mode: str) -> Image.Image:
    """The upright image the worker decodes, in the model's mode: what the pipeline is given."""
    return Image.open(io.BytesIO(base64.b64decode(encoded))).convert(mode)


def pipeline_vectors(model_dir, images: list[Image.Image], pool: bool) -> np.ndarray:
    from transformers import pipeline

    extractor = pipeline("image-feature-extraction", model=str(model_dir))
    rows = []
    for image in images:
        out = np.asarray(extractor(image, pool=pool), dtype=np.float32)
        rows.append(out.reshape(-1) if pool else out.reshape(-1, out.shape[-1])[0])  # pool=False: CLS token
    return np.stack(rows)


def first_tokens(model_dir, images: list[Image.Image]) -> np.ndarray:
    """The pipeline's own processor and model on a 1-channel model's images (its `load_image` would
    make them RGB): `last_hidden_state[:, 0]`, what `pool=False` gives first."""
    import torch
    from transformers import pipeline

    extractor = pipeline("image-feature-extraction", model=str(model_dir))
    with torch.inference_mode():
        rows = [extractor.model(**extractor.image_processor(images=i, return_tensors="pt"))[0][0, 0] for i in images]
    return torch.stack(rows).numpy()


def answered(api, job: dict) -> dict:
    answer = api.runsync({"input": job})
    assert answer["status"] == "COMPLETED", answer
    assert answer["output"]["status"] == "success", answer["output"]
    return answer["output"]


def vectors(output: dict) -> np.ndarray:
    return np.stack([decode(e) for e in output["embeddings"]])


@pytest.mark.parametrize("name", ["dinov2", "vit"])
def test_a_backbone_embeds_as_the_pipeline_does_through_local_api(name, root, tmp_path):
    from fastbackend.local import serve_api

    base = build_backbone(name, tmp_path / name)
    encoded = {key: jpeg_b64(image) for key, image in photos().items()}
    images = list(encoded.values())
    env = {"FASTBACKEND_BASE_MODEL": str(base), "FASTBACKEND_ADAPTERS_DIR": str(tmp_path / "none")}
    with serve_api(root, env=env, log_file=tmp_path / "api.log") as api:
        health = answered(api, {"op": "health"})
        as_float = answered(api, {"op": "embed", "images": images})
        as_base64 = answered(api, {"op": "embed", "images": images, "encoding_format": "base64"})
        predicted = answered(api, {"images": images, "normalize": True})
    assert health["task"]["name"] == "image-feature-extraction"
    expected = pipeline_vectors(base, [decoded(e, "RGB") for e in images], pool=True)
    served = vectors(as_float)
    worst = float(np.abs(served - expected).max())
    assert worst <= TOLERANCE, f"{name}: embed vs pipeline(pool=True) max |diff| {worst}"
    assert np.array_equal(vectors(as_base64), served), "base64 and float decode to the same float32 numbers"
    assert isinstance(as_base64["embeddings"][0], str) and as_float["dimensions"] == served.shape[1] == 32
    unit = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.abs(vectors(predicted) - unit).max() <= TOLERANCE, "predict is embed; normalize is L2"
    assert predicted["normalized"] and "pooler_output" in predicted["pooling"]


def test_the_demo_classifier_embeds_what_its_head_reads(local_api, models_dir):
    encoded = [jpeg_b64(image) for image in photos(full=False).values()]
    output = answered(local_api, {"op": "embed", "images": encoded})
    with_adapter = answered(local_api, {"op": "embed", "images": encoded, "adapter": "inverted"})
    expected = first_tokens(models_dir / "base", [decoded(e, "L") for e in encoded])
    worst = float(np.abs(vectors(output) - expected).max())
    assert worst <= TOLERANCE, f"demo classifier: embed vs the pipeline's CLS token, max |diff| {worst}"
    assert "classification head" in output["pooling"]
    assert np.abs(vectors(with_adapter) - vectors(output)).max() > 1e-3, "the adapter's backbone embeds"


def test_batch_embeds_a_dataset_and_the_demo_base_separates_held_out_digits(local_api, tmp_path):
    """`fastbackend batch --op embed --npy` over train and test digit folders; recall@1 of the
    held-out digits against the training ones, by the demo base's embeddings."""
    from exported.demo_models import write_digit_folder
    from fastbackend.cli import main
    from fastbackend.embeddings import recall_at_k

    vectors, labels = {}, {}
    for split in ("train", "test"):
        folder = write_digit_folder("digits", split, tmp_path / "data")
        out, npy = tmp_path / f"{split}.jsonl", tmp_path / f"{split}.npy"
        args = ["batch", str(folder), "--local", local_api.url, "--out", str(out), "--op", "embed"]
        assert main([*args, "--npy", str(npy), "--batch-size", "32", "--no-progress"]) == 0
        vectors[split] = np.load(npy)
        paths = npy.with_suffix(".paths.txt").read_text().split()
        labels[split] = [int(p.split("/")[0]) for p in paths]
        first = json.loads(out.read_text().splitlines()[0])
        assert len(first["embedding"]) == vectors[split].shape[1] == 64 and first["code"] is None
    assert len(vectors["test"]) == len(labels["test"]) > 300
    recall = recall_at_k(vectors["train"], labels["train"], vectors["test"], labels["test"])
    assert recall[1] >= 0.9, f"held-out digits, recall@1 {recall[1]:.3f} (recall@5 {recall[5]:.3f})"
