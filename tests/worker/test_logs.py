"""The worker's stdout under RunPod's local API is JSON lines only, and no log line carries job content."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from conftest import digit

from fastbackend.local import HANDLER_MODULE, LocalApi, free_port, handler_env, stop_process

MARK = "ZX-echo-payload-81723"


@pytest.fixture(scope="module")
def served_logs(root, models_dir, tmp_path_factory):
    """A worker started as a user starts it (no --rp_log_level: the SDK's own default is DEBUG),
    given a predict, an echo and a refused job; returns (stdout, stderr, the image sent)."""
    folder = tmp_path_factory.mktemp("logs")
    port = free_port()
    env = handler_env(
        {"FASTBACKEND_BASE_MODEL": str(models_dir / "base"), "FASTBACKEND_ADAPTERS_DIR": str(models_dir / "adapters")}
    )
    env.pop("RUNPOD_LOG_LEVEL", None)
    env.pop("RUNPOD_DEBUG_LEVEL", None)
    image, _ = digit("digits", 3)
    args = [sys.executable, "-m", HANDLER_MODULE, "--rp_serve_api", "--rp_api_host", "127.0.0.1"]
    with open(folder / "out", "w") as out, open(folder / "err", "w") as err:
        process = subprocess.Popen(
            [*args, "--rp_api_port", str(port)], cwd=root, env=env, stdout=out, stderr=err, start_new_session=True
        )
        try:
            api = LocalApi(f"http://127.0.0.1:{port}")
            deadline = time.monotonic() + 180
            while not api.ready():
                assert process.poll() is None and time.monotonic() < deadline, (folder / "err").read_text()[-2000:]
                time.sleep(0.2)
            assert api.runsync({"input": {"images": image}})["status"] == "COMPLETED"
            assert api.runsync({"input": {"op": "echo", "payload": MARK}})["output"]["payload"] == MARK
            assert api.runsync({"input": {"images": image, MARK: 1}})["status"] == "FAILED"
        finally:
            stop_process(process)
    return (folder / "out").read_text(), (folder / "err").read_text(), image


def test_stdout_is_json_lines_only(served_logs):
    stdout, _, _ = served_logs
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, "the worker logged nothing"
    for line in lines:
        assert isinstance(json.loads(line), dict), line
    events = [json.loads(line).get("event") for line in lines]
    assert "setup.done" in events and events.count("job.done") == 3


def test_no_log_line_carries_job_input_or_output(served_logs):
    stdout, stderr, image = served_logs
    for stream in (stdout, stderr):
        assert MARK not in stream
        assert image[:40] not in stream and image[-40:] not in stream
