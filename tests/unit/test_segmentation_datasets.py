"""Segmentation datasets: folders and manifests load, and each broken one is one error naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from worker.segmentation.datasets import SegmentationDatasetError, load_folders, load_manifest, read_mask


def _pair(root: Path, stem: str, *, size=(8, 6), ids=(0, 1), split: str = "", mask_size=None) -> None:
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "masks" / split).mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(root / "images" / split / f"{stem}.jpg")
    w, h = mask_size or size
    mask = np.resize(np.array(ids, dtype=np.uint8), (h, w))
    Image.fromarray(mask).save(root / "masks" / split / f"{stem}.png")


def test_folders_with_splits(tmp_path):
    _pair(tmp_path, "a", split="train")
    _pair(tmp_path, "b", split="val", ids=(2, 255))
    items = load_folders(tmp_path, num_labels=3)
    assert [(i.image.name, i.mask.name, i.split) for i in items] == [
        ("a.jpg", "a.png", "train"),
        ("b.jpg", "b.png", "val"),
    ]


def test_a_palette_masks_indices_are_the_ids(tmp_path):
    mask = Image.fromarray(np.array([[0, 2], [1, 2]], dtype=np.uint8), mode="P")
    mask.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    mask.save(tmp_path / "m.png")
    assert (read_mask(tmp_path / "m.png") == [[0, 2], [1, 2]]).all()


BROKEN = {
    "size": (lambda r: _pair(r, "a", mask_size=(4, 6)), "a.png", "4x6 mask for the 8x6 image"),
    "unknown id": (lambda r: _pair(r, "a", ids=(0, 7)), "a.png", "class ids [7] unknown"),
    "missing mask": (
        lambda r: (_pair(r, "a"), (r / "masks" / "a.png").unlink()),
        "a.jpg",
        "no mask",
    ),
    "orphan mask": (lambda r: (_pair(r, "a"), (r / "images" / "a.jpg").unlink(), _pair(r, "b")), "a.png", "without"),
    "rgb mask": (
        lambda r: (_pair(r, "a"), Image.new("RGB", (8, 6)).save(r / "masks" / "a.png")),
        "a.png",
        "not a class-id map",
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_folders_name_the_file(tmp_path, case):
    make, file, words = BROKEN[case]
    make(tmp_path)
    with pytest.raises(SegmentationDatasetError) as error:
        load_folders(tmp_path, num_labels=3)
    assert file in str(error.value) and words in str(error.value)


def test_manifest(tmp_path):
    _pair(tmp_path, "a")
    _pair(tmp_path, "b")
    (tmp_path / "list.csv").write_text(
        "image,mask,split\nimages/a.jpg,masks/a.png,train\nimages/b.jpg,masks/b.png,val\n"
    )
    assert [i.split for i in load_manifest(tmp_path / "list.csv", 2)] == ["train", "val"]
    (tmp_path / "bad.csv").write_text("image,mask\nimages/a.jpg,masks/zz.png\n")
    with pytest.raises(SegmentationDatasetError, match=r"bad.csv:2: mask .*zz.png not found"):
        load_manifest(tmp_path / "bad.csv", 2)
