"""Progress in production mode: the generated handler, started as RunPod starts it against the
RunPod-shaped queue, posts IN_PROGRESS updates for a long job (URL images from a slow loopback
server) at a bounded rate, and none for a small job."""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import digit
from fixtures.runpod_queue import RunPodQueue

from fastbackend.local import handler_env, stop_process

# A second production-mode worker start: test_production.py covers that mode in make test.
pytestmark = pytest.mark.full

IMAGES = 24
DELAY_S = 0.15  # per image fetched: 24 images, 8 at a time, make a job of about half a second
INTERVAL_MS = 100


@pytest.fixture(scope="module")
def slow_site():
    png = base64.b64decode(digit("digits", 2)[0])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(DELAY_S)
            self.send_response(200)
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_long_job_reports_bounded_progress_and_a_small_one_none(root, models_dir, slow_site, tmp_path):
    env = {
        "FASTBACKEND_BASE_MODEL": str(models_dir / "base"),
        "FASTBACKEND_ADAPTERS_DIR": str(models_dir / "adapters"),
        "FASTBACKEND_URL_ALLOWLIST": "127.0.0.1",
        "FASTBACKEND_URL_ALLOW_HTTP": "true",
        "FASTBACKEND_URL_ALLOW_NETWORKS": "127.0.0.0/8",
        "FASTBACKEND_PROGRESS_MIN_IMAGES": "8",
        "FASTBACKEND_PROGRESS_INTERVAL_MS": str(INTERVAL_MS),
        "FASTBACKEND_LOG_LEVEL": "WARNING",
    }
    log = tmp_path / "worker.log"
    with RunPodQueue() as queue, open(log, "w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "exported.handler"],
            cwd=root,
            env=handler_env({**env, **queue.env}),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            urls = [{"url": f"{slow_site}/{i}.png"} for i in range(IMAGES)]
            long_job = queue.add({"images": urls})
            small_job = queue.add({"images": urls[:4]})
            assert queue.wait_done([long_job, small_job], 240), f"no answer; log: {log}"
            started = queue.taken[long_job]
        finally:
            stop_process(process)
    result = queue.results[long_job][-1].body
    assert result["output"]["status"] == "success" and len(result["output"]["predictions"]) == IMAGES
    updates = [post.body["output"] for post in queue.progress[long_job]]
    assert updates, f"no progress posted; log: {log}"
    assert all(u["total"] == IMAGES and 1 <= u["done"] <= IMAGES and u["stage"] in ("fetch", "decode") for u in updates)
    elapsed_s = queue.results[long_job][-1].at - started
    assert len(updates) <= elapsed_s / (INTERVAL_MS / 1000) + 2, "more updates than the interval allows"
    assert not queue.progress[small_job], "a job under FASTBACKEND_PROGRESS_MIN_IMAGES posts no progress"
    print(f"\n{len(updates)} progress updates over {elapsed_s:.2f} s: {updates}")
