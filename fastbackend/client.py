"""Sending jobs to a RunPod endpoint or to RunPod's local API, within RunPod's request limits.

One client for both: a deployed endpoint (`https://api.runpod.ai/v2/{endpoint_id}/runsync`,
`/run`, `GET /status/{job_id}`, `POST /cancel/{job_id}`, bearer API key) and the local API
that `--rp_serve_api` starts (`/runsync`, `/run`, `POST /status/{job_id}`, no key). Only the
base URL and the status method differ, so the local API is how the endpoint code is tested.

Why not the runpod SDK's `runpod.Endpoint`: its URL layout fits deployed endpoints only (the
local API has no endpoint id in its paths and answers `/status` on POST only); its
`run_sync` returns the output alone and drops a FAILED job's `error` string; its polling has
no progress hook; and `import runpod` costs ~1.7 s and configures the root logger. So this is
a thin client with the SDK's URL layout, honouring the same `RUNPOD_ENDPOINT_BASE_URL`
variable the SDK reads (tests/tools/test_client.py checks the two layouts agree).
"""

from __future__ import annotations

import enum
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from worker.config import RUN_LIMIT_BYTES, RUNSYNC_LIMIT_BYTES

RUNPOD_API_BASE = "https://api.runpod.ai/v2"
BASE_URL_ENV_VAR = "RUNPOD_ENDPOINT_BASE_URL"  # the runpod SDK reads the same variable
API_KEY_ENV_VAR = "RUNPOD_API_KEY"

TERMINAL_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
# Answers worth retrying: the request was not taken (rate limit) or a gateway hiccup.
_RETRY_STATUS_POLL = frozenset({429, 500, 502, 503, 504})
_RETRY_SUBMIT = frozenset({429, 503})  # a 502/504 on submit may hide an accepted job: not retried
_MAX_RETRIES = 4


class Mode(str, enum.Enum):
    """How a job is sent: `/runsync` (wait in the request) or `/run` then `/status` polling."""

    SYNC = "sync"
    ASYNC = "async"

    @property
    def route(self) -> str:
        return "/runsync" if self is Mode.SYNC else "/run"

    @property
    def limit(self) -> int:
        """RunPod's request-body limit for this route, in bytes."""
        return RUNSYNC_LIMIT_BYTES if self is Mode.SYNC else RUN_LIMIT_BYTES


class ClientError(Exception):
    """A job could not be sent or followed; the message says what happened and what to do."""


class PayloadTooLarge(ClientError):
    """The request body is over RunPod's limit for the chosen route; nothing was sent."""

    def __init__(self, size: int, mode: Mode) -> None:
        self.size, self.mode = size, mode
        head = f"the request is {size:,} bytes, over RunPod's {mode.limit:,} byte limit on {mode.route}"
        if mode is Mode.ASYNC and size <= RUNSYNC_LIMIT_BYTES:
            advice = (
                f"use --sync (/runsync accepts up to {RUNSYNC_LIMIT_BYTES:,} bytes; the worker "
                f"must then allow it with FASTBACKEND_MAX_PAYLOAD_BYTES={RUNSYNC_LIMIT_BYTES}), "
                "or send fewer images per call"
            )
        else:
            advice = (
                "no RunPod route takes a body this large: send fewer or smaller images per call "
                "(base64 adds a third to each file), or keep large inputs out of the request: "
                "put them on a network volume (/runpod-volume) or behind URLs that a worker "
                "allowed to fetch them reads, and send references instead"
            )
        super().__init__(f"{head}: {advice}")


def encode_job(job: Mapping[str, Any]) -> bytes:
    """The exact bytes sent for a job: compact JSON, so the size checked is the size sent."""
    return json.dumps(job, separators=(",", ":"), allow_nan=False).encode("utf-8")


def check_request_size(size: int, mode: Mode) -> None:
    """Refuse, before sending, a body RunPod would refuse on this route.

    Raises:
        PayloadTooLarge: `size` is over 10 MB for `/run` or 20 MB for `/runsync`.
    """
    if size > mode.limit:
        raise PayloadTooLarge(size, mode)


@dataclass(frozen=True)
class Target:
    """Where jobs go: one RunPod endpoint, or a local API server."""

    base_url: str
    api_key: str | None = None
    status_method: str = "GET"  # RunPod's API; the local API only answers POST
    can_cancel: bool = True  # the local API has no /cancel route
    label: str = ""

    @classmethod
    def endpoint(cls, endpoint_id: str, api_key: str, base_url: str | None = None) -> Target:
        """A deployed endpoint, `{base_url}/{endpoint_id}` with RunPod's default base.

        Raises:
            ClientError: the endpoint id or the API key is empty or malformed.
        """
        endpoint_id = endpoint_id.strip()
        if not endpoint_id or "/" in endpoint_id or any(c.isspace() for c in endpoint_id):
            raise ClientError(f"invalid endpoint id {endpoint_id!r}: copy it from the endpoint's page in the console")
        if not api_key or not api_key.strip():
            raise ClientError(f"set {API_KEY_ENV_VAR} to a RunPod API key (console: Settings > API Keys)")
        base = (base_url or RUNPOD_API_BASE).rstrip("/")
        return cls(f"{base}/{endpoint_id}", api_key.strip(), "GET", True, f"endpoint {endpoint_id}")

    @classmethod
    def local(cls, url: str) -> Target:
        """RunPod's local API server, e.g. `http://127.0.0.1:8000`."""
        return cls(url.rstrip("/"), None, "POST", False, f"local API {url.rstrip('/')}")


def target_from(endpoint: str | None, local: str | None) -> Target | None:
    """`--endpoint ID` (key from RUNPOD_API_KEY, base from RUNPOD_ENDPOINT_BASE_URL) or `--local URL`.

    Raises:
        ClientError: a malformed endpoint id or no API key.
    """
    if endpoint:
        return Target.endpoint(endpoint, os.environ.get(API_KEY_ENV_VAR, ""), os.environ.get(BASE_URL_ENV_VAR))
    return Target.local(local) if local else None


@dataclass(frozen=True)
class JobResult:
    """A finished (or abandoned) job as RunPod reports it."""

    job_id: str | None
    status: str
    output: Any
    error: str | None
    request_bytes: int
    elapsed_s: float
    raw: Mapping[str, Any]

    @property
    def ok(self) -> bool:
        return self.status == "COMPLETED" and not self.error


ProgressCallback = Callable[[str, str, float], None]  # (job id, status, seconds since submit)


class _CredentialsStayOnHost(urllib.request.HTTPRedirectHandler):
    """Follows redirects as urllib does, but drops `Authorization` when one leads to another
    scheme, host or port: the API key is for the API host only (as requests and curl do)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102 (urllib's signature)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(newurl) != _origin(req.full_url):
            for name in [k for k in new.headers if k.lower() == "authorization"]:
                del new.headers[name]
        return new


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


_OPENER = urllib.request.build_opener(_CredentialsStayOnHost())
# Loopback requests never go through an HTTP(S)_PROXY the environment may set.
_LOOPBACK_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _CredentialsStayOnHost())


def open_url(request: urllib.request.Request | str, timeout: float) -> Any:
    """urlopen, bypassing proxies for loopback hosts (the local API)."""
    url = request.full_url if isinstance(request, urllib.request.Request) else request
    host = urllib.parse.urlsplit(url).hostname or ""
    if host in ("127.0.0.1", "localhost", "::1"):
        return _LOOPBACK_OPENER.open(request, timeout=timeout)
    return _OPENER.open(request, timeout=timeout)


class ApiClient:
    """Submit jobs to a `Target`, poll their status, and return `JobResult`s."""

    def __init__(
        self,
        target: Target,
        timeout: float = 120,
        poll_interval: float = 0.5,
        max_poll_interval: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.target = target
        self.url = target.base_url
        self.timeout = timeout  # per HTTP request
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self._sleep = sleep

    # -- HTTP ------------------------------------------------------------------
    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, Any]]:
        """One HTTP call; returns (status code, JSON body). HTTP errors are answers, not raises.

        Raises:
            ClientError: the server cannot be reached.
        """
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.target.api_key:
            headers["Authorization"] = f"Bearer {self.target.api_key}"
        request = urllib.request.Request(self.url + path, data=body, headers=headers, method=method)
        try:
            with open_url(request, self.timeout) as response:
                return response.status, _json_body(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _json_body(exc.read())
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError(f"cannot reach {self.target.label or self.url} ({self.url + path}): {reason}") from None

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        return self.request("POST", path, encode_job(body or {}))

    def _call(self, method: str, path: str, body: bytes | None, retry_on: frozenset[int]) -> dict[str, Any]:
        delay = 1.0
        for attempt in range(_MAX_RETRIES + 1):
            code, answer = self.request(method, path, body)
            if code < 400:
                return answer
            if code not in retry_on or attempt == _MAX_RETRIES:
                raise ClientError(self._explain(code, path, answer))
            self._sleep(delay)
            delay = min(delay * 2, 8.0)
        raise AssertionError("unreachable")

    def _explain(self, code: int, path: str, answer: Mapping[str, Any]) -> str:
        detail = answer.get("error") or answer.get("detail") or answer.get("raw") or ""
        hint = {
            401: f"RunPod refused the API key: check {API_KEY_ENV_VAR}",
            403: f"the API key may not use this endpoint: check {API_KEY_ENV_VAR}",
            404: "no such endpoint or job: check the endpoint id",
            413: "RunPod refused the request body as too large",
            429: "rate-limited by RunPod; retried, still refused",
        }.get(code, "")
        return (
            f"{self.target.label} answered HTTP {code} on {path}"
            + (f": {hint}" if hint else "")
            + (f" ({str(detail)[:300]})" if detail else "")
        )

    # -- jobs ------------------------------------------------------------------
    def submit(self, job: Mapping[str, Any], mode: Mode) -> tuple[dict[str, Any], int]:
        """Check the body's size for the route, then send it; returns (answer, bytes sent).

        Raises:
            PayloadTooLarge: over RunPod's limit for the route; nothing is sent.
            ClientError: the call failed.
        """
        body = encode_job(job)
        check_request_size(len(body), mode)
        return self._call("POST", mode.route, body, _RETRY_SUBMIT), len(body)

    def status(self, job_id: str) -> dict[str, Any]:
        body = b"{}" if self.target.status_method == "POST" else None
        return self._call(self.target.status_method, f"/status/{job_id}", body, _RETRY_STATUS_POLL)

    def cancel(self, job_id: str) -> bool:
        """Ask RunPod to cancel a job (best effort); False where the target cannot."""
        if not self.target.can_cancel:
            return False
        try:
            self._call("POST", f"/cancel/{job_id}", b"{}", frozenset())
            return True
        except ClientError:
            return False

    def wait(
        self,
        job_id: str,
        max_wait: float,
        progress: ProgressCallback | None = None,
        started: float | None = None,
        first: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Poll `/status/{job_id}` until the job ends, backing off up to `max_poll_interval`.

        The first poll is immediate (the local API runs a stored job when it is polled);
        later ones wait `poll_interval`, growing by half each time.

        Raises:
            ClientError: still unfinished after `max_wait` seconds (the job is cancelled
                where the target can cancel), or a status call failed.
        """
        started = time.monotonic() if started is None else started
        answer = dict(first or {"id": job_id, "status": "IN_QUEUE"})
        interval, polls = self.poll_interval, 0
        try:
            while True:
                if progress:
                    progress(job_id, status_text(answer), time.monotonic() - started)
                if answer.get("status") in TERMINAL_STATUSES:
                    return answer
                if time.monotonic() - started > max_wait:
                    cancelled = self.cancel(job_id)
                    raise ClientError(
                        f"job {job_id} still {answer.get('status')} after {max_wait:.0f} s"
                        + ("; cancelled it" if cancelled else "")
                        + ": raise --timeout"
                    )
                if polls:
                    self._sleep(interval)
                    interval = min(interval * 1.5, self.max_poll_interval)
                answer = self.status(job_id)
                polls += 1
        except KeyboardInterrupt:
            # An abandoned job still runs (and bills) on RunPod: cancel it on Ctrl-C.
            if self.cancel(job_id):
                raise ClientError(f"interrupted: cancelled job {job_id}") from None
            raise

    def invoke(
        self,
        job: Mapping[str, Any],
        mode: Mode = Mode.SYNC,
        max_wait: float = 600,
        progress: ProgressCallback | None = None,
    ) -> JobResult:
        """Send one job and wait for its end: `/runsync`, or `/run` then `/status` polling.

        A `/runsync` that RunPod answers before the job ends (IN_QUEUE/IN_PROGRESS with an
        id) is followed on `/status`, as the SDK does.

        Raises:
            PayloadTooLarge: over RunPod's limit for the route; nothing is sent.
            ClientError: the call failed or the job did not end within `max_wait` seconds.
        """
        started = time.monotonic()
        answer, size = self.submit(job, mode)
        job_id = answer.get("id")
        if answer.get("status") not in TERMINAL_STATUSES:
            if not job_id:
                raise ClientError(f"{self.target.label} accepted the job without an id: {str(answer)[:300]}")
            answer = self.wait(job_id, max_wait, progress, started, first=answer)
        error = answer.get("error")
        return JobResult(
            job_id,
            answer.get("status", "?"),
            answer.get("output"),
            error if error is None else str(error),
            size,
            time.monotonic() - started,
            answer,
        )

    # The raw answers, as the integration tests and `make run` read them.
    def runsync(self, job: Mapping[str, Any]) -> dict[str, Any]:
        """POST `/runsync` and return RunPod's raw answer (`status`, `output` or `error`)."""
        return self.invoke(job, Mode.SYNC).raw  # type: ignore[return-value]

    def run_and_wait(self, job: Mapping[str, Any]) -> dict[str, Any]:
        """POST `/run`, then poll `/status/{id}`; return the final raw answer."""
        return self.invoke(job, Mode.ASYNC).raw  # type: ignore[return-value]


def status_text(answer: Mapping[str, Any]) -> str:
    """A job's status for a progress line: `IN_PROGRESS 16/64 images (decode)` when the worker
    reports progress (its `output` while the job runs), else the status alone."""
    status = str(answer.get("status", "?"))
    output = answer.get("output")
    if status == "IN_PROGRESS" and isinstance(output, dict) and {"done", "total"} <= set(output):
        stage = f" ({output['stage']})" if output.get("stage") else ""
        return f"{status} {output['done']}/{output['total']} images{stage}"
    return status


def _json_body(payload: bytes) -> dict[str, Any]:
    try:
        value = json.loads(payload) if payload else {}
    except ValueError:
        return {"raw": payload.decode(errors="replace")[:2000]}
    return value if isinstance(value, dict) else {"raw": value}
