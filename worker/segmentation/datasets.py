"""Segmentation datasets as people have them: images beside class-id masks, checked before training.

**Folders** (`load_folders`): `<root>/images/` and `<root>/masks/`, files matched by stem
(`images/0001.jpg` with `masks/0001.png`); with split subfolders (`images/train/`,
`masks/train/`, ...) each image takes its subfolder's name as its split, else all are "train".

**Manifest** (`load_manifest`): a CSV with a header naming `image,mask` and optionally `split`,
paths relative to the CSV's folder.

A mask is a PNG whose pixel values are class ids: mode L or I;16, or a palette (mode P) whose
indices are the ids (never its colours). 255 is the ignore index (`IGNORE_INDEX`, the loss skips
it, as SegFormer's `semantic_loss_ignore_index`). Every broken record is a
`SegmentationDatasetError` naming the file, raised before any training step: an image without a
mask (or a mask without an image), a mask that is not a single-channel class-id map, a mask whose
size differs from its upright image's, a class id the model does not know.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
IGNORE_INDEX = 255
_MASK_MODES = ("L", "P", "I;16", "I")
_TURNED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


class SegmentationDatasetError(ValueError):
    """A segmentation dataset that training would trip on later; the message names the file."""


@dataclass(frozen=True)
class SegmentationItem:
    """One image and its mask file, with its split."""

    image: Path
    mask: Path
    split: str


def upright_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image as the worker decodes it (EXIF orientation applied)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
            turned = image.getexif().get(0x0112, 1) in _TURNED
    except OSError as exc:
        raise SegmentationDatasetError(f"{path}: not a readable image ({exc})") from None
    return (height, width) if turned else (width, height)


def read_mask(path: Path) -> np.ndarray:
    """A mask's class ids as int64 (H, W); a palette's indices, never its colours."""
    from PIL import Image

    try:
        with Image.open(path) as mask:
            if mask.mode not in _MASK_MODES:
                raise SegmentationDatasetError(
                    f"{path}: mode {mask.mode} is not a class-id map (save one channel of ids: L, P or I;16)"
                )
            return np.asarray(mask).astype(np.int64)
    except OSError as exc:
        raise SegmentationDatasetError(f"{path}: not a readable mask ({exc})") from None


def check_item(item: SegmentationItem, num_labels: int) -> None:
    """Raise SegmentationDatasetError naming the file when the pair would break training."""
    ids = read_mask(item.mask)
    width, height = upright_size(item.image)
    if ids.shape != (height, width):
        raise SegmentationDatasetError(
            f"{item.mask}: {ids.shape[1]}x{ids.shape[0]} mask for the {width}x{height} image {item.image.name}"
        )
    unknown = sorted(set(np.unique(ids).tolist()) - set(range(num_labels)) - {IGNORE_INDEX})
    if unknown:
        raise SegmentationDatasetError(
            f"{item.mask}: class ids {unknown[:8]} unknown to a {num_labels}-label model "
            f"(ids are 0-{num_labels - 1}, {IGNORE_INDEX} is ignored)"
        )


def check(items: list[SegmentationItem], num_labels: int) -> list[SegmentationItem]:
    """Every pair checked (before any training step); returns the items."""
    if not items:
        raise SegmentationDatasetError("no image/mask pairs found")
    for item in items:
        check_item(item, num_labels)
    return items


def _by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in suffixes}


def load_folders(root: str | Path, num_labels: int) -> list[SegmentationItem]:
    """The pairs of `<root>/images/[<split>/]` and `<root>/masks/[<split>/]`, checked."""
    root = Path(root)
    images, masks = root / "images", root / "masks"
    for folder in (images, masks):
        if not folder.is_dir():
            raise SegmentationDatasetError(f"{folder}: missing (a dataset holds images/ and masks/ side by side)")
    splits = sorted(p.name for p in images.iterdir() if p.is_dir())
    items = []
    for split in splits or [""]:
        image_dir, mask_dir = images / split, masks / split
        if not mask_dir.is_dir():
            raise SegmentationDatasetError(f"{mask_dir}: missing, for the images of {image_dir}")
        found, mask_files = _by_stem(image_dir, IMAGE_SUFFIXES), _by_stem(mask_dir, (".png",))
        for stem, path in found.items():
            if stem not in mask_files:
                raise SegmentationDatasetError(f"{path}: no mask {mask_dir / (stem + '.png')}")
            items.append(SegmentationItem(path, mask_files[stem], split or "train"))
        for stem in sorted(set(mask_files) - set(found)):
            raise SegmentationDatasetError(f"{mask_files[stem]}: a mask without an image in {image_dir}")
    return check(items, num_labels)


def load_manifest(path: str | Path, num_labels: int) -> list[SegmentationItem]:
    """The pairs a CSV manifest lists (`image,mask[,split]`, paths relative to it), checked."""
    path = Path(path)
    try:
        rows = list(csv.DictReader(path.read_text().splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SegmentationDatasetError(f"{path}: unreadable manifest ({exc})") from None
    if not rows or not {"image", "mask"} <= set(rows[0]):
        raise SegmentationDatasetError(f"{path}: needs a header with image,mask[,split] columns")
    items = []
    for line, row in enumerate(rows, start=2):
        image, mask = path.parent / (row["image"] or ""), path.parent / (row["mask"] or "")
        for kind, file in (("image", image), ("mask", mask)):
            if not file.is_file():
                raise SegmentationDatasetError(f"{path}:{line}: {kind} {file} not found")
        items.append(SegmentationItem(image, mask, (row.get("split") or "train").strip()))
    return check(items, num_labels)
