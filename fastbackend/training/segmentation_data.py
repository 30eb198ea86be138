"""Segmentation data for training and evaluation: image/mask pairs as arrays, augmented together.

A dataset is a list of uint8 RGB images (H, W, 3), each with its class-id mask (H, W), at the
image's upright size. `read_pairs` reads the checked pairs of worker/segmentation/datasets.py;
`demo_scenes` draws the embedded demo's digit scenes (worker/segmentation/scenes.py) from the
digits of one split of the classification demo (`exported.demo_models.load_digit_task`), so the
held-out scenes hold held-out digits. `model_batch` turns pairs into the model's inputs: the
pixels by the worker's own preprocessing (the model's image processor), the mask resized with
nearest neighbours to the model's input size, as the model's loss expects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worker.segmentation.datasets import IGNORE_INDEX, SegmentationItem, read_mask


@dataclass
class PairSet:
    """Images (uint8 RGB, H x W x 3) and their class-id masks (H x W), one pair per index."""

    images: list[np.ndarray]
    masks: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: Sequence[int]) -> PairSet:
        return PairSet([self.images[i] for i in index], [self.masks[i] for i in index])


def read_pairs(items: Sequence[SegmentationItem]) -> PairSet:
    """The pairs of checked dataset items: each image upright (EXIF orientation applied) as RGB."""
    from PIL import Image, ImageOps

    images, masks = [], []
    for item in items:
        with Image.open(item.image) as image:
            images.append(np.asarray(ImageOps.exif_transpose(image).convert("RGB")))
        mask = read_mask(item.mask)
        masks.append(mask.astype(np.uint8) if mask.max(initial=0) < 256 else mask)
    return PairSet(images, masks)


def demo_scenes(split: str, count: int, *, seed: int, shifted: bool = False, size: int = 64) -> PairSet:
    """`count` digit scenes from the digits of one split ("train" or "test") of the demo's digits."""
    from exported.demo_models import load_digit_task
    from worker.segmentation.scenes import digit_scenes

    digits, labels = load_digit_task("digits", split)
    scenes = digit_scenes(digits.astype(np.float32) * 16 / 255, labels, count, seed=seed, size=size, shifted=shifted)
    return PairSet([s.image for s in scenes], [s.mask for s in scenes])


def train_augment(seed: int):
    """The albumentations transform applied to image and mask together (masks by nearest neighbour).

    Geometry moves both; colour changes only the image; pixels moved in from outside the image are
    the ignore index in the mask, so the loss never learns a made-up border.
    """
    import albumentations as A  # here: only training imports it

    return A.Compose(
        [
            A.Affine(
                scale=(0.85, 1.15),
                translate_percent=(-0.1, 0.1),
                rotate=(-10, 10),
                fill=0,
                fill_mask=IGNORE_INDEX,
                p=0.9,
            ),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        ],
        seed=seed,
    )


def augmented(pairs: PairSet, augment) -> PairSet:
    """Every pair through `augment` (an albumentations Compose taking image= and mask=)."""
    out = [augment(image=image, mask=mask) for image, mask in zip(pairs.images, pairs.masks)]
    return PairSet([o["image"] for o in out], [o["mask"] for o in out])


def resized_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """A class-id mask at (height, width) by nearest neighbour (ids are never blended)."""
    if mask.shape == (height, width):
        return mask.astype(np.int64)
    from PIL import Image

    image = Image.fromarray(mask.astype(np.int32 if mask.max() > 255 else np.uint8))
    return np.asarray(image.resize((width, height), Image.Resampling.NEAREST)).astype(np.int64)


def model_batch(pairs: PairSet, prep) -> tuple[np.ndarray, np.ndarray]:
    """(pixel_values float32 (N, C, h, w), labels int64 (N, h, w)) at the processor's input size."""
    from exported.preprocess import preprocess_image

    pixels = np.stack([preprocess_image(image, prep) for image in pairs.images]).astype(np.float32)
    labels = np.stack([resized_mask(mask, prep.height, prep.width) for mask in pairs.masks])
    return pixels, labels


def load_dataset(path: str | Path, num_labels: int) -> dict[str, PairSet]:
    """A user's dataset by split: a folder (images/ + masks/) or a CSV manifest, every pair checked first.

    Raises:
        SegmentationDatasetError: the first broken pair, naming its file, before anything is trained.
    """
    from worker.segmentation.datasets import load_folders, load_manifest

    path = Path(path)
    items = load_manifest(path, num_labels) if path.suffix.lower() == ".csv" else load_folders(path, num_labels)
    splits: dict[str, list[SegmentationItem]] = {}
    for item in items:
        splits.setdefault(item.split, []).append(item)
    return {split: read_pairs(found) for split, found in sorted(splits.items())}


def write_pairs(pairs: PairSet, root: str | Path, split: str) -> Path:
    """Pairs as the folder layout a user has: `root/images/<split>/NNNN.png` beside `root/masks/<split>/NNNN.png`."""
    from PIL import Image

    root = Path(root)
    for kind in ("images", "masks"):
        (root / kind / split).mkdir(parents=True, exist_ok=True)
    for n, (image, mask) in enumerate(zip(pairs.images, pairs.masks)):
        Image.fromarray(image).save(root / "images" / split / f"{n:04d}.png")
        Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / split / f"{n:04d}.png")
    return root
