"""The embedded detection demo's pieces: digit-scene datasets on disk and a small detector to train.

`write_scene_dataset` draws digit scenes (worker/detection/scenes.py) into a COCO dataset folder
(`<split>/<n>.png` and `<split>.json`, read back by `load_coco`, so the demo trains through the same
loader as a user's data); `write_yolo` writes the same data in YOLO's layout. `small_detector`
is a detector from a config (no hub, no pretrained weights): RT-DETR by default, whose
query selection and denoising training converge in far fewer epochs than DETR's, on a small
transformers ResNet, saved with its image processor at the scenes' size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worker.detection.datasets import DetectionDataset, load_coco, write_coco
from worker.detection.scenes import digit_scenes

DIGIT_NAMES = tuple(str(i) for i in range(10))
DEMO_DIR = "models/detection"  # the demo's folder under the project root


@dataclass(frozen=True)
class DemoPaths:
    root: Path

    @property
    def base(self) -> Path:
        return self.root / "base"

    @property
    def adapters(self) -> Path:
        return self.root / "adapters"

    @property
    def data(self) -> Path:  # the plain scenes (COCO): train, val
        return self.root / "data"

    @property
    def shifted_data(self) -> Path:  # light digits on dark, noisy canvases (COCO): train, val
        return self.root / "data-shifted"


def demo_paths(root: str | Path | None = None) -> DemoPaths:
    """Where the detection demo lives: `root`, or models/detection under the project root."""
    from fastbackend.paths import project_path

    return DemoPaths(Path(root) if root is not None else project_path(DEMO_DIR))


def digits(part: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits, split: `train` the first 80 %, `held` the rest (held-out scenes draw on it)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    cut = len(data.images) * 4 // 5
    part_slice = slice(None, cut) if part == "train" else slice(cut, None)
    return data.images[part_slice], data.target[part_slice]


def write_scene_dataset(
    folder: str | Path, counts: dict[str, int], *, seed: int = 0, size: int = 96, shifted: bool = False
) -> DetectionDataset:
    """Digit scenes as a COCO dataset in `folder` (`counts`: split -> images; `train` draws on the
    training digits, every other split on the held-out ones); returns it as `load_coco` reads it."""
    from PIL import Image

    from worker.detection.datasets import DetectionItem

    folder = Path(folder)
    items, files = [], []
    for offset, (split, count) in enumerate(counts.items()):
        glyphs, labels = digits("train" if split == "train" else "held")
        (folder / split).mkdir(parents=True, exist_ok=True)
        for n, scene in enumerate(digit_scenes(glyphs, labels, count, seed=seed + offset, size=size, shifted=shifted)):
            path = folder / split / f"{n:05d}.png"
            Image.fromarray(scene.image).save(path)
            items.append(DetectionItem(path, size, size, split, scene.boxes, scene.labels))
            files.append(f"{split}/{n:05d}.png")
    write_coco(DetectionDataset(tuple(items), DIGIT_NAMES), folder, images=files)
    return load_coco(folder)


def write_yolo(dataset: DetectionDataset, root: str | Path) -> Path:
    """The dataset in YOLO's layout: images/<split>/ (links to its files), labels/<split>/*.txt, data.yaml."""
    root = Path(root)
    for item in dataset.items:
        image = root / "images" / item.split / item.path.name
        image.parent.mkdir(parents=True, exist_ok=True)
        image.unlink(missing_ok=True)
        image.symlink_to(item.path.resolve())
        label = root / "labels" / item.split / f"{item.path.stem}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        lines = [
            f"{c} {(x + w / 2) / item.width:.6f} {(y + h / 2) / item.height:.6f} {w / item.width:.6f} "
            f"{h / item.height:.6f}\n"
            for (x, y, w, h), c in zip(item.boxes, item.labels)
        ]
        label.write_text("".join(lines))
    names = "".join(f"  {i}: {name}\n" for i, name in enumerate(dataset.names))
    (root / "data.yaml").write_text(f"names:\n{names}")
    return root


def small_detector(arch: str = "rt_detr", *, size: int = 96, names=DIGIT_NAMES, seed: int = 0, width: int = 64):
    """(model, image processor) of a small detector from a config, random weights.

    Raises:
        ValueError: an architecture other than rt_detr, conditional_detr, detr.
    """
    import torch
    import transformers

    torch.manual_seed(seed)
    labels = dict(enumerate(names))
    common: dict[str, Any] = {"id2label": labels, "label2id": {v: k for k, v in labels.items()}}
    if arch == "rt_detr":
        backbone = transformers.RTDetrResNetConfig(
            embedding_size=16,
            hidden_sizes=[16, 32, 64, 64],
            depths=[1, 1, 1, 1],
            layer_type="basic",
            out_features=["stage2", "stage3", "stage4"],
        )
        config = transformers.RTDetrConfig(
            backbone_config=backbone,
            use_pretrained_backbone=False,
            encoder_in_channels=[32, 64, 64],
            feat_strides=[8, 16, 32],
            encoder_hidden_dim=width,
            encoder_ffn_dim=width * 2,
            encoder_attention_heads=4,
            d_model=width,
            decoder_in_channels=[width] * 3,
            decoder_ffn_dim=width * 2,
            decoder_attention_heads=4,
            decoder_layers=3,
            encoder_layers=1,
            num_queries=30,
            decoder_n_points=4,
            num_denoising=30,
            **common,
        )
        model = transformers.RTDetrForObjectDetection(config)
        processor = transformers.RTDetrImageProcessorPil(size={"height": size, "width": size})
        return model, processor
    if arch not in ("detr", "conditional_detr"):
        raise ValueError(f"arch {arch!r}: rt_detr, conditional_detr or detr")
    prefix = "ConditionalDetr" if arch == "conditional_detr" else "Detr"
    backbone = transformers.ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32, 64], depths=[1, 1, 1], layer_type="basic", out_features=["stage3"]
    )
    config = getattr(transformers, prefix + "Config")(
        use_timm_backbone=False,
        backbone_config=backbone,
        use_pretrained_backbone=False,
        d_model=width,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=width * 2,
        decoder_ffn_dim=width * 2,
        num_queries=10,
        dropout=0.0,
        **common,
    )
    model = getattr(transformers, prefix + "ForObjectDetection")(config)
    return model, getattr(transformers, prefix + "ImageProcessorPil")(size={"height": size, "width": size})
