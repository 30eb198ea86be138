"""The dynamic checks' HTTP: a job posted to the local API, timed, whatever comes back.

Starting and stopping the handler is fastbackend/local.py's (the same runner `serve`, `invoke`
and the tests use); this module only speaks to it and reads the answers.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from fastbackend.client import open_url


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
        with open_url(request, timeout) as response:
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
