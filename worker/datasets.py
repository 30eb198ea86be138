"""Labelled image datasets as users have them: an image folder or a CSV/JSONL manifest.

Two layouts are read:

- an **image folder**, one subfolder per class (as torchvision's ImageFolder lays it out)::

      pets/cat/001.jpg  pets/cat/002.png  pets/dog/001.jpg ...

- a **manifest**, ``.csv`` (a header row) or ``.jsonl`` (one object a line), with the columns
  ``path`` and ``label`` and optionally ``split`` (``train``, ``val``, ...). Relative paths are
  resolved from the manifest's folder, so a dataset copied onto a network volume
  (``/workspace/...`` on a pod, ``/runpod-volume/...`` on an endpoint) works as it is. A path
  that leads outside that folder (``..``, an absolute path elsewhere, a symlink out) is refused
  unless ``allow_outside=True``.

Everything that would break a training or evaluation run later is refused here, up front,
with one ``DatasetError`` naming the file, folder or manifest row: an empty folder, one class
only, an unreadable or non-image file, a row whose file is missing, a label the model does not
know. Pixels come from the worker's own decode step (``read_image``), so a dataset is seen
exactly as the endpoint will see the same files.

The runtime owns this module (exported training code, the batch client and the worker use
it); it never imports the tools.
"""

from __future__ import annotations

import csv
import json
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
MANIFEST_SUFFIXES = (".csv", ".jsonl")
MANIFEST_COLUMNS = ("path", "label", "split")
_HEADER_BYTES = 64  # enough to tell an image from anything else


class DatasetError(ValueError):
    """A dataset cannot be used as it is; the message names the file, folder or manifest row."""


@dataclass(frozen=True)
class DatasetItem:
    """One labelled image: its file (absolute), its label, its split (None when not given)."""

    path: Path
    label: str
    split: str | None = None


@dataclass(frozen=True)
class Dataset:
    """A checked list of labelled images.

    Attributes:
        source: the image folder or manifest it was read from.
        labels: the class names in index order: the model's ``id2label`` when given, else the
            labels found, sorted.
        items: the images, in a stable order (folder: class, then file name; manifest: rows).
        skipped: every file of an image folder that is not an item, and why (hidden, not in a
            class folder, not an image, the same file as another item).
    """

    source: Path
    labels: tuple[str, ...]
    items: tuple[DatasetItem, ...]
    skipped: tuple[tuple[Path, str], ...] = ()  # (file, why) for every file of a folder not used

    def __len__(self) -> int:
        return len(self.items)

    @property
    def targets(self) -> np.ndarray:
        """The label index of every item, as int64 (indices into ``labels``)."""
        index = {label: i for i, label in enumerate(self.labels)}
        return np.array([index[item.label] for item in self.items], dtype=np.int64)

    @property
    def splits(self) -> tuple[str, ...]:
        """The split names present, sorted (empty when no item has one)."""
        return tuple(sorted({item.split for item in self.items if item.split is not None}))

    def subset(self, indices: Iterable[int]) -> Dataset:
        """The items at `indices`, in that order; labels unchanged."""
        return replace(self, items=tuple(self.items[i] for i in indices))

    def read_images(self, *, progress: Callable[[int, int], None] | None = None, **limits: int) -> list[np.ndarray]:
        """Decode every image through the worker's decode step (see ``read_image``).

        Raises:
            DatasetError: an image cannot be decoded or is over the limits; names the file.
        """
        images = []
        for n, item in enumerate(self.items):
            images.append(read_image(item.path, **limits))
            if progress is not None:
                progress(n + 1, len(self.items))
        return images


def load_dataset(
    source: str | os.PathLike[str],
    *,
    split: str | None = None,
    label_names: Sequence[str] | None = None,
    allow_outside: bool = False,
    check_files: bool = True,
) -> Dataset:
    """Read and check an image folder or a ``.csv``/``.jsonl`` manifest.

    Args:
        source: an image folder (one subfolder per class) or a manifest file.
        split: keep only the items of this split (manifests with a ``split`` column).
        label_names: the model's labels in index order (``id2label``); every label of the
            dataset must be one of them, and ``Dataset.targets`` index into them.
        allow_outside: accept manifest paths that lead outside the manifest's folder.
        check_files: open every file to check it is an image. False: only the layout, labels and
            manifest rows are checked (the batch client records a bad file as that file's coded
            failure and scores the rest, rather than refusing the whole dataset).

    Returns:
        The Dataset; every file exists, is readable and starts like an image.

    Raises:
        DatasetError: what is wrong, naming the file, folder or manifest row: a missing or empty
            source, fewer than two classes, an unreadable or non-image file, a manifest row with
            a missing file, a missing column or a path outside its folder, a label not in
            `label_names`, a split with no items.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise DatasetError(f"{path}: no such folder or manifest")
    skipped: list[tuple[Path, str]] = []
    if path.is_dir():
        items = _read_folder(path, skipped)
    elif path.suffix.lower() in MANIFEST_SUFFIXES:
        items = _read_manifest(path, allow_outside)
    else:
        raise DatasetError(f"{path}: not an image folder or a manifest ({', '.join(MANIFEST_SUFFIXES)})")
    found = sorted({item.label for item in items})
    if len(found) < 2:
        raise DatasetError(f"{path}: one class only ({found[0]!r}); a classifier needs at least two")
    if label_names is not None:
        labels = tuple(str(name) for name in label_names)
        for item in items:
            if item.label not in labels:
                raise DatasetError(f"{item.path}: label {item.label!r} is not one the model knows ({list(labels)})")
    else:
        labels = tuple(found)
    if split is not None:
        present = sorted({item.split for item in items if item.split is not None})
        items = [item for item in items if item.split == split]
        if not items:
            raise DatasetError(f"{path}: no items in split {split!r} (splits present: {present or 'none'})")
    if check_files:
        for item in items:
            _check_file(item.path)
    return Dataset(path, labels, tuple(items), tuple(skipped))


def skipped_report(data: Dataset, limit: int = 20) -> str:
    """One line per skipped file (at most `limit`, then a count), or "" when none was skipped."""
    lines = [f"skipped {len(data.skipped)} files of {data.source}:"] if data.skipped else []
    lines += [f"  {path}: {why}" for path, why in data.skipped[:limit]]
    if len(data.skipped) > limit:
        lines.append(f"  ... and {len(data.skipped) - limit} more")
    return "\n".join(lines)


def read_image(path: str | os.PathLike[str], **limits: int) -> np.ndarray:
    """Decode one image file as the worker decodes a request's image.

    Args:
        path: the image file.
        limits: override the worker's decode limits (``max_image_bytes``, ``max_image_side``,
            ``max_image_pixels``); the defaults are the worker's.

    Returns:
        An HxW or HxWxC uint8 array, as the serving decode step returns it.

    Raises:
        DatasetError: unreadable, not an image, corrupt, or over the limits; names the file.
    """
    from worker.errors import WorkerError

    path = Path(path)
    try:
        _require_regular(path)
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: unreadable ({exc.strerror or exc})") from None
    try:
        return _decode(data, str(path), limits)
    except WorkerError as exc:
        raise DatasetError(f"{path}: {exc.message.removeprefix(str(path) + ': ')}") from None


def _decode(data: bytes, name: str, limits: dict[str, int]) -> np.ndarray:
    """The serving decode step (worker.decoding.decode_image), as an 8-bit RGB array."""
    from worker.config import WorkerConfig
    from worker.decoding import decode_image

    return np.asarray(decode_image(data, channels=3, limits=replace(WorkerConfig(), **limits)))


def write_manifest(path: str | os.PathLike[str], items: Iterable[DatasetItem]) -> Path:
    """Write items as a CSV manifest (``path,label,split``) that ``load_dataset`` reads back.

    Paths are written relative to the manifest's folder where they are inside it, else absolute
    (read such a manifest back with ``allow_outside=True``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.parent.resolve()
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        for item in items:
            file = item.path.resolve()
            shown = file.relative_to(folder).as_posix() if file.is_relative_to(folder) else file.as_posix()
            writer.writerow([shown, item.label, item.split or ""])
    return path


# -- reading the two layouts -------------------------------------------------------------
def _visible(entries: Iterable[Path]) -> list[Path]:
    return sorted(p for p in entries if not p.name.startswith("."))


def _read_folder(root: Path, skipped: list[tuple[Path, str]]) -> list[DatasetItem]:
    """Every image under each class folder, nested folders included (as torchvision's ImageFolder
    walks them); a file without an image suffix (`.jfif`, none) is used when it opens as an image.
    Everything else is put in `skipped` with the reason."""
    try:
        entries = sorted(root.iterdir())
    except OSError as exc:
        raise DatasetError(f"{root}: unreadable folder ({exc.strerror or exc})") from None
    classes = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
    skipped += [
        (p, "hidden" if p.name.startswith(".") else "not in a class folder") for p in entries if p not in classes
    ]
    if not classes:
        raise DatasetError(f"{root}: empty (an image folder needs one subfolder per class, e.g. {root}/cat/1.jpg)")
    items, seen = [], {}
    for folder in classes:
        found = []
        for file in _walk(folder, skipped):
            why = _not_an_image(file)
            if why is None and (same := seen.get(file.resolve())) is not None:
                why = f"the same file as {same}"
            if why is not None:
                skipped.append((file, why))
                continue
            seen[file.resolve()] = file
            found.append(DatasetItem(file, folder.name))
        if not found:
            raise DatasetError(f"{folder}: no images in this class folder ({', '.join(sorted(IMAGE_SUFFIXES))})")
        items += found
    return items


def _walk(folder: Path, skipped: list[tuple[Path, str]]) -> list[Path]:
    """The files under a folder, sorted by relative path; hidden ones (and hidden folders) skipped."""
    files = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=_unreadable_folder, followlinks=False):
        here = Path(dirpath)
        for name in [d for d in dirnames if d.startswith(".")]:
            skipped.append((here / name, "hidden"))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                skipped.append((here / name, "hidden"))
            else:
                files.append(here / name)
    return sorted(files, key=lambda p: p.relative_to(folder).parts)


def _unreadable_folder(exc: OSError) -> None:
    raise DatasetError(f"{exc.filename}: unreadable folder ({exc.strerror or exc})")


def _not_an_image(file: Path) -> str | None:
    """None when the file is used: an image suffix (checked later with the rest), or another name
    that opens as an image; else why not."""
    if file.suffix.lower() in IMAGE_SUFFIXES:
        return None
    try:
        _check_file(file)
    except DatasetError as exc:
        return str(exc).removeprefix(f"{file}: ")
    return None


def _manifest_rows(manifest: Path) -> list[tuple[str, dict[str, str]]]:
    """(where, row) per row; `where` names the manifest and the row's line."""
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{manifest}: unreadable ({exc})") from None
    rows: list[tuple[str, dict[str, str]]] = []
    if manifest.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        missing = [c for c in MANIFEST_COLUMNS[:2] if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{manifest}: no {' or '.join(missing)} column in the header ({reader.fieldnames})")
        for row in reader:
            rows.append((f"{manifest}, line {reader.line_num}", {k: v or "" for k, v in row.items() if k}))
    else:
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise DatasetError(f"{manifest}, line {n}: not JSON ({exc})") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{manifest}, line {n}: not a JSON object")
            rows.append((f"{manifest}, line {n}", {k: "" if v is None else str(v) for k, v in row.items()}))
    if not rows:
        raise DatasetError(f"{manifest}: empty (no rows)")
    return rows


def _read_manifest(manifest: Path, allow_outside: bool) -> list[DatasetItem]:
    folder = manifest.parent.resolve()
    items, first = [], {}  # resolved file -> (where, label, split) of the row that listed it first
    for where, row in _manifest_rows(manifest):
        path, label, split = (row.get(c, "").strip() for c in MANIFEST_COLUMNS)
        if not path or not label:
            raise DatasetError(f"{where}: needs a path and a label (got {row})")
        file = (folder / path).resolve()
        if not allow_outside and not file.is_relative_to(folder):
            raise DatasetError(
                f"{where}: {path} is outside the manifest's folder {folder} (allow_outside=True to accept it)"
            )
        if not file.exists():
            raise DatasetError(f"{where}: {file} does not exist")
        if file in first:  # a file twice would be trained twice, or land in two splits or labels
            other, was_label, was_split = first[file]
            kind = (
                f"conflicting labels {was_label!r} and {label!r}"
                if label != was_label
                else f"two splits {was_split!r} and {split!r}"
                if split != was_split
                else "a duplicate row"
            )
            raise DatasetError(f"{where}: {file} is listed again ({other.rpartition(', ')[2]}): {kind}")
        first[file] = (where, label, split)
        items.append(DatasetItem(file, label, split or None))
    return items


def _require_regular(path: Path) -> None:
    """Refuse what is not a regular file before opening it: opening a FIFO (or a device) would
    block until a writer appears, and a directory is no image.

    Raises:
        DatasetError: not a regular file; OSError from stat (a broken symlink, no permission).
    """
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a special file"
        raise DatasetError(f"{path}: unreadable (not a regular file: {kind})")


def _check_file(path: Path) -> None:
    """Readable, and starting like an image (the full decode comes with ``read_image``)."""
    from PIL import Image, UnidentifiedImageError

    try:
        _require_regular(path)
        with path.open("rb") as f:
            with Image.open(f) as image:
                image.size  # noqa: B018 - the header parsed
    except DatasetError:
        raise
    except UnidentifiedImageError:
        raise DatasetError(f"{path}: not an image (no format the decoder knows)") from None
    except OSError as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)) or exc.strerror:
            raise DatasetError(f"{path}: unreadable ({exc.strerror or exc})") from None
        raise DatasetError(f"{path}: not an image ({exc})") from None
    except (ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{path}: not an image ({exc})") from None
