"""The embedded zero-shot demo (notebooks/zero_shot/00_demo_models.ipynb): a tiny CLIP trained from
scratch on digits with captions, and its inverted-digits LoRA adapter, built with no download and
scored through RunPod's local API with the ten class names as candidate_labels (marked `full`: the
build trains for about a minute on 2 cores)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from exported.demo_models import load_digit_task
from fastbackend.training.zero_shot_demo import CLASS_NAMES

pytestmark = pytest.mark.full
NOTEBOOK = "notebooks/zero_shot/00_demo_models.ipynb"


@pytest.fixture(scope="module")
def demo(root, tmp_path_factory):
    from fastbackend.local import serve_api
    from fastbackend.notebooks import execute

    work = tmp_path_factory.mktemp("zero-shot-demo")
    built = execute(root / NOTEBOOK, work / "00.ipynb", {"output_dir": str(work / "models")}, cwd=root)
    env = {
        "FASTBACKEND_BASE_MODEL": str(work / "models" / "base"),
        "FASTBACKEND_ADAPTERS_DIR": str(work / "models" / "adapters"),
    }
    with serve_api(root, env=env, log_file=work / "api.log") as api:
        yield api, built.metrics, work / "models"


def png_b64(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def served_accuracy(api, task: str, adapter: str | None = None) -> float:
    images, labels = load_digit_task(task, "test")
    correct = 0
    for start in range(0, len(images), 40):
        job = {"images": [png_b64(i) for i in images[start : start + 40]], "candidate_labels": list(CLASS_NAMES)}
        answer = api.runsync({"input": {**job, **({"adapter": adapter} if adapter else {})}})
        assert answer["status"] == "COMPLETED", answer
        top = [ranked[0]["label"] for ranked in answer["output"]["predictions"]]
        correct += sum(t == CLASS_NAMES[y] for t, y in zip(top, labels[start : start + 40]))
    return correct / len(images)


def test_the_demo_through_the_local_api(demo):
    api, metrics, _ = demo
    table = {
        "digits/base": served_accuracy(api, "digits"),
        "inverted/base": served_accuracy(api, "inverted"),
        "inverted/adapter": served_accuracy(api, "inverted", "inverted"),
    }
    print(table)
    assert table["digits/base"] >= 0.8 and table["inverted/base"] < 0.4 and table["inverted/adapter"] >= 0.8, table
    # the notebook's own table (scored in-process) is the served one
    assert abs(table["digits/base"] - metrics["base_accuracy"]) < 0.01
    assert abs(table["inverted/adapter"] - metrics["inverted/adapter_accuracy"]) < 0.01


def test_the_train_pipeline_on_the_demo_base(root, demo, tmp_path):
    """zero-shot-train (03 then 02 on the validation split 03 wrote) on an image folder of inverted
    digits: the stamped adapter, and 02 scoring the very images 03 validated on."""
    import json

    from exported.demo_models import write_digit_folder
    from fastbackend.pipeline.runner import run_pipeline
    from fastbackend.training.zero_shot import TASK

    folder = write_digit_folder("inverted", "test", tmp_path / "data")
    run = run_pipeline(
        "zero-shot-train",
        pipelines_file=root / "pipelines.yaml",
        parameters={"dataset": str(folder), "base_model": str(demo[2] / "base"), "class_names": list(CLASS_NAMES)},
        runs_dir=tmp_path / "runs",
        progress=False,
    )
    assert run.ok, [r.failure.describe() for r in run.results if r.failure]
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    print(json.dumps(metrics, sort_keys=True))
    assert metrics[f"{folder.name}/accuracy"] == metrics["val_accuracy"]  # 02 scored 03's validation split
    assert metrics[f"{folder.name}/accuracy"] > metrics["base/accuracy"] + 0.2
    meta = json.loads((run.run_dir / "adapters" / folder.name / "fastbackend.json").read_text())
    assert meta["task"] == TASK and meta["base_fingerprint"] and meta["class_names"] == list(CLASS_NAMES)
