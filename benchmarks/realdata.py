"""Real-size inputs for the benchmarks: phone-sized JPEGs and full-size models, built here.

Photos are scikit-learn's `china.jpg` and `flower.jpg` upscaled (bicubic, plus mild sensor-like
noise so they compress like camera output, not like flat upscales) and re-encoded as JPEG
(quality 90) at 1, 3 and 12 megapixels. Models are ViT-base/16 at 224 and ConvNeXt-tiny, built
from their transformers configs with random weights (seeded) and saved as `save_pretrained`
does, with the PIL image processor transformers picks for them. Nothing here is committed: all
of it is cached under bench-results/cache/ and rebuilt when missing.
"""

from __future__ import annotations

import base64
from pathlib import Path

from benchmarks.report import RESULTS

CACHE = RESULTS / "cache"
MEGAPIXELS = {1: (1152, 864), 3: (2000, 1500), 12: (4000, 3000)}  # 4:3, as phone cameras
MODELS = {
    # name: (config class, processor class, processor fields)
    "vit-base": ("ViTConfig", "ViTImageProcessorPil", {"size": {"height": 224, "width": 224}}),
    "convnext-tiny": (
        "ConvNextConfig",
        "ConvNextImageProcessorPil",
        {"size": {"shortest_edge": 224}, "crop_pct": 0.875},
    ),
}


def photo_paths(megapixels: int) -> list[Path]:
    """The two photographs at `megapixels` (1, 3 or 12) as JPEG files, made once."""
    import numpy as np
    from PIL import Image

    folder = CACHE / "photos"
    paths = [folder / f"{name}-{megapixels}mp.jpg" for name in ("china", "flower")]
    if all(p.is_file() for p in paths):
        return paths
    from sklearn.datasets import load_sample_images

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(megapixels)
    for path, array in zip(paths, load_sample_images().images):
        big = np.asarray(Image.fromarray(array).resize(MEGAPIXELS[megapixels], Image.Resampling.BICUBIC))
        noisy = np.clip(big + rng.normal(0, 3, big.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(path, format="JPEG", quality=90)
    return paths


def encoded_photos(megapixels: int, count: int) -> list[str]:
    """`count` base64 JPEGs at `megapixels`, alternating the two photographs."""
    data = [base64.b64encode(p.read_bytes()).decode("ascii") for p in photo_paths(megapixels)]
    return [data[i % len(data)] for i in range(count)]


def model_dir(name: str) -> Path:
    """A model folder (config.json, model.safetensors, preprocessor_config.json) for `name`, made once."""
    folder = CACHE / "models" / name
    if (folder / "model.safetensors").is_file():
        return folder
    import torch
    import transformers

    config_class, processor_class, fields = MODELS[name]
    labels = {i: f"class_{i}" for i in range(1000)}
    config = getattr(transformers, config_class)(id2label=labels, label2id={v: k for k, v in labels.items()})
    torch.manual_seed(0)
    model = transformers.AutoModelForImageClassification.from_config(config).eval()
    model.save_pretrained(folder)
    getattr(transformers, processor_class)(**fields).save_pretrained(folder)
    return folder
