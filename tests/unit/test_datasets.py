"""worker.datasets: the two layouts, and one clear error per way a dataset can be broken.

Tiny PNGs written in tmp_path; no model.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from worker.datasets import DatasetError, DatasetItem, load_dataset, read_image, write_manifest


def _png(path, value=0, size=(6, 5), mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], len(mode))
    Image.fromarray(np.full(shape, value, dtype=np.uint8), mode=mode).save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "pets"
    for label, n in (("cat", 2), ("dog", 3)):
        for i in range(n):
            _png(root / label / f"{i}.png", value=10 * i)
    return root


# -- what works ---------------------------------------------------------------------------
def test_image_folder_one_class_per_subfolder_in_a_stable_order(folder):
    (folder / "notes.txt").write_text("top-level files are not classes")
    (folder / "dog" / ".hidden.png").write_bytes(b"skipped")
    data = load_dataset(folder)
    assert data.labels == ("cat", "dog")
    assert [(i.path.relative_to(folder).as_posix(), i.label) for i in data.items] == [
        ("cat/0.png", "cat"),
        ("cat/1.png", "cat"),
        ("dog/0.png", "dog"),
        ("dog/1.png", "dog"),
        ("dog/2.png", "dog"),
    ]
    assert data.targets.tolist() == [0, 0, 1, 1, 1] and data.splits == ()


def test_labels_follow_the_models_id2label_order(folder):
    data = load_dataset(folder, label_names=["dog", "bird", "cat"])
    assert data.labels == ("dog", "bird", "cat")
    assert data.targets.tolist() == [2, 2, 0, 0, 0]


def test_csv_manifest_relative_to_its_folder_with_splits(tmp_path):
    _png(tmp_path / "img" / "a.png")
    _png(tmp_path / "img" / "b.png", value=200)
    (tmp_path / "m.csv").write_text("path,label,split\nimg/a.png,zero,train\nimg/b.png,one,val\n")
    data = load_dataset(tmp_path / "m.csv")
    assert [i.path for i in data.items] == [tmp_path / "img" / "a.png", tmp_path / "img" / "b.png"]
    assert data.splits == ("train", "val")
    val = load_dataset(tmp_path / "m.csv", split="val")
    assert [i.label for i in val.items] == ["one"] and val.labels == ("one", "zero")


def test_jsonl_manifest_and_absolute_paths_inside_the_folder(tmp_path):
    a = _png(tmp_path / "a.png")
    _png(tmp_path / "b.png")
    rows = [{"path": str(a), "label": 0}, {"path": "b.png", "label": 1}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    data = load_dataset(tmp_path / "m.jsonl", label_names=["0", "1"])
    assert data.targets.tolist() == [0, 1] and data.items[0].split is None


def test_written_manifest_reads_back_the_same_items(folder, tmp_path):
    data = load_dataset(folder)
    items = [DatasetItem(i.path, i.label, "val" if n % 2 else "train") for n, i in enumerate(data.items)]
    inside = write_manifest(folder / "split.csv", items)
    assert load_dataset(inside).items == tuple(items)
    outside = write_manifest(tmp_path / "elsewhere" / "split.csv", items)
    assert load_dataset(outside, allow_outside=True, split="val").items == tuple(items[1::2])


def test_images_decode_as_the_worker_decodes_them(tmp_path):
    gray = _png(tmp_path / "g.png", value=7)
    rgba = _png(tmp_path / "c.png", value=9, mode="RGBA")
    # 8-bit RGB as serving decodes it: gray replicated, transparency composited on white.
    assert read_image(gray).shape == (5, 6, 3) and read_image(gray).dtype == np.uint8
    assert (read_image(gray) == 7).all()
    assert read_image(rgba).shape == (5, 6, 3)


# -- what is refused, each naming the file, folder or row ---------------------------------
def test_missing_source(tmp_path):
    with pytest.raises(DatasetError, match="nope: no such folder or manifest"):
        load_dataset(tmp_path / "nope")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty: empty \(an image folder needs one subfolder per class"):
        load_dataset(tmp_path / "empty")


def test_class_folder_without_images(folder):
    (folder / "bird").mkdir()
    (folder / "bird" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"pets/bird: no images in this class folder"):
        load_dataset(folder)


def test_one_class_only(tmp_path):
    _png(tmp_path / "only" / "cat" / "0.png")
    with pytest.raises(DatasetError, match=r"only: one class only \('cat'\)"):
        load_dataset(tmp_path / "only")


def test_corrupt_image(folder):
    (folder / "dog" / "bad.png").write_bytes(b"this is not a png at all")
    with pytest.raises(DatasetError, match=r"dog/bad.png: not an image"):
        load_dataset(folder)


def test_truncated_image_fails_at_decode_naming_the_file(folder):
    noise = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "dog" / "0.png")
    whole = (folder / "dog" / "0.png").read_bytes()
    (folder / "dog" / "0.png").write_bytes(whole[: len(whole) // 2])
    data = load_dataset(folder)  # the header is intact
    with pytest.raises(DatasetError, match=r"dog/0.png: corrupt or truncated PNG"):
        data.read_images()


def test_unreadable_file(folder):
    os.mkfifo(folder / "cat" / "pipe.png")  # a name that reads as an image, but cannot be read (a folder is walked)
    with pytest.raises(DatasetError, match=r"^\S+/cat/pipe.png: unreadable \(not a regular file: a FIFO\)$"):
        load_dataset(folder)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_file_without_read_permission(folder):
    (folder / "cat" / "0.png").chmod(0)
    with pytest.raises(DatasetError, match=r"cat/0.png: unreadable"):
        load_dataset(folder)


def test_broken_symlink(folder):
    (folder / "cat" / "link.png").symlink_to(folder / "gone.png")  # what root cannot read either
    with pytest.raises(DatasetError, match=r"^\S+/cat/link.png: unreadable \(No such file"):
        load_dataset(folder)


def test_fifo_is_refused_without_blocking(folder):
    os.mkfifo(folder / "cat" / "pipe.png")  # opening it would wait for a writer forever
    with pytest.raises(DatasetError, match=r"^\S+/cat/pipe.png: unreadable \(not a regular file: a FIFO\)$"):
        load_dataset(folder)


def test_manifest_row_with_a_missing_file(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("path,label\na.png,x\ngone.png,y\n")
    with pytest.raises(DatasetError, match=r"m.csv, line 3: .*gone.png does not exist"):
        load_dataset(tmp_path / "m.csv")


def test_manifest_without_a_label_column(tmp_path):
    (tmp_path / "m.csv").write_text("file,class\na.png,x\n")
    with pytest.raises(DatasetError, match=r"m.csv: no path or label column"):
        load_dataset(tmp_path / "m.csv")


def test_manifest_row_that_is_not_json(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"path": "a.png", "label": "x"}\n{oops\n')
    with pytest.raises(DatasetError, match=r"m.jsonl, line 2: not JSON"):
        load_dataset(tmp_path / "m.jsonl")


def test_label_unknown_to_the_model(folder):
    with pytest.raises(DatasetError, match=r"dog/0.png: label 'dog' is not one the model knows"):
        load_dataset(folder, label_names=["cat", "bird"])


@pytest.mark.parametrize("written", ["../outside.png", "{outside}"])
def test_path_escaping_the_manifest_folder(tmp_path, written):
    outside = _png(tmp_path / "outside.png")
    _png(tmp_path / "data" / "in.png")
    manifest = tmp_path / "data" / "m.csv"
    manifest.write_text(f"path,label\nin.png,a\n{written.format(outside=outside)},b\n")
    with pytest.raises(DatasetError, match=r"m.csv, line 3: .*outside.png is outside the manifest's folder"):
        load_dataset(manifest)
    assert len(load_dataset(manifest, allow_outside=True)) == 2


def test_symlink_out_of_the_manifest_folder(tmp_path):
    outside = _png(tmp_path / "secret.png")
    _png(tmp_path / "data" / "in.png")
    (tmp_path / "data" / "link.png").symlink_to(outside)
    (tmp_path / "data" / "m.csv").write_text("path,label\nin.png,a\nlink.png,b\n")
    with pytest.raises(DatasetError, match=r"line 3: link.png is outside"):
        load_dataset(tmp_path / "data" / "m.csv")


def test_split_with_no_items_names_the_splits_present(tmp_path):
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png")
    (tmp_path / "m.csv").write_text("path,label,split\na.png,x,train\nb.png,y,train\n")
    with pytest.raises(DatasetError, match=r"no items in split 'val' \(splits present: \['train'\]\)"):
        load_dataset(tmp_path / "m.csv", split="val")


def test_image_over_the_decode_limits(folder):
    _png(folder / "cat" / "big.png", size=(40, 30))
    data = load_dataset(folder)
    with pytest.raises(DatasetError, match=r"cat/big.png: 40x30 PNG is over the caps"):
        data.read_images(max_image_side=32)


# -- what a folder holds besides images, and manifests that list a file twice (issue 24.11)
def test_every_file_not_used_is_reported_and_valid_images_under_any_name_are_used(folder):
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(folder / "cat" / "photo.jfif", format="JPEG")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(folder / "cat" / "noext", format="PNG")
    (folder / "cat" / "nested" / "deeper").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(folder / "cat" / "nested" / "deeper" / "n.png")
    (folder / "cat" / "notes.txt").write_text("a note")
    (folder / "cat" / ".DS_Store").write_bytes(b"\0\0")
    (folder / "README.md").write_text("about the data")
    (folder / "dog" / "alias.png").symlink_to(folder / "cat" / "noext")
    data = load_dataset(folder)
    used = {item.path.relative_to(folder).as_posix() for item in data.items}
    assert {"cat/photo.jfif", "cat/noext", "cat/nested/deeper/n.png"} <= used
    skipped = {path.relative_to(folder).as_posix(): why for path, why in data.skipped}
    assert set(skipped) == {"cat/notes.txt", "cat/.DS_Store", "README.md", "dog/alias.png"}, skipped
    assert skipped["README.md"] == "not in a class folder" and skipped["cat/.DS_Store"] == "hidden"
    assert skipped["cat/notes.txt"].startswith("not an image") and "same file as" in skipped["dog/alias.png"]
    from worker.datasets import skipped_report

    assert "skipped 4 files" in skipped_report(data) and "notes.txt" in skipped_report(data)


@pytest.mark.parametrize(
    "rows, words",
    [
        ("cat/0.png,cat,train\ncat/0.png,cat,train", "a duplicate row"),
        ("cat/0.png,cat,train\ncat/0.png,dog,train", "conflicting labels 'cat' and 'dog'"),
        ("cat/0.png,cat,train\n./cat/../cat/0.png,cat,val", "two splits 'train' and 'val'"),
    ],
)
def test_a_file_listed_twice_in_a_manifest_is_refused_naming_both_rows(folder, rows, words):
    manifest = folder / "m.csv"
    manifest.write_text("path,label,split\ndog/0.png,dog,train\n" + rows + "\n")
    with pytest.raises(DatasetError, match=rf"m.csv, line 4: .*cat/0.png is listed again \(line 3\): {words}"):
        load_dataset(manifest)
