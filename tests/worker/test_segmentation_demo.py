"""The embedded segmentation demo, built by its pipeline and served through RunPod's local API.

`fastbackend pipeline run segmentation-demo` builds the SegFormer base on digit scenes and the LoRA
adapter for inverted scenes (notebooks/segmentation/00_demo_models.ipynb). Served as the worker
serves any segmenter, on held-out scenes (held-out digits, a seed of their own), the answers'
class maps (compact form) score: the base mIoU >= 0.6 on plain scenes, under half of that on
inverted ones, and the adapter >= 0.6 on inverted ones; the served scores equal the notebook's.
Minutes of training: `make test-full` only.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

SCENES = 100


def _png_b64(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _served_scores(api, pairs, adapter):
    from fastbackend.training.segmentation_eval import segmentation_scores
    from worker.segmentation.scenes import SCENE_LABELS

    maps = []
    for start in range(0, len(pairs), 25):
        job = {"images": [_png_b64(i) for i in pairs.images[start : start + 25]], "format": "compact"}
        answer = api.runsync({"input": {**job, **({"adapter": adapter} if adapter else {})}})
        assert answer["status"] == "COMPLETED", answer
        for entry in answer["output"]["predictions"]:
            maps.append(np.array(Image.open(io.BytesIO(base64.b64decode(entry["class_map"])))))
    return segmentation_scores(maps, pairs.masks, SCENE_LABELS)["mean_iou"]


@pytest.mark.full
def test_demo_base_and_adapter_through_local_api(root, tmp_path):
    from fastbackend.local import serve_api
    from fastbackend.training.segmentation_data import demo_scenes

    command = [sys.executable, "-m", "fastbackend.cli", "pipeline", "run", "segmentation-demo"]
    done = subprocess.run([*command, "--runs-dir", str(tmp_path), "--no-progress"], cwd=root, capture_output=True,
                          text=True, timeout=1800)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    recorded = json.loads((run / "metrics.json").read_text())
    recorded = recorded.get("metrics", recorded)
    models = run / "models"
    plain = demo_scenes("test", SCENES, seed=2)
    inverted = demo_scenes("test", SCENES, seed=2, shifted=True)
    env = {"FASTBACKEND_BASE_MODEL": str(models / "base"), "FASTBACKEND_ADAPTERS_DIR": str(models / "adapters")}
    with serve_api(root, env=env, log_file=tmp_path / "api.log") as api:
        base_plain = _served_scores(api, plain, None)
        base_inverted = _served_scores(api, inverted, None)
        adapter_inverted = _served_scores(api, inverted, "inverted")
    print(f"served mIoU: base plain {base_plain:.3f}, base inverted {base_inverted:.3f}, "
          f"adapter inverted {adapter_inverted:.3f}; recorded {recorded}")  # fmt: skip
    assert base_plain >= 0.6 and base_inverted < base_plain / 2 and adapter_inverted >= 0.6
