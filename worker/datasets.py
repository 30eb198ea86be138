"""Datasets: an image folder (one subfolder per class) or a .csv/.jsonl manifest (path,label[,split]).

A stand-in with the agreed signature until the dataset loader of issue 14 lands (it replaces
this file): it lists items and checks that their files exist; it does not decode images.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


class DatasetError(ValueError):
    """The dataset cannot be read; the message names the file, folder or row."""


@dataclass(frozen=True)
class DatasetItem:
    path: Path
    label: str
    split: str | None = None


@dataclass(frozen=True)
class Dataset:
    source: Path
    items: list[DatasetItem] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return sorted({item.label for item in self.items})


def load_dataset(source: str | Path, *, split: str | None = None, label_names: Sequence[str] | None = None) -> Dataset:
    """Load an image folder or a manifest.

    Args:
        source: a folder whose subfolders are the classes, or a .csv/.jsonl file with `path`
            (relative to the manifest's folder, or absolute), `label` and optionally `split`.
        split: keep only the items of this split (manifests).
        label_names: the known labels; an item with another label is an error.

    Raises:
        DatasetError: missing source, unknown format, a bad row, a missing file, an unknown label.
    """
    source = Path(source)
    if source.is_dir():
        items = _folder_items(source)
    elif source.suffix.lower() in (".csv", ".jsonl") and source.is_file():
        items = _manifest_items(source)
    elif source.exists():
        raise DatasetError(f"{source}: not a folder, .csv or .jsonl manifest")
    else:
        raise DatasetError(f"{source}: no such folder or file")
    if split is not None:
        items = [item for item in items if item.split == split]
    if label_names is not None:
        known = set(label_names)
        for item in items:
            if item.label not in known:
                raise DatasetError(f"{item.path}: label {item.label!r} is not one of {sorted(known)}")
    return Dataset(source, items)


def _folder_items(root: Path) -> list[DatasetItem]:
    items = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            relative = path.relative_to(root)
            label = relative.parts[0] if len(relative.parts) > 1 else ""
            items.append(DatasetItem(path, label, None))
    if not items:
        raise DatasetError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return items


def _manifest_items(manifest: Path) -> list[DatasetItem]:
    rows: list[tuple[int, dict]] = []
    text = manifest.read_text(encoding="utf-8")
    if manifest.suffix.lower() == ".csv":
        rows = list(enumerate(csv.DictReader(text.splitlines()), start=2))
    else:
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append((number, json.loads(line)))
                except ValueError as exc:
                    raise DatasetError(f"{manifest}:{number}: not JSON ({exc})") from None
    items = []
    for number, row in rows:
        if not isinstance(row, dict) or not row.get("path"):
            raise DatasetError(f"{manifest}:{number}: no `path`")
        path = Path(row["path"])
        path = path if path.is_absolute() else manifest.parent / path
        if not path.is_file():
            raise DatasetError(f"{manifest}:{number}: no such file {row['path']}")
        items.append(DatasetItem(path, str(row.get("label") or ""), row.get("split") or None))
    if not items:
        raise DatasetError(f"{manifest}: no rows")
    return items
