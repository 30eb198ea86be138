"""`fastbackend batch` on an object detector served by RunPod's local API, scored by pycocotools.

A tiny DETR (tests/fixtures/detection.py) serves; the dataset is a COCO JSON file whose images are
scikit-learn's photos (one EXIF-rotated) and whose ground truth is the in-process Detector's own
detections at the pipeline's threshold, under image ids and category ids that are neither 1..N
nor the model's label indices. `fastbackend batch DATASET.json --coco-results r.json` writes one
JSON line per image with its detections and the COCO results file; pycocotools' COCOeval of that
file against the JSON gives mAP 1.0 only if every image id, category id, box (x, y, w, h on the
upright photo) and the threshold went through right.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

from fixtures.detection import build
from fixtures.images import encode, exif_rotated


def _dataset(tmp_path, detector) -> tuple:
    from PIL import Image
    from sklearn.datasets import load_sample_images

    china, flower = (Image.fromarray(a).resize((320, 240)) for a in load_sample_images().images)
    folder = tmp_path / "data"
    (folder / "images").mkdir(parents=True)
    files = {
        "china.jpg": encode(china, "JPEG", quality=95),
        "flower.jpg": encode(flower, "JPEG", quality=95),
        "china-turned.jpg": exif_rotated(china, "JPEG", 6),
    }
    category = {name: 7 + 3 * index for index, name in enumerate(sorted(detector.id2label.values()))}
    coco = {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for n, i in category.items()]}
    for image_id, (name, data) in zip((101, 57, 9), files.items()):
        (folder / "images" / name).write_bytes(data)
        upright = Image.open(io.BytesIO(data))
        from PIL import ImageOps

        upright = ImageOps.exif_transpose(upright).convert("RGB")
        coco["images"].append({"id": image_id, "file_name": name, "width": upright.width, "height": upright.height})
        for d in detector.detect([upright], threshold=0.5, float_boxes=True)[0]:
            b = d["box"]
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": category[d["label"]],
                    "bbox": [b["xmin"], b["ymin"], b["xmax"] - b["xmin"], b["ymax"] - b["ymin"]],
                    "area": (b["xmax"] - b["xmin"]) * (b["ymax"] - b["ymin"]),
                    "iscrowd": 0,
                }
            )
    path = folder / "val.json"
    path.write_text(json.dumps(coco))
    return path, coco


def test_batch_writes_detections_and_coco_results_that_pycocotools_scores(root, tmp_path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from fastbackend.local import handler_env, serve_api
    from worker.detection.detector import Detector

    model_dir = build("detr", tmp_path / "detr")
    dataset, coco = _dataset(tmp_path, Detector.load(model_dir))
    assert len(coco["annotations"]) >= 3, "too few detections above 0.5: the score would say little"
    env = {"FASTBACKEND_BASE_MODEL": str(model_dir), "FASTBACKEND_ADAPTERS_DIR": str(tmp_path / "no-adapters")}
    out, results = tmp_path / "r.jsonl", tmp_path / "results.json"
    with serve_api(root, env=env, log_file=tmp_path / "api.log") as api:
        command = [sys.executable, "-m", "fastbackend.cli", "batch", str(dataset), "--local", api.url]
        command += ["--out", str(out), "--coco-results", str(results), "--batch-size", "2", "--no-progress"]
        done = subprocess.run(command, cwd=root, env=handler_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(row["path"] for row in lines) == ["images/china-turned.jpg", "images/china.jpg", "images/flower.jpg"]
    assert all(row["code"] is None and isinstance(row["detections"], list) for row in lines)
    assert sum(len(row["detections"]) for row in lines) == len(coco["annotations"])
    assert f"wrote {len(coco['annotations'])} detections of 3 images" in done.stderr

    truth = COCO(str(dataset))
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(truth, truth.loadRes(str(results)), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert evaluation.stats[0] > 0.99 and evaluation.stats[1] > 0.99, evaluation.stats


def test_coco_results_need_a_coco_dataset_and_the_models_labels(tmp_path) -> None:
    from fastbackend.batch.coco import write_coco_results

    folder = tmp_path / "plain"
    (folder / "cat").mkdir(parents=True)
    command = [sys.executable, "-m", "fastbackend.cli", "batch", str(folder), "--local", "http://127.0.0.1:9"]
    done = subprocess.run(
        [*command, "--out", str(tmp_path / "r.jsonl"), "--coco-results", str(tmp_path / "c.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--coco-results needs a COCO JSON dataset" in done.stderr, done.stderr
    box = dict.fromkeys(("xmin", "ymin", "xmax", "ymax"), 1)
    line = {"path": "a.jpg", "detections": [{"label": "dog", "score": 0.9, "box": box}]}
    (tmp_path / "r.jsonl").write_text(json.dumps(line) + "\n")
    try:
        write_coco_results(tmp_path / "r.jsonl", tmp_path / "c.json", {"a.jpg": 1}, {"cat": 1})
    except ValueError as exc:
        assert "'dog' is not a dataset category" in str(exc)
    else:
        raise AssertionError("a label the dataset does not have was written")
