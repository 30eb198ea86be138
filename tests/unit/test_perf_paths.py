"""The performance paths, model-free: parallel decode keeps order and errors, the background
import, the startup breakdown, and the GPU settings' validation."""

from __future__ import annotations

import base64
import io
import os
import threading
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from worker import acceleration
from worker.config import ConfigError, WorkerConfig
from worker.runtime import Worker
from worker.startup import BackgroundImport, pause_gc, process_age_ms
from worker.telemetry import rss_mb

from .stub_notebooks import stub_functions

BIG = (1024, 512)  # 8 of them are over PARALLEL_DECODE_MIN_PIXELS: decoded on the pool
THREADS_SEEN: list[str] = []  # the threads the stand-in preprocessing ran on


def png_b64(gray: int, size: tuple[int, int] = (5, 3)) -> str:
    buffer = io.BytesIO()
    Image.new("L", size, gray).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def gray_levels_worker(tmp_path: Path, decode_threads: int, sdk: BackgroundImport | None = None) -> Worker:
    """A worker whose stand-in preprocessing keeps each image's gray level, so order is visible."""
    functions = replace(
        stub_functions(),
        to_pixel_values=lambda images, transform, config: (
            THREADS_SEEN.append(threading.current_thread().name),
            np.array([np.full((1, 2, 2), float(np.asarray(i).mean()), np.float32) for i in images]).reshape(
                len(images), 1, 2, 2
            ),
        )[1],
        read_preprocess_config=lambda base: SimpleNamespace(num_channels=1, height=2, width=2),
    )
    config = WorkerConfig(
        base_model="base", adapters_dir=str(tmp_path), device="cpu", log_level="ERROR", decode_threads=decode_threads
    )
    return Worker(functions).setup_or_exit(sdk, config) if sdk else Worker(functions).setup(config)


@pytest.mark.parametrize("threads", [1, 4], ids=["inline", "pool"])
def test_a_jobs_images_come_back_in_order_whatever_the_threads(tmp_path, threads):
    worker = gray_levels_worker(tmp_path, threads)
    assert (worker.image_pool is None) == (threads == 1)
    levels = [10, 200, 30, 90, 5, 250, 7, 64]
    images = [png_b64(g, BIG) for g in levels]
    answer = worker.handle({"id": "j", "input": {"op": "preprocess", "images": images, "return_pixels": True}})
    assert answer["status"] == "success", answer
    assert [round(row[0][0][0]) for row in answer["pixels"]] == levels


def test_thumbnails_decode_inline_and_photos_on_the_pool(tmp_path):
    """Issue 24 item 13: the thread hops cost a job of small images more than a second core gives."""
    from worker.imageops import PARALLEL_DECODE_MIN_PIXELS

    worker = gray_levels_worker(tmp_path, 4)
    for size, on_pool in (((8, 8), False), (BIG, True)):
        THREADS_SEEN.clear()
        answer = worker.handle({"id": "j", "input": {"op": "preprocess", "images": [png_b64(9, size)] * 8}})
        assert answer["status"] == "success", answer
        assert all(name.startswith("fastbackend-image") is on_pool for name in THREADS_SEEN), (size, THREADS_SEEN)
    assert 8 * 8 * 8 < PARALLEL_DECODE_MIN_PIXELS <= 8 * BIG[0] * BIG[1]


def test_a_bad_image_among_parallel_ones_names_its_index(tmp_path):
    worker = gray_levels_worker(tmp_path, 4)
    images = [png_b64(1, BIG), png_b64(2, BIG), base64.b64encode(b"not an image").decode(), png_b64(3, BIG)]
    answer = worker.handle({"id": "j", "input": {"images": images}})
    assert answer["code"] == "IMAGE_DECODE_FAILED" and answer["field"] == "images[2]", answer


def test_setup_reports_the_cold_start_from_process_start(tmp_path):
    worker = gray_levels_worker(tmp_path, 1)
    timings = worker.startup_ms
    assert 0 < timings["process_to_setup_ms"] <= timings["process_to_ready_ms"]
    assert process_age_ms() >= timings["process_to_ready_ms"]


def test_setup_or_exit_waits_for_the_sdk_and_dates_the_hand_over(tmp_path, monkeypatch):
    from worker import runtime

    routed = []
    monkeypatch.setattr(runtime, "route_sdk_logs", routed.append)  # the real one rewires this process's stdout
    timings = gray_levels_worker(tmp_path, 1, sdk=BackgroundImport("json")).startup_ms
    assert {"json_import_ms", "json_wait_ms"} <= set(timings) and routed == ["ERROR"]
    assert timings["process_to_ready_ms"] <= timings["process_to_start_ms"] <= process_age_ms()


def test_collection_paused_for_setup_resumes_with_the_survivors_frozen(tmp_path, monkeypatch):
    import gc

    from worker import runtime

    monkeypatch.setattr(runtime, "route_sdk_logs", lambda level: None)
    pause_gc()
    try:
        timings = gray_levels_worker(tmp_path, 1, sdk=BackgroundImport("json")).startup_ms
        assert gc.isenabled() and gc.get_freeze_count() > 0 and timings["gc_settle_ms"] >= 0
    finally:
        gc.unfreeze()
        gc.enable()


def test_background_import_hands_back_its_timings_and_its_failure():
    assert set(BackgroundImport("json").wait()) == {"json_import_ms", "json_wait_ms"}
    with pytest.raises(ModuleNotFoundError):
        BackgroundImport("no_such_module_fastbackend").wait()


@pytest.mark.parametrize(
    "field, value", [("autocast", "fp8"), ("channels_last", "yes"), ("decode_threads", -1), ("fast_decode", "yes")]
)
def test_gpu_settings_refuse_values_they_do_not_know(field, value):
    with pytest.raises(ConfigError, match=field):
        WorkerConfig(**{field: value})


def test_fast_decode_setting_is_refused_in_one_line_naming_it():
    with pytest.raises(ConfigError) as caught:
        WorkerConfig.from_env({"FASTBACKEND_FAST_DECODE": "fast"})
    assert "fast_decode must be off or on, got 'fast'" in str(caught.value) and "\n" not in str(caught.value)


def test_gpu_settings_off_on_cpu_leave_the_forward_alone():
    assert acceleration.wants_channels_last("auto", model=None, device="cpu") is False
    assert acceleration.wants_channels_last("off", model=None, device="cuda") is False
    with acceleration.precision("off", "cpu")():
        pass


def test_rss_is_read_fresh_from_the_kept_statm_and_a_forked_child_reads_its_own():
    before = rss_mb()
    block = np.ones(64 * 2**20, dtype=np.uint8)  # 64 MiB, touched
    assert rss_mb() >= before + 48
    del block
    read, write = os.pipe()
    if (pid := os.fork()) == 0:  # were the parent's fd read here, the child's allocation would not show
        start = rss_mb()
        held = np.ones(96 * 2**20, dtype=np.uint8)
        os.write(write, str(rss_mb() - start if held.any() else 0).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    assert float(os.read(read, 64)) >= 80


def test_a_jobs_images_are_not_all_held_open_with_their_png_text(tmp_path):
    """Pillow keeps an open PNG's text chunks (here 24 MB per image): only the images being
    decoded may be open at once, never all of a job's."""
    import tracemalloc

    from PIL.PngImagePlugin import PngInfo

    text = PngInfo()
    for i in range(24):
        text.add_text(f"k{i}", "a" * 1_000_000, zip=True)  # 1 MB each, ~1 KB compressed
    buffer = io.BytesIO()
    Image.new("L", (5, 3), 7).save(buffer, format="PNG", pnginfo=text)
    image = base64.b64encode(buffer.getvalue()).decode()
    worker = gray_levels_worker(tmp_path, 2)
    tracemalloc.start()
    try:
        answer = worker.handle({"id": "j", "input": {"op": "preprocess", "images": [image] * 8}})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert answer["status"] == "success", answer
    assert peak < 4 * 24 * 2**20, f"{peak / 2**20:.0f} MB traced at the peak"  # all 8 held: ~190 MB
