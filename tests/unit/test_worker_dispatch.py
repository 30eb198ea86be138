"""The Worker over stand-in notebook functions: validate once, p95 once, no model needed."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from worker.config import WorkerConfig
from worker.runtime import Worker
from worker.telemetry import Metrics, percentile

from .stub_notebooks import LABELS, stub_functions, write_stub_adapter


def png_b64() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "white").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
def adapters_dir(tmp_path: Path) -> Path:
    for name in ("one", "two"):
        write_stub_adapter(tmp_path / name)
    return tmp_path


def set_up(adapters_dir: Path, **overrides) -> Worker:
    config = WorkerConfig(
        base_model="base", adapters_dir=str(adapters_dir), device="cpu", log_level="ERROR", **overrides
    )
    return Worker(stub_functions()).setup(config)


def count_validations(worker: Worker) -> list:
    calls: list = []
    validate = worker.host.validate

    def counted(name):
        calls.append(name)
        return validate(name)

    worker.host.validate = counted
    return calls


@pytest.mark.parametrize("concurrency", [1, 2], ids=["direct", "micro-batched"])
def test_a_predict_validates_its_adapter_once(adapters_dir, concurrency):
    worker = set_up(adapters_dir, concurrency=concurrency, adapter_cache_mb=1e-6)
    calls = count_validations(worker)
    for adapter in ("two", "one", None):  # "two" is not cached (cache of 1): the forward loads it
        answer = worker.handle({"id": "j", "input": {"images": png_b64(), "adapter": adapter}})
        assert answer["status"] == "success", answer
        assert answer["predictions"][0]["label"] == LABELS[1]
    assert calls == ["two", "one", None]


def test_an_unknown_adapter_is_refused_before_the_image_is_decoded(adapters_dir):
    worker = set_up(adapters_dir)
    answer = worker.handle({"id": "j", "input": {"images": "bm90IGFuIGltYWdl", "adapter": "three"}})
    assert answer["code"] == "UNKNOWN_ADAPTER" and "known: one, two" in answer["message"]


def test_an_unknown_preloaded_adapter_fails_setup(adapters_dir):
    with pytest.raises(Exception, match="unknown adapter 'three'"):
        set_up(adapters_dir, preload_adapters=("three",))


def test_before_setup_every_op_answers_model_not_ready():
    worker = Worker(stub_functions())
    assert worker.host is None and not worker.ready
    assert worker.handle({"id": "j", "input": {"op": "ping"}})["code"] == "MODEL_NOT_READY"


def test_percentile_is_nearest_rank_and_the_metrics_use_it():
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.95), percentile(values, 1)) == (51.0, 95.0, 100.0)
    assert percentile([], 0.95) == 0.0
    metrics = Metrics()
    for v in reversed(values):
        metrics.observe("predict", "success", v)
    assert metrics.snapshot()["latency"]["predict"]["p95_ms"] == percentile(values, 0.95)


def test_batching_stats_report_queue_wait_percentiles(adapters_dir):
    worker = set_up(adapters_dir, concurrency=2)
    worker.handle({"id": "j", "input": {"images": png_b64()}})
    stats = worker.handle({"id": "m", "input": {"op": "metrics"}})["batching"]
    waits = stats["queue_wait_ms"]
    assert stats["forwards"] >= 1 and waits["p50"] <= waits["p95"] <= waits["max"]
