"""The job protocol through the real handler: each op, adapters, cache, merged path, metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import digit


def predict(worker, images, **extra):
    answer = worker.handle({"id": "p", "input": {"images": images, **extra}})
    assert answer["status"] == "success", answer
    return answer


def test_predict_one_image_as_a_string(worker):
    image, label = digit("digits", 1)
    answer = predict(worker, image, top_k=3)
    (prediction,) = answer["predictions"]
    assert prediction["label"] == str(label) and 0.5 < prediction["score"] <= 1.0
    assert [p["index"] for p in prediction["top_k"]][0] == label and len(prediction["top_k"]) == 3
    assert answer["adapter"] is None
    assert set(answer["timings"]) == {"decode_ms", "preprocess_ms", "adapter_ms", "forward_ms", "total_ms"}


def test_predict_a_batch_keeps_order(worker):
    pairs = [digit("digits", i) for i in range(12)]
    answer = predict(worker, [p[0] for p in pairs])
    got = [p["label"] for p in answer["predictions"]]
    assert sum(g == str(label) for g, (_, label) in zip(got, pairs)) >= 11


@pytest.mark.parametrize("task", ["inverted", "rot90"])
def test_adapter_recovers_its_task_where_the_base_fails(worker, task):
    pairs = [digit(task, i) for i in range(40)]
    images, labels = [p[0] for p in pairs], [str(p[1]) for p in pairs]
    with_adapter = [p["label"] for p in predict(worker, images, adapter=task)["predictions"]]
    base = [p["label"] for p in predict(worker, images)["predictions"]]
    assert np.mean(np.array(with_adapter) == labels) >= 0.85
    assert np.mean(np.array(base) == labels) <= 0.40


def test_rgb_and_jpeg_inputs_are_accepted(worker):
    import base64
    import io

    from PIL import Image

    from exported.demo_models import load_digit_task

    images, labels = load_digit_task("digits", "test")
    rgb = np.repeat(images[2][:, :, None], 3, axis=2)
    buffer = io.BytesIO()
    Image.fromarray(rgb).resize((64, 64)).save(buffer, format="JPEG", quality=95)
    jpeg = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
    assert predict(worker, jpeg)["predictions"][0]["label"] == str(labels[2])


def test_preprocess_op_matches_the_notebook_preprocessing(worker, models_dir):
    from exported.demo_models import load_digit_task
    from exported.preprocess import build_eval_transform, read_preprocess_config, to_pixel_values

    image, _ = digit("digits", 3)
    answer = worker.handle({"id": "x", "input": {"op": "preprocess", "images": [image], "return_pixels": True}})
    config = read_preprocess_config(models_dir / "base")
    expected = to_pixel_values(load_digit_task("digits", "test")[0][3:4], build_eval_transform(config), config)
    assert answer["shape"] == [1, 1, 16, 16] and answer["dtype"] == "float32"
    assert np.array_equal(np.array(answer["pixels"], dtype=np.float32), expected)


def test_adapters_op_lists_the_registry(worker):
    answer = worker.handle({"id": "a", "input": {"op": "adapters"}})
    by_name = {a["name"]: a for a in answer["adapters"]}
    assert set(by_name) == {"inverted", "rot90"}
    assert by_name["inverted"]["task"] == "inverted" and by_name["inverted"]["description"]


def test_health_reports_startup_by_stage_and_limits(worker):
    answer = worker.handle({"id": "h", "input": {"op": "health"}})
    assert answer["ready"] is True
    stages = {"config_ms", "load_base_ms", "preload_adapters_ms", "warmup_ms", "total_ms"}
    # and the cold start seen from the process: spawn to setup start, spawn to ready
    assert set(answer["startup_ms"]) == stages | {"process_to_setup_ms", "process_to_ready_ms"}
    assert answer["limits"]["max_payload_bytes"] == 10_000_000
    cache = answer["adapter_cache"]
    assert cache["bytes"] < cache["budget_bytes"] <= 256 * 2**20, "tiny adapters: 256 MB, or a tenth of free memory"
    assert set(cache["loaded"]) == {"inverted", "rot90"} and cache["bytes"] > 0
    assert answer["adapter_mixing"]["enabled"] and [m["mixed"] for m in answer["adapter_mixing"]["layouts"]] == [True]


def test_ping_and_echo(worker):
    assert worker.handle({"id": "1", "input": {"op": "ping"}})["pong"] is True
    payload = {"nested": [1, 2.5, "ünïcode", None, True]}
    assert worker.handle({"id": "2", "input": {"op": "echo", "payload": payload}})["payload"] == payload


def test_metrics_counters_match_the_jobs_sent(make_worker):
    fresh = make_worker(warmup=False)
    image, _ = digit("digits", 0)
    for _ in range(3):
        fresh.handle({"id": "ok", "input": {"images": image}})
    fresh.handle({"id": "bad", "input": {"images": image, "adapter": "nope"}})
    fresh.handle({"id": "bad", "input": {"op": "nope"}})
    fresh.handle({"id": "p", "input": {"op": "ping"}})
    metrics = fresh.handle({"id": "m", "input": {"op": "metrics"}})
    assert metrics["jobs"] == {"predict": {"success": 3, "error": 1}, "invalid": {"error": 1}, "ping": {"success": 1}}
    assert metrics["jobs_total"] == 6
    assert metrics["errors"] == {"UNKNOWN_ADAPTER": 1, "UNKNOWN_OP": 1}
    assert metrics["latency"]["predict"]["count"] == 4
    assert metrics["latency"]["predict"]["p50_ms"] <= metrics["latency"]["predict"]["p99_ms"]
    assert metrics["memory"]["rss_mb"] > 0
    json.dumps(metrics, allow_nan=False)


def test_lru_cache_loads_on_demand_and_evicts_by_bytes(make_worker, models_dir):
    size = (models_dir / "adapters" / "inverted" / "adapter_model.safetensors").stat().st_size
    one = make_worker(adapter_cache_mb=1.5 * size / 2**20, preload_adapters=())  # room for one
    for task in ["inverted", "rot90", "inverted", "inverted"]:
        image, label = digit(task, 5)
        assert predict(one, image, adapter=task)["predictions"][0]["label"] == str(label)
    cache = one.handle({"id": "m", "input": {"op": "metrics"}})["adapter_cache"]
    assert cache["loaded"] == ["inverted"] and cache["bytes"] == size <= cache["budget_bytes"]
    assert (cache["loads"], cache["hits"], cache["evictions"]) == (3, 1, 2)


def test_merged_fast_path_agrees_with_unmerged(make_worker, worker):
    merged = make_worker(merge_adapter="inverted")
    images = [digit("inverted", i)[0] for i in range(16)]
    fast = predict(merged, images, adapter="inverted", return_logits=True)["predictions"]
    slow = predict(worker, images, adapter="inverted", return_logits=True)["predictions"]
    delta = np.abs(np.array([p["logits"] for p in fast]) - np.array([p["logits"] for p in slow])).max()
    assert delta < 1e-4
    refused = merged.handle({"id": "b", "input": {"images": images[0]}})
    assert refused["code"] == "UNKNOWN_ADAPTER" and "merged" in refused["message"]
