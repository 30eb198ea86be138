"""RunPod's own local tooling, driven from Python: `--test_input` and `--rp_serve_api`.

The one place the tools start a handler: `fastbackend serve`/`invoke`, `check --run`, `make run`
and the tests all go through `HandlerCommand`, `run_test_input` and `LocalServer`/`serve_api`,
so all of them exercise the handler exactly as RunPod documents local testing. Every process
gets its own session (its children die with it) and an environment with RunPod's platform
variables removed: a local run must never join a real endpoint.
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
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastbackend.client import ApiClient, Target, open_url
from fastbackend.paths import import_root, module_name
from worker.environment import QUIET_ENV

HANDLER_MODULE = "exported.handler"
_RESULT_PREFIX = "Job result: "
_FAILED_MARK = " failed with error: "
RUNPOD_LOG_LINE_LIMIT = 4096  # runpod.serverless.modules.rp_logger.MAX_MESSAGE_LENGTH
# Variables that make the SDK talk to the real platform (job queue, pings, realtime).
PLATFORM_VARS = (
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


def build_payload(
    images: Sequence[Path],
    adapter: str | None = None,
    top_k: int | None = 1,
    *,
    op: str = "predict",
    fields: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A job body `{"input": {...}}` for a predict (or `op`) on image files, with the task's `fields`
    (a classifier's `top_k` unless None)."""
    encoded = [encode_image_file(p) for p in images]
    body: dict[str, Any] = {"images": encoded[0] if len(encoded) == 1 else encoded}
    if op != "predict":
        body["op"] = op
    if top_k is not None:
        body["top_k"] = top_k
    if adapter:
        body["adapter"] = adapter
    return {"input": {**body, **(fields or {})}}


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
class HandlerCommand:
    """How to start a handler module: the command prefix, its folder and its environment."""

    argv: tuple[str, ...]
    cwd: Path
    env: tuple[tuple[str, str], ...]

    @classmethod
    def for_handler(cls, path: Path, python: str = sys.executable, env: dict[str, str] | None = None) -> HandlerCommand:
        """`python -m pkg.handler` from the package root when the file is in a package, else `python file`.

        The environment is this process's without RunPod's platform variables, with the platform's
        fitness checks skipped, then `env` (which may set platform variables on purpose, as a fake
        queue does). A user's handler keeps its hub access: only `exported` adds the offline set.
        """
        path = path.resolve()
        root = import_root(path)
        if (path.parent / "__init__.py").is_file():
            argv = (python, "-m", module_name(path, root))
        else:
            argv = (python, str(path))
        values = {k: v for k, v in os.environ.items() if k not in PLATFORM_VARS}
        values.update(RUNPOD_SKIP_AUTO_SYSTEM_CHECKS="true", PYTHONUNBUFFERED="1", UVICORN_LOG_LEVEL="warning")
        values["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), values.get("PYTHONPATH", "")) if p)
        values.update(env or {})
        return cls(argv, root, tuple(sorted(values.items())))

    @classmethod
    def exported(cls, root: Path, env: dict[str, str] | None = None) -> HandlerCommand:
        """The generated handler of the project at `root` (`python -m exported.handler`), quiet and offline."""
        quiet = {k: v for k, v in handler_env().items() if os.environ.get(k) != v}
        path = Path(root) / (HANDLER_MODULE.replace(".", "/") + ".py")
        return cls.for_handler(path, sys.executable, {**quiet, **(env or {})})

    def start(self, args: list[str], log: Any) -> subprocess.Popen:
        """Start the module with `args` in its own session, stdout and stderr into `log`."""
        return subprocess.Popen(
            [*self.argv, *args],
            cwd=self.cwd,
            env=dict(self.env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


@dataclass(frozen=True)
class TestInputRun:
    """What `--test_input` did: exit code (None: killed at the time limit), time, log, job result."""

    __test__ = False  # a result type whose name starts with Test: not a pytest test class

    returncode: int | None
    seconds: float
    log: str
    result_text: str  # the job result as RunPod logged it (a Python literal), "" when none
    error: str | None  # a failed job's error string

    @property
    def output(self) -> dict[str, Any] | None:
        """What the handler returned, as RunPod's run_job passed it on.

        Raises:
            ValueError: RunPod's logger cut the result line (results over its line limit).
        """
        if not self.result_text:
            return None
        try:
            return ast.literal_eval(self.result_text).get("output")
        except (SyntaxError, ValueError):
            # Only the result line itself matters: the SDK also cuts its echo of a large *input*.
            raise ValueError(
                f"RunPod's logger cut the job result (it truncates log lines over "
                f"{RUNPOD_LOG_LINE_LIMIT} characters); ask for a smaller result or use the local API"
            ) from None


def run_test_input(
    job: dict[str, Any] | None,
    root: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 180,
    command: HandlerCommand | None = None,
) -> TestInputRun:
    """`python -m exported.handler --test_input '<job>'` (or test_input.json when job is None).

    Args:
        job: the job body; None runs the handler's own test_input.json.
        root: the project whose exported handler runs (when `command` is not given).
        env: extra environment for the handler.
        timeout: seconds before the process is stopped (then `returncode` is None).
        command: another handler module to run (`fastbackend check --run`).
    """
    command = command or HandlerCommand.exported(root or Path.cwd(), env)
    args = ["--rp_log_level", "INFO"]  # the job result is logged at INFO
    if job is not None:
        args += ["--test_input", json.dumps(job)]
    with tempfile.TemporaryFile() as sink:
        started = time.perf_counter()
        process = command.start(args, sink)
        try:
            code: int | None = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(process)
            code = None
        seconds = time.perf_counter() - started
        sink.seek(0)
        log = sink.read().decode(errors="replace")
    return parse_test_input(code, seconds, log)


def parse_test_input(returncode: int | None, seconds: float, log: str) -> TestInputRun:
    """What a `--test_input` run printed (here, or in a container started with its CMD), read back."""
    result_text, error = "", None
    for line in log.splitlines():
        if _RESULT_PREFIX in line:  # RunPod prints the job result as a Python literal
            result_text = line.split(_RESULT_PREFIX, 1)[1].strip()
        elif _FAILED_MARK in line:  # and a failed job's error string, then exits 1
            error = line.split(_FAILED_MARK, 1)[1]
    return TestInputRun(returncode, seconds, log, result_text, error)


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


def serve_args(host: str, port: int) -> list[str]:
    """RunPod's flags that start its local API server on host:port."""
    return ["--rp_serve_api", "--rp_api_host", host, "--rp_api_port", str(port)]


class LocalServer:
    """A handler under `--rp_serve_api` on a free loopback port; a context manager that stops it."""

    def __init__(self, command: HandlerCommand, port: int | None = None, log_file: Path | None = None) -> None:
        self.command = command
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = LocalApi(self.url)
        self._dir = None if log_file else tempfile.TemporaryDirectory(prefix="fastbackend-api-")
        self.log_path = Path(log_file) if log_file else Path(self._dir.name) / "server.log"
        self.process: subprocess.Popen | None = None
        self.spawned = 0.0

    def __enter__(self) -> LocalServer:
        self._log = open(self.log_path, "wb")
        self.spawned = time.perf_counter()
        self.process = self.command.start([*serve_args("127.0.0.1", self.port), "--rp_log_level", "WARN"], self._log)
        self.api.pid = self.process.pid
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            stop_process(self.process)
        self._log.close()
        if self._dir is not None:
            self._dir.cleanup()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 12) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.strip().splitlines()[-lines:])

    def wait_ready(self, timeout: float) -> float | None:
        """Seconds from spawn until the API answers (None: it exited or the time ran out)."""
        deadline = self.spawned + timeout
        while time.perf_counter() < deadline:
            if not self.alive():
                return None
            if self.api.ready():
                return time.perf_counter() - self.spawned
            time.sleep(0.05)
        return None


@contextmanager
def serve_api(
    root: Path,
    port: int | None = None,
    env: dict[str, str] | None = None,
    startup_timeout: float = 180,
    log_file: Path | None = None,
) -> Iterator[LocalApi]:
    """Start the exported handler with `--rp_serve_api` on loopback, wait until it answers, stop it after.

    Raises:
        RuntimeError: the process exited or did not answer within `startup_timeout`.
    """
    with LocalServer(HandlerCommand.exported(root, env), port, log_file) as server:
        if server.wait_ready(startup_timeout) is None:
            where = f"; log: {log_file}" if log_file else f": {server.log_tail()}"
            if not server.alive():
                raise RuntimeError(f"local API exited with code {server.process.returncode} before answering{where}")
            raise RuntimeError(f"local API did not answer within {startup_timeout:.0f} s{where}")
        yield server.api
