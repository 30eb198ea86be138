"""Detection datasets as people have them: COCO JSON or YOLO text labels, with splits, in one form.

**COCO** (`load_coco`): a folder of `<split>.json` files (`train.json`, `val.json`, ...) or one
such file, each with `images` (`id`, `file_name`, `width`, `height`), `annotations` (`image_id`,
`category_id`, `bbox` = `[x, y, w, h]` in pixels) and `categories` (`id`, `name`). `file_name`
is resolved from the JSON's folder, then from `<folder>/<split>/` and `<folder>/images/`.

**YOLO** (`load_yolo`): Ultralytics' layout, `images/<split>/*.jpg` beside `labels/<split>/*.txt`
(one `class cx cy w h` line per box, normalised to the image) and the class names in `data.yaml`
(`names:` a list or an index map) or `classes.txt` (one a line).

Class indices follow the categories sorted by COCO id (YOLO: the names' order); boxes are in
pixels of the upright image (EXIF orientation applied, as the worker decodes it). What each broken
record does, decided before any training:

- a missing or unreadable image file, a box or line that is not four/five numbers, a category or
  class the names do not list, a duplicate image, an annotation of an unknown image, YOLO
  coordinates outside [0, 1] (pixels written as if normalised), a COCO width/height that is not
  the upright image's (boxes drawn on the turned photo): `DetectionDatasetError` naming the file
  (and the annotation id or line);
- a box partly outside its image: clipped to it (as transformers' `prepare_coco_detection_annotation`
  clips), counted in `drops["boxes clipped"]`;
- a box of no area once clipped, and COCO crowd annotations (`iscrowd: 1`, which DETR's processor
  drops too): dropped, counted in `drops`;
- an image without boxes (no annotation, an empty or absent YOLO label file): kept, a negative,
  counted per split by `summary()`; a YOLO label file without its image: counted in `drops`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_TURNED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


class DetectionDatasetError(ValueError):
    """A detection dataset that training would trip on later; the message names the file."""


@dataclass(frozen=True)
class DetectionItem:
    """One image: its file, upright size, split and boxes ([x, y, w, h] pixels) with class indices."""

    path: Path
    width: int
    height: int
    split: str
    boxes: tuple[tuple[float, float, float, float], ...]
    labels: tuple[int, ...]


@dataclass(frozen=True)
class DetectionDataset:
    """Images with boxes, the class names in index order, and what loading dropped (reason -> count)."""

    items: tuple[DetectionItem, ...]
    names: tuple[str, ...]
    drops: dict[str, int] = field(default_factory=dict)

    def split(self, name: str) -> DetectionDataset:
        return DetectionDataset(tuple(i for i in self.items if i.split == name), self.names, self.drops)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(item.split for item in self.items))

    def summary(self) -> str:
        """Images, negatives and boxes per class for each split, then the drops: what the loader read."""
        lines = []
        for split in self.splits:
            items = [item for item in self.items if item.split == split]
            per_class = Counter(self.names[label] for item in items for label in item.labels)
            negatives = sum(1 for item in items if not item.boxes)
            classes = ", ".join(f"{name} {per_class[name]}" for name in self.names)
            lines.append(f"{split}: {len(items)} images ({negatives} without boxes), boxes: {classes}")
        lines += [f"dropped: {count} {reason}" for reason, count in sorted(self.drops.items()) if count]
        return "\n".join(lines)


def upright_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file as the worker decodes it (EXIF orientation applied)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = int(image.getexif().get(0x0112, 1) or 1)
    except FileNotFoundError:
        raise DetectionDatasetError(f"{path}: missing image file") from None
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DetectionDatasetError(f"{path}: not a readable image ({exc})") from None
    return (height, width) if orientation in _TURNED else (width, height)


def _clip(box: Sequence[float], width: int, height: int, drops: Counter) -> tuple[float, ...] | None:
    """[x, y, w, h] clipped to the image; None (counted) when nothing is left."""
    x0, y0 = max(0.0, box[0]), max(0.0, box[1])
    x1, y1 = min(float(width), box[0] + box[2]), min(float(height), box[1] + box[3])
    if x1 <= x0 or y1 <= y0:
        drops["boxes of no area inside their image"] += 1
        return None
    if (x0, y0, x1, y1) != (box[0], box[1], box[0] + box[2], box[1] + box[3]):
        drops["boxes clipped"] += 1
    return (x0, y0, x1 - x0, y1 - y0)


def _numbers(values: object, count: int) -> list[float] | None:
    if not isinstance(values, (list, tuple)) or len(values) != count:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v == v for v in values):
        return None
    return [float(v) for v in values]


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DetectionDatasetError(f"{path}: not readable JSON ({exc})") from None
    missing = [key for key in ("images", "annotations", "categories") if not isinstance(data.get(key), list)]
    if missing:
        raise DetectionDatasetError(f"{path}: no {missing[0]!r} list (a COCO file has images, annotations, categories)")
    return data


def _coco_names(path: Path, categories: list) -> tuple[dict[int, int], tuple[str, ...]]:
    ids: dict[int, str] = {}
    for category in categories:
        if not isinstance(category, dict) or not isinstance(category.get("id"), int) or "name" not in category:
            raise DetectionDatasetError(f"{path}: category {category!r} needs an integer id and a name")
        ids[category["id"]] = str(category["name"])
    order = sorted(ids)
    return {cid: index for index, cid in enumerate(order)}, tuple(ids[cid] for cid in order)


def find_image(json_path: Path, split: str, file_name: str) -> Path:
    folder = json_path.parent
    candidates = [folder / file_name, folder / split / file_name, folder / "images" / file_name]
    return next((c for c in candidates if c.is_file()), candidates[0])


def _coco_split(path: Path, split: str, drops: Counter) -> tuple[list[DetectionItem], tuple[str, ...]]:
    data = _read_json(path)
    index_of, names = _coco_names(path, data["categories"])
    images: dict[int, dict] = {}
    for image in data["images"]:
        if not isinstance(image, dict) or not isinstance(image.get("id"), int) or "file_name" not in image:
            raise DetectionDatasetError(f"{path}: image {image!r} needs an integer id and a file_name")
        if image["id"] in images:
            raise DetectionDatasetError(f"{path}: image id {image['id']} appears twice")
        images[image["id"]] = image
    boxes: dict[int, list[tuple[tuple[float, ...], int]]] = {image_id: [] for image_id in images}
    sizes: dict[int, tuple[int, int]] = {}
    for image_id, image in images.items():
        file = find_image(path, split, str(image["file_name"]))
        sizes[image_id] = upright_size(file)
        stated = (image.get("width"), image.get("height"))
        if None not in stated and tuple(stated) != sizes[image_id]:
            raise DetectionDatasetError(
                f"{file}: {path.name} says {stated[0]}x{stated[1]}, the image is {sizes[image_id][0]}x"
                f"{sizes[image_id][1]} upright (EXIF orientation applied); its boxes would land wrong"
            )
        image["_file"] = file
    for annotation in data["annotations"]:
        where = f"{path}: annotation {annotation.get('id') if isinstance(annotation, dict) else annotation!r}"
        if not isinstance(annotation, dict) or annotation.get("image_id") not in images:
            raise DetectionDatasetError(f"{where}: image_id not among the images")
        if annotation.get("category_id") not in index_of:
            raise DetectionDatasetError(f"{where}: category_id {annotation.get('category_id')!r} is not a category")
        bbox = _numbers(annotation.get("bbox"), 4)
        if bbox is None:
            raise DetectionDatasetError(f"{where}: bbox {annotation.get('bbox')!r} is not [x, y, w, h]")
        if annotation.get("iscrowd"):
            drops["crowd annotations (iscrowd)"] += 1
            continue
        clipped = _clip(bbox, *sizes[annotation["image_id"]], drops)
        if clipped is not None:
            boxes[annotation["image_id"]].append((clipped, index_of[annotation["category_id"]]))
    items = [
        DetectionItem(
            image["_file"],
            *sizes[image_id],
            split,
            tuple(b for b, _ in boxes[image_id]),
            tuple(label for _, label in boxes[image_id]),
        )
        for image_id, image in images.items()
    ]
    return items, names


def load_coco(path: str | Path) -> DetectionDataset:
    """A COCO dataset: a folder of `<split>.json` files, or one file (its stem is the split).

    Raises:
        DetectionDatasetError: a broken record (the module docstring), or splits naming different categories.
    """
    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files or not files[0].is_file():
        raise DetectionDatasetError(f"{path}: no COCO JSON file (<split>.json) here")
    drops: Counter = Counter()
    items: list[DetectionItem] = []
    names: tuple[str, ...] | None = None
    for file in files:
        split_items, split_names = _coco_split(file, file.stem, drops)
        if names is not None and split_names != names:
            raise DetectionDatasetError(f"{file}: categories {split_names} differ from the other splits' {names}")
        names = split_names
        items += split_items
    return DetectionDataset(tuple(items), names or (), dict(drops))


def _yolo_names(root: Path) -> tuple[str, ...]:
    yaml_file, text_file = root / "data.yaml", root / "classes.txt"
    if yaml_file.is_file():
        import yaml

        try:
            names = (yaml.safe_load(yaml_file.read_text()) or {}).get("names")
        except (OSError, yaml.YAMLError, AttributeError) as exc:
            raise DetectionDatasetError(f"{yaml_file}: not readable YAML with names ({exc})") from None
        if isinstance(names, dict) and sorted(names) == list(range(len(names))):
            return tuple(str(names[i]) for i in range(len(names)))
        if isinstance(names, list) and names:
            return tuple(str(n) for n in names)
        raise DetectionDatasetError(f"{yaml_file}: names must be a list, or a map of 0..n-1 to names")
    if text_file.is_file():
        return tuple(line.strip() for line in text_file.read_text().splitlines() if line.strip())
    raise DetectionDatasetError(f"{root}: no data.yaml (names:) or classes.txt with the class names")


def _yolo_boxes(label: Path, width: int, height: int, classes: int, drops: Counter) -> tuple[list, list]:
    boxes, labels = [], []
    for number, line in enumerate(label.read_text().splitlines(), 1):
        if not line.strip():
            continue
        values = line.split()
        try:
            parsed = [float(v) for v in values]
        except ValueError:
            parsed = []
        if len(parsed) != 5 or not parsed[0].is_integer():
            raise DetectionDatasetError(f"{label}:{number}: {line.strip()!r} is not 'class cx cy w h'")
        if not 0 <= parsed[0] < classes:
            raise DetectionDatasetError(f"{label}:{number}: class {int(parsed[0])} is not among the {classes} names")
        cx, cy, w, h = parsed[1:]
        if not all(0 <= v <= 1 for v in (cx, cy, w, h)):
            raise DetectionDatasetError(f"{label}:{number}: coordinates must be normalised to [0, 1]: {line.strip()!r}")
        box = [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]
        clipped = _clip(box, width, height, drops)
        if clipped is not None:
            boxes.append(clipped)
            labels.append(int(parsed[0]))
    return boxes, labels


def load_yolo(root: str | Path) -> DetectionDataset:
    """A YOLO dataset: `images/<split>/`, `labels/<split>/`, names in data.yaml or classes.txt.

    Raises:
        DetectionDatasetError: a broken record (the module docstring), or no split folders.
    """
    root = Path(root)
    names = _yolo_names(root)
    splits = sorted(p.name for p in (root / "images").iterdir() if p.is_dir()) if (root / "images").is_dir() else []
    if not splits:
        raise DetectionDatasetError(f"{root / 'images'}: no split folders (images/train, images/val, ...)")
    drops: Counter = Counter()
    items: list[DetectionItem] = []
    for split in splits:
        images = sorted(p for p in (root / "images" / split).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        label_dir = root / "labels" / split
        stems = {p.stem for p in images}
        drops["label files without an image"] += sum(
            1 for p in (label_dir.glob("*.txt") if label_dir.is_dir() else []) if p.stem not in stems
        )
        for image in images:
            width, height = upright_size(image)
            label = label_dir / f"{image.stem}.txt"
            boxes, labels = _yolo_boxes(label, width, height, len(names), drops) if label.is_file() else ([], [])
            items.append(DetectionItem(image, width, height, split, tuple(boxes), tuple(labels)))
    return DetectionDataset(tuple(items), names, {k: v for k, v in drops.items() if v})


def write_coco(dataset: DetectionDataset, folder: str | Path, *, images: Iterable[str] | None = None) -> Path:
    """Write `dataset` as `<split>.json` files in `folder` (file names relative to it); returns folder.

    `images`, when given, is each item's file name to write (default: its path relative to folder).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(images) if images is not None else [str(i.path.relative_to(folder)) for i in dataset.items]
    categories = [{"id": index + 1, "name": name} for index, name in enumerate(dataset.names)]
    for split in dataset.splits:
        records = [(n, item) for n, item in zip(names, dataset.items) if item.split == split]
        coco = {"images": [], "annotations": [], "categories": categories}
        for image_id, (name, item) in enumerate(records, 1):
            coco["images"].append({"id": image_id, "file_name": name, "width": item.width, "height": item.height})
            for box, label in zip(item.boxes, item.labels):
                coco["annotations"].append(
                    {
                        "id": len(coco["annotations"]) + 1,
                        "image_id": image_id,
                        "category_id": label + 1,
                        "bbox": [round(v, 3) for v in box],
                        "area": round(box[2] * box[3], 3),
                        "iscrowd": 0,
                    }
                )
        (folder / f"{split}.json").write_text(json.dumps(coco))
    return folder
