"""`fastbackend batch` against RunPod's local API (FASTBACKEND_CONCURRENCY=4), in real processes:
killed with SIGKILL midway and run again, the results hold every image exactly once and the
rerun sends only the missing ones.

60 images in `make test`; 500 in `make test-full` (the `full` marker).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import png_bytes

from fastbackend.local import handler_env, serve_api


@pytest.fixture(scope="module", params=[60, pytest.param(500, marks=pytest.mark.full)], ids=lambda n: f"{n}-images")
def digits_folder(request, tmp_path_factory):
    """(folder, N): N digit images (the demo's 'digits' task), one subfolder per class."""
    from exported.demo_models import load_digit_task

    images, labels = load_digit_task("digits", "all")
    root = tmp_path_factory.mktemp("digits") / "data"
    for i in range(request.param):
        folder = root / str(labels[i])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:04d}.png").write_bytes(png_bytes(images[i]))
    return root, request.param


@pytest.fixture(scope="module")
def api(root, models_dir, tmp_path_factory):
    env = {
        "FASTBACKEND_BASE_MODEL": str(models_dir / "base"),
        "FASTBACKEND_ADAPTERS_DIR": str(models_dir / "adapters"),
        "FASTBACKEND_CONCURRENCY": "4",
        "FASTBACKEND_LOG_LEVEL": "ERROR",
    }
    with serve_api(root, env=env, log_file=tmp_path_factory.mktemp("api") / "api.log") as server:
        yield server


def batch_command(folder, n_images, api, out):
    batch_size = "2" if n_images <= 100 else "8"  # many small jobs: the kill lands midway
    return [
        sys.executable,
        "-m",
        "fastbackend.cli",
        "batch",
        str(folder),
        "--local",
        api.url,
        "--out",
        str(out),
        "--concurrency",
        "4",
        "--batch-size",
        batch_size,
        "--no-progress",
    ]


def complete_lines(path):
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def test_sigkill_midway_then_rerun_scores_every_image_exactly_once(root, digits_folder, api, tmp_path):
    folder, n_images = digits_folder
    out = tmp_path / "results.jsonl"
    command = batch_command(folder, n_images, api, out)
    first = subprocess.Popen(command, cwd=root, env=handler_env(), stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    while len(complete_lines(out)) < n_images // 4:
        assert first.poll() is None, f"the run ended before it could be killed: {first.stderr.read().decode()}"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait()
    first.stderr.close()
    before = complete_lines(out)
    assert n_images // 4 <= len(before) < n_images, "killed midway"

    rerun = subprocess.run(command, cwd=root, env=handler_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    rows = complete_lines(out)
    paths = [row["path"] for row in rows]
    assert len(rows) == n_images and len(set(paths)) == n_images, "0 lost, 0 duplicated"
    assert out.read_text().endswith("\n")
    assert rows[: len(before)] == before, "what the killed run wrote is kept as it was"
    assert f"skipped {len(before)} already in the results file" in rerun.stderr
    sent = int(re.search(r"sent (\d+) images", rerun.stderr).group(1))
    assert sent == n_images - len(before), "the rerun sends only the missing images"
    assert {row["path"] for row in rows[len(before) :]} == set(paths) - {row["path"] for row in before}
    assert all(row["code"] is None and row["attempt"] == 1 for row in rows)
    correct = sum(row["label"] == row["true_label"] for row in rows)
    assert correct / n_images >= 0.9, f"{correct}/{n_images}: the lines do not match their images"
    print(f"\nkilled after {len(before)} lines; rerun sent {sent}; {len(rows)} lines, {correct} labels right")
