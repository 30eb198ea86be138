"""`fastbackend pipeline run train` on a user's image folder, and the adapter served as it is.

Marked `full` (`make test-full`): the inverted digits written as an image folder, the train
pipeline (03 then 02 on the validation split), then the adapter folder it wrote served by RunPod's
local API, scored on the validation images of the split manifest. The training notebook stopped,
before any training step, by each kind of broken dataset: in `make test` one case (a label the
model does not know: only a model shows it), the rest in `make test-full`; every kind is also
checked model-free in tests/unit/test_datasets.py.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from exported.demo_models import write_digit_folder
from fastbackend.local import build_payload, serve_api
from fastbackend.pipeline.runner import run_pipeline
from worker.datasets import load_dataset


def _served_accuracy(api, items, adapter):
    correct = 0
    for start in range(0, len(items), 64):
        chunk = items[start : start + 64]
        answer = api.runsync(build_payload([i.path for i in chunk], adapter=adapter))
        assert answer["status"] == "COMPLETED", answer
        predictions = answer["output"]["predictions"]
        correct += sum(p["label"] == i.label for p, i in zip(predictions, chunk))
    return correct / len(items)


@pytest.mark.full
def test_train_pipeline_on_an_image_folder_then_served_by_the_local_api(root, models_dir, tmp_path):
    folder = write_digit_folder("inverted", "all", tmp_path / "data")
    started = time.perf_counter()
    run = run_pipeline(
        "train",
        pipelines_file=root / "pipelines.yaml",
        parameters={"dataset": str(folder), "base_model": str(models_dir / "base")},
        runs_dir=tmp_path / "runs",
        progress=False,
    )
    seconds = time.perf_counter() - started
    assert run.ok, [r.failure.describe() for r in run.results if r.failure]
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    name = folder.name
    print(f"train pipeline: {seconds:.1f} s; metrics {json.dumps(metrics, sort_keys=True)}")
    # 02 scores the split 03 trained with: the same images, decoded and preprocessed the same way.
    assert metrics[f"{name}/adapter_accuracy"] == metrics["val_accuracy"]
    assert metrics[f"{name}/images"] == metrics["val_images"]

    adapters = run.run_dir / "adapters"
    meta = json.loads((adapters / name / "fastbackend.json").read_text())
    assert meta["task"] == name and meta["base_fingerprint"] and meta["split_manifest"]
    val = load_dataset(meta["split_manifest"], split="val", allow_outside=True).items
    env = {"FASTBACKEND_BASE_MODEL": str(models_dir / "base"), "FASTBACKEND_ADAPTERS_DIR": str(adapters)}
    with serve_api(root, env=env, log_file=tmp_path / "api.log") as api:
        base, adapter = _served_accuracy(api, val, None), _served_accuracy(api, val, name)
    print(f"local API on {len(val)} validation images: base {base:.3f}, adapter {adapter:.3f}")
    assert base < 0.20
    assert adapter >= 0.90


@pytest.mark.parametrize(
    "kind, expected",
    [
        pytest.param("empty", r"ds: empty \(an image folder needs one subfolder per class", marks=pytest.mark.full),
        pytest.param("one_class", r"ds: one class only \('7'\)", marks=pytest.mark.full),
        pytest.param("corrupt", r"ds/3/bad.png: not an image", marks=pytest.mark.full),
        # A FIFO: opening it would block; chmod 000 is no test here, root (the tests' user) reads it.
        pytest.param("unreadable", r"ds/3/pipe.png: unreadable \(not a regular file: a FIFO\)", marks=pytest.mark.full),
        pytest.param("missing_row", r"m.csv, line 3: .*gone.png does not exist", marks=pytest.mark.full),
        ("unknown_label", r"label 'cat' is not one the model knows"),
        pytest.param("escaping", r"m.csv, line 3: ../x.png is outside the manifest's folder", marks=pytest.mark.full),
    ],
)
def test_broken_dataset_stops_the_training_notebook_before_training(root, models_dir, tmp_path, kind, expected):
    import re

    import numpy as np
    from PIL import Image

    from fastbackend.notebooks import execute

    def png(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(path)

    ds = tmp_path / "ds"
    if kind == "empty":
        ds.mkdir()
    elif kind == "one_class":
        png(ds / "7" / "a.png")
    else:
        for label in ("3", "7"):
            png(ds / label / "a.png")
        if kind == "corrupt":
            (ds / "3" / "bad.png").write_bytes(b"not a png")
        elif kind == "unreadable":
            os.mkfifo(ds / "3" / "pipe.png")
        elif kind == "unknown_label":
            png(ds / "cat" / "a.png")
        elif kind in ("missing_row", "escaping"):
            png(tmp_path / "x.png")
            row = "gone.png,7" if kind == "missing_row" else "../x.png,7"
            (ds / "m.csv").write_text(f"path,label\n3/a.png,3\n{row}\n")
            ds = ds / "m.csv"
    out = tmp_path / "out"
    params = {"dataset": str(ds), "base_model": str(models_dir / "base"), "output_dir": str(out), "epochs": 1}
    with pytest.raises(Exception) as failed:
        execute(root / "notebooks" / "03_train_adapter.ipynb", tmp_path / "03.ipynb", params, cwd=root)
    assert "DatasetError" in str(failed.value) and re.search(expected, str(failed.value)), str(failed.value)[-800:]
    assert not (out / "checkpoints").exists(), "no training step ran"
