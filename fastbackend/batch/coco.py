"""`fastbackend batch` on a COCO dataset: its images are the items, and `--coco-results` writes the
detections of the results file as the COCO results JSON pycocotools evaluates against it.

The dataset is one COCO JSON file (`images` with `id` and `file_name`, `categories` with `id` and
`name`; `annotations` are not needed to score, only to evaluate). Each image's file is found as
`load_coco` finds it (beside the JSON, in `<split>/` or `images/`). The results file keys images
by their path relative to the JSON's folder; the COCO results use the JSON's own image ids and
the category ids of the labels' names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastbackend.batch.plan import item_key
from worker.datasets import DatasetError


def is_coco(dataset: Path) -> bool:
    return dataset.suffix.lower() == ".json" and dataset.is_file()


def coco_images(path: Path) -> tuple[list[Path], dict[str, int], dict[str, int]]:
    """The images' files, their ids by results-file key, and the category ids by name.

    Raises:
        DatasetError: not readable JSON, or an image or category without its id, name or file_name.
    """
    from worker.detection.datasets import find_image

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: not readable JSON ({exc})") from None
    images, categories = data.get("images"), data.get("categories")
    if not isinstance(images, list) or not isinstance(categories, list):
        raise DatasetError(f"{path}: a COCO file needs 'images' and 'categories' lists")
    files, ids, names = [], {}, {}
    for image in images:
        if not isinstance(image, dict) or not isinstance(image.get("id"), int) or "file_name" not in image:
            raise DatasetError(f"{path}: image {image!r} needs an integer id and a file_name")
        file = find_image(path, path.stem, str(image["file_name"]))
        files.append(file)
        ids[item_key(file, path.parent)] = image["id"]
    for category in categories:
        if not isinstance(category, dict) or not isinstance(category.get("id"), int) or "name" not in category:
            raise DatasetError(f"{path}: category {category!r} needs an integer id and a name")
        names[str(category["name"])] = category["id"]
    return files, ids, names


def write_coco_results(jsonl: Path, out: Path, ids: dict[str, int], categories: dict[str, int]) -> tuple[int, int]:
    """The detections of the results file as a COCO results JSON list; returns (images, detections).

    Raises:
        ValueError: a detection label that is not a category name (the model's labels are not the dataset's).
    """
    from worker.detection.evaluation import coco_results

    keys, answers = [], []
    with open(jsonl, encoding="utf-8") as handle:
        for line in handle:
            row: dict[str, Any] = json.loads(line)
            if row.get("detections") is not None and row["path"] in ids:
                keys.append(row["path"])
                answers.append(row["detections"])
    results = coco_results(answers, [ids[k] for k in keys], categories)
    out.write_text(json.dumps(results))
    return len(keys), len(results)
