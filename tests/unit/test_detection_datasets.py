"""COCO and YOLO detection datasets: the same data in both formats is the same set; every broken kind is named."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.detection_datasets import NAMES, coco, yolo
from PIL import Image

from worker.detection.datasets import DetectionDatasetError, load_coco, load_yolo, write_coco


def _key(dataset) -> list:
    return [
        (i.split, i.path.name, i.width, i.height, i.labels, [tuple(round(v, 2) for v in b) for b in i.boxes])
        for i in dataset.items
    ]


def test_the_same_data_in_coco_and_yolo_is_the_same_training_set(tmp_path) -> None:
    from_coco, from_yolo = load_coco(coco(tmp_path / "coco")), load_yolo(yolo(tmp_path / "yolo"))
    assert from_coco.names == from_yolo.names == NAMES
    assert _key(from_coco) == _key(from_yolo)
    assert from_coco.summary() == from_yolo.summary()
    assert from_coco.summary().splitlines()[0] == "train: 3 images (1 without boxes), boxes: cat 1, dog 2"
    assert from_coco.split("val").splits == ("val",)


def test_write_coco_reads_back(tmp_path) -> None:
    dataset = load_yolo(yolo(tmp_path / "yolo"))
    out = tmp_path / "out"
    names = [f"../yolo/images/{i.split}/{i.path.name}" for i in dataset.items]
    assert _key(load_coco(write_coco(dataset, out, images=names))) == _key(dataset)


def test_boxes_outside_are_clipped_and_empty_ones_dropped_and_counted(tmp_path) -> None:
    def mutate(split, data):
        if split == "train":
            data["annotations"] += [
                {"id": 90, "image_id": 1, "category_id": 7, "bbox": [50, 40, 30, 30]},  # partly outside
                {"id": 91, "image_id": 1, "category_id": 7, "bbox": [10, 10, 0, 5]},  # zero area
                {"id": 92, "image_id": 1, "category_id": 7, "bbox": [100, 100, 5, 5]},  # wholly outside
                {"id": 93, "image_id": 2, "category_id": 9, "bbox": [1, 1, 5, 5], "iscrowd": 1},
            ]

    dataset = load_coco(coco(tmp_path, mutate=mutate))
    assert dataset.drops == {
        "boxes clipped": 1,
        "boxes of no area inside their image": 2,
        "crowd annotations (iscrowd)": 1,
    }
    assert (50.0, 40.0, 14.0, 8.0) in dataset.items[0].boxes
    assert "dropped: 1 boxes clipped" in dataset.summary()


def _coco_breaks(split, data, how):
    if split == "train":
        how(data)


COCO_BREAKS = {
    "unknown category": (lambda d: d["annotations"][0].update(category_id=3), "annotation 1: category_id 3"),
    "unknown image": (lambda d: d["annotations"][0].update(image_id=99), "annotation 1: image_id"),
    "bad bbox": (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), "annotation 1: bbox"),
    "missing file": (lambda d: d["images"][0].update(file_name="gone.png"), "gone.png: missing image file"),
    "duplicate image": (lambda d: d["images"].append(dict(d["images"][0])), "image id 1 appears twice"),
    "wrong size": (lambda d: d["images"][0].update(width=48, height=64), "a.png: train.json says 48x64"),
    "no categories": (lambda d: d.pop("categories"), "no 'categories' list"),
}


@pytest.mark.parametrize("kind", list(COCO_BREAKS))
def test_a_broken_coco_record_is_an_error_naming_the_file(kind, tmp_path) -> None:
    how, message = COCO_BREAKS[kind]
    root = coco(tmp_path, mutate=lambda split, data: _coco_breaks(split, data, how))
    with pytest.raises(DetectionDatasetError, match=message.replace("(", r"\(")) as caught:
        load_coco(root)
    assert str(tmp_path) in str(caught.value)


def _label(root: Path, text: str) -> None:
    (root / "labels" / "train" / "a.txt").write_text(text)


YOLO_BREAKS = {
    "unknown class": (lambda r: _label(r, "5 0.5 0.5 0.1 0.1\n"), "a.txt:1: class 5"),
    "pixels not normalised": (lambda r: _label(r, "0 32 24 10 10\n"), "a.txt:1: coordinates must be normalised"),
    "short line": (lambda r: _label(r, "0 0.5 0.5\n"), "a.txt:1: '0 0.5 0.5' is not"),
    "no names": (lambda r: (r / "data.yaml").unlink(), "no data.yaml"),
    "corrupt image": (lambda r: (r / "images" / "train" / "b.png").write_bytes(b"not a png"), "b.png: not a readable"),
}


@pytest.mark.parametrize("kind", list(YOLO_BREAKS))
def test_a_broken_yolo_record_is_an_error_naming_the_file(kind, tmp_path) -> None:
    how, message = YOLO_BREAKS[kind]
    with pytest.raises(DetectionDatasetError, match=message):
        load_yolo(yolo(tmp_path, mutate=how))


def test_yolo_labels_without_an_image_are_counted(tmp_path) -> None:
    root = yolo(tmp_path, mutate=lambda r: (r / "labels" / "train" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n"))
    dataset = load_yolo(root)
    assert dataset.drops == {"label files without an image": 1}
    assert "dropped: 1 label files without an image" in dataset.summary()


def test_exif_turned_images_have_their_upright_size(tmp_path) -> None:
    image = Image.new("RGB", (60, 20))
    exif = image.getexif()
    exif[0x0112] = 6
    (tmp_path / "images" / "train").mkdir(parents=True)
    image.save(tmp_path / "images" / "train" / "t.jpg", exif=exif)
    (tmp_path / "classes.txt").write_text("cat\n")
    item = load_yolo(tmp_path).items[0]
    assert (item.width, item.height) == (20, 60)
