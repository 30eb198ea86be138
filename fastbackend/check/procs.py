"""Processes and HTTP for the dynamic checks: how the handler is started, stopped and spoken to.

Every process gets its own session (so its children die with it), a time limit, and an
environment with RunPod's platform variables removed: a check must never join a real endpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastbackend.check.source import import_root, module_name
from fastbackend.local import free_port, stop_process

# Variables that make the SDK talk to the real platform (job queue, pings, realtime).
_PLATFORM_VARS = (
    "RUNPOD_WEBHOOK_GET_JOB",
    "RUNPOD_WEBHOOK_POST_OUTPUT",
    "RUNPOD_WEBHOOK_POST_STREAM",
    "RUNPOD_WEBHOOK_PING",
    "RUNPOD_AI_API_KEY",
    "RUNPOD_POD_ID",
    "RUNPOD_REALTIME_PORT",
    "RUNPOD_ENDPOINT_ID",
    "RUNPOD_POD_HOSTNAME",
)


@dataclass(frozen=True)
class Target:
    """How to run the handler module: the command prefix, its folder and its environment."""

    argv: tuple[str, ...]
    cwd: Path
    env: tuple[tuple[str, str], ...]

    @classmethod
    def for_handler(cls, path: Path, python: str) -> Target:
        """`python -m pkg.handler` from the package root when the file is in a package, else `python file`."""
        path = path.resolve()
        root = import_root(path)
        if (path.parent / "__init__.py").is_file():
            argv = (python, "-m", module_name(path, root))
        else:
            argv = (python, str(path))
        env = {k: v for k, v in os.environ.items() if k not in _PLATFORM_VARS}
        env.update(RUNPOD_SKIP_AUTO_SYSTEM_CHECKS="true", PYTHONUNBUFFERED="1", UVICORN_LOG_LEVEL="warning")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
        return cls(argv, root, tuple(sorted(env.items())))


# Loopback only: never send a check's requests through an HTTP(S)_PROXY from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


@dataclass(frozen=True)
class Finished:
    returncode: int | None  # None: killed at the time limit
    seconds: float
    output: str


def run_once(target: Target, args: list[str], timeout: float) -> Finished:
    """Run the module to completion (or kill it at `timeout`); output is stdout and stderr together."""
    with tempfile.TemporaryFile() as log:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [*target.argv, *args],
            cwd=target.cwd,
            env=dict(target.env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(proc)
            code = None
        seconds = time.perf_counter() - started
        log.seek(0)
        return Finished(code, seconds, log.read().decode(errors="replace"))


class LocalServer:
    """The handler under `--rp_serve_api` on a free loopback port; a context manager."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = tempfile.TemporaryDirectory(prefix="fastbackend-check-")
        self.log_path = Path(self._dir.name) / "server.log"
        self.proc: subprocess.Popen | None = None
        self.spawned = 0.0

    def __enter__(self) -> LocalServer:
        args = [
            "--rp_serve_api",
            "--rp_api_port",
            str(self.port),
            "--rp_api_host",
            "127.0.0.1",
            "--rp_log_level",
            "WARN",
        ]
        self._log = open(self.log_path, "wb")
        self.spawned = time.perf_counter()
        self.proc = subprocess.Popen(
            [*self.target.argv, *args],
            cwd=self.target.cwd,
            env=dict(self.target.env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        self._log.close()
        self._dir.cleanup()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self) -> str:
        self._log.flush()
        return _tail(self.log_path)

    def wait_ready(self, timeout: float) -> float | None:
        """Seconds from spawn until the API answers (None: it exited or the time ran out)."""
        deadline = self.spawned + timeout
        while time.perf_counter() < deadline:
            if not self.alive():
                return None
            try:
                with _OPENER.open(self.url + "/", timeout=1.0) as response:
                    if response.status == 200:
                        return time.perf_counter() - self.spawned
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.05)
        return None

    def post(self, path: str, body: Any, timeout: float) -> Answer:
        return post(self.url + path, body, timeout)


@dataclass(frozen=True)
class Answer:
    status: int  # HTTP status; 0 when there was no answer
    body: Any
    seconds: float
    error: str = ""

    @property
    def job_status(self) -> str:
        return self.body.get("status", "") if isinstance(self.body, dict) else ""


def post(url: str, body: Any, timeout: float) -> Answer:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    started = time.perf_counter()
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            raw, status = response.read(), response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
        return Answer(0, None, time.perf_counter() - started, f"no answer: {getattr(exc, 'reason', exc)}")
    seconds = time.perf_counter() - started
    try:
        return Answer(status, json.loads(raw), seconds)
    except ValueError:
        return Answer(status, raw[:200].decode(errors="replace"), seconds, "answer is not JSON")


def sdk_traceback(error: Any) -> bool:
    """True when a job error is the SDK's report of an exception the handler raised."""
    if not isinstance(error, str):
        return False
    if error.startswith("handler: ") and "traceback:" in error:
        return True
    try:
        parsed = json.loads(error)
    except ValueError:
        return False
    return isinstance(parsed, dict) and ("error_traceback" in parsed or "error_type" in parsed)
