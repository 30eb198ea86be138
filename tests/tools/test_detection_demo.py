"""The detection demo (notebooks/detection/00_demo_models.ipynb, pipeline detection-demo), built and
served: `make test-full` only (it gives the base an hour of training, the adapter its notebook's 5 minutes).

The pipeline builds the base (RT-DETR from scratch on plain digit scenes) and the `shifted` LoRA
adapter into a temporary folder; the generated handler serves them under `--rp_serve_api`; the
held-out scenes of each domain are sent as PNG jobs (float boxes, threshold 0.01) and the answers
scored by pycocotools. The issue's bar: the base's mAP@.5 on plain scenes >= 0.5, on shifted scenes
under half of that, and the adapter's on shifted scenes >= 0.5.
"""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest

pytestmark = pytest.mark.full


def _score(api, dataset, adapter=None) -> dict:
    from worker.detection.evaluation import mean_average_precision

    answers = []
    for first in range(0, len(dataset.items), 8):
        images = [base64.b64encode(i.path.read_bytes()).decode("ascii") for i in dataset.items[first : first + 8]]
        job = {"images": images, "threshold": 0.01, "float_boxes": True, **({"adapter": adapter} if adapter else {})}
        answer = api.runsync({"input": job})
        assert answer["status"] == "COMPLETED", answer
        answers += answer["output"]["predictions"]
    return mean_average_precision(dataset, answers)


def test_demo_base_and_adapter_reach_the_bar_through_the_local_api(root, tmp_path) -> None:
    from fastbackend.local import handler_env, serve_api
    from fastbackend.training.detection_demo import demo_paths
    from worker.detection.datasets import load_coco

    paths = demo_paths(tmp_path / "detection")
    command = [sys.executable, "-m", "fastbackend.cli", "pipeline", "run", "detection-demo"]
    # The base's curve on this CPU reaches 0.28 in 28 minutes and rises ~0.01 an epoch (docs/tasks/
    # object-detection.md): the notebook's 10-minute default is not enough; an hour, 80 epochs at most.
    command += ["-p", f"output_dir={paths.root}", "-p", "threads=1", "-p", "base_minutes=60", "-p", "base_epochs=80"]
    built = subprocess.run(command, cwd=root, env=handler_env(), capture_output=True, text=True, timeout=6000)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    plain, shifted = load_coco(paths.data).split("val"), load_coco(paths.shifted_data).split("val")
    env = {"FASTBACKEND_BASE_MODEL": str(paths.base), "FASTBACKEND_ADAPTERS_DIR": str(paths.adapters)}
    with serve_api(root, env=env, log_file=tmp_path / "api.log") as api:
        table = {
            "base/plain": _score(api, plain)["map_50"],
            "base/shifted": _score(api, shifted)["map_50"],
            "adapter/shifted": _score(api, shifted, "shifted")["map_50"],
        }
    print(table)
    assert table["base/plain"] >= 0.5, table
    assert table["base/shifted"] < table["base/plain"] / 2, table
    assert table["adapter/shifted"] >= 0.5, table
