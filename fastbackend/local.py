"""RunPod's own local tooling, driven from Python: `--test_input` and `--rp_serve_api`.

Used by `fastbackend serve`/`invoke`, by `make run` and by the integration tests, so all of
them exercise the handler exactly as RunPod documents local testing.
"""

from __future__ import annotations

import ast
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastbackend.client import ApiClient, Target, open_url
from worker.environment import QUIET_ENV

HANDLER_MODULE = "exported.handler"
_RESULT_PREFIX = "Job result: "
_FAILED_MARK = " failed with error: "
RUNPOD_LOG_LINE_LIMIT = 4096  # runpod.serverless.modules.rp_logger.MAX_MESSAGE_LENGTH


def handler_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a local worker process: offline, no platform fitness checks."""
    env = dict(os.environ)
    env.update(
        {
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
            **QUIET_ENV,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def encode_image_file(path: Path) -> str:
    """Base64 of an image file's bytes (PNG or JPEG, sent as is)."""
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def build_payload(images: Sequence[Path], adapter: str | None = None, top_k: int = 1) -> dict[str, Any]:
    """A job body `{"input": {...}}` for a predict on image files."""
    encoded = [encode_image_file(p) for p in images]
    body: dict[str, Any] = {"images": encoded[0] if len(encoded) == 1 else encoded, "top_k": top_k}
    if adapter:
        body["adapter"] = adapter
    return {"input": body}


def stop_process(process: subprocess.Popen) -> None:
    """SIGINT (the SDK exits cleanly on it), then SIGTERM, then SIGKILL, to the process's whole
    session, so children it started (a kernel, a server) go with it. Start it with
    `start_new_session=True`."""
    for sig, grace in ((signal.SIGINT, 5.0), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class TestInputRun:
    returncode: int
    output: dict[str, Any] | None  # what the handler returned, as RunPod's run_job passed it on
    error: str | None
    log: str


def run_test_input(
    job: dict[str, Any] | None, root: Path, env: dict[str, str] | None = None, timeout: float = 180
) -> TestInputRun:
    """`python -m exported.handler --test_input '<job>'` (or test_input.json when job is None)."""
    args = [sys.executable, "-m", HANDLER_MODULE]
    if job is not None:
        args += ["--test_input", json.dumps(job)]
    done = subprocess.run(args, cwd=root, env=handler_env(env), capture_output=True, text=True, timeout=timeout)
    log = done.stdout + done.stderr
    result: dict[str, Any] = {}
    for line in log.splitlines():
        if _RESULT_PREFIX in line:  # RunPod prints the job result as a Python literal
            if "...TRUNCATED" in log:
                raise ValueError(
                    f"RunPod's logger cut the job result (it truncates log lines over "
                    f"{RUNPOD_LOG_LINE_LIMIT} characters); ask for a smaller result or use the local API"
                )
            result = ast.literal_eval(line.split(_RESULT_PREFIX, 1)[1])
        elif _FAILED_MARK in line:  # and a failed job's error string, then exits 1
            result = {"error": line.split(_FAILED_MARK, 1)[1]}
    return TestInputRun(done.returncode, result.get("output"), result.get("error"), log)


class LocalApi(ApiClient):
    """A client for RunPod's local API server (`--rp_serve_api`): the endpoint client
    (fastbackend/client.py) pointed at a local URL, plus a readiness probe."""

    def __init__(self, url: str, timeout: float = 120, pid: int | None = None) -> None:
        super().__init__(Target.local(url), timeout=timeout, poll_interval=0.1)
        self.pid = pid  # the server process, when we started it

    def ready(self) -> bool:
        try:
            with open_url(self.url + "/openapi.json", 2) as response:
                return response.status == 200
        except (OSError, ValueError):
            return False


@contextmanager
def serve_api(
    root: Path,
    port: int | None = None,
    env: dict[str, str] | None = None,
    startup_timeout: float = 180,
    log_file: Path | None = None,
    module: str = HANDLER_MODULE,
) -> Iterator[LocalApi]:
    """Start the handler (`module`) with `--rp_serve_api` on loopback, wait until it answers, stop it after.

    Raises:
        RuntimeError: the process exited or did not answer within `startup_timeout`.
    """
    port = port or free_port()
    args = [
        sys.executable,
        "-m",
        module,
        "--rp_serve_api",
        "--rp_api_host",
        "127.0.0.1",
        "--rp_api_port",
        str(port),
        "--rp_log_level",
        "WARN",
    ]
    sink = open(log_file, "w") if log_file else subprocess.DEVNULL
    process = subprocess.Popen(
        args, cwd=root, env=handler_env(env), stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
    )
    api = LocalApi(f"http://127.0.0.1:{port}", pid=process.pid)
    try:
        deadline = time.monotonic() + startup_timeout
        while not api.ready():
            if process.poll() is not None:
                raise RuntimeError(
                    f"local API exited with code {process.returncode} before answering"
                    + (f"; log: {log_file}" if log_file else "")
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"local API did not answer within {startup_timeout:.0f} s")
            time.sleep(0.1)
        yield api
    finally:
        stop_process(process)
        if log_file:
            sink.close()
