"""`fastbackend batch`, one job at a time: send it on `/run`, follow it on `/status`, retry what
is worth retrying, and end with one record per image (a result or a coded failure).

Retried, with exponential backoff and full jitter: HTTP 429 and 5xx, network errors, a job the
API lost or ended without a coded answer (a recycled worker), RunPod's CANCELLED/TIMED_OUT, a
worker's RATE_LIMITED (and the other codes in RETRYABLE_WORKER_CODES), and a job past
`job_timeout` (cancelled on RunPod first). After `max_attempts` the images are recorded failed
with the last reason. A per-image worker error records that image and sends the rest again.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastbackend.batch.plan import (
    CANCELLED,
    INVALID_INPUT,
    ITEM_CODES,
    LOST,
    NETWORK,
    NOT_SENT,
    RETRYABLE_WORKER_CODES,
    TIMEOUT,
    UNREADABLE,
    Item,
    failed_index,
    failure,
    job_input,
    parse_error,
    records_from_output,
)
from fastbackend.client import ApiClient, ClientError, Mode, PayloadTooLarge, check_request_size, encode_job

FATAL_HTTP = {401: "the API key was refused", 403: "the API key may not use this endpoint", 404: "no such endpoint"}


class BatchAborted(Exception):
    """Going on is pointless (the key or the endpoint is wrong); the message says why."""


@dataclass
class RetryPolicy:
    max_attempts: int = 5
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    job_timeout_s: float = 600.0
    poll_interval_s: float = 0.5
    max_poll_interval_s: float = 5.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))]."""
        return rng.uniform(0, min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))


@dataclass
class _Outcome:
    kind: str  # "done", "failed" (a worker's answer), "retry" (a transient reason), "stopped"
    job_id: str | None = None
    output: Any = None
    code: str | None = None
    message: str = ""


@dataclass
class Counters:
    """Shared by the runner threads: retries by reason, jobs sent, images sent."""

    retries: collections.Counter = field(default_factory=collections.Counter)
    jobs_sent: int = 0
    images_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, reason: str | None = None, jobs: int = 0, images: int = 0) -> None:
        with self.lock:
            if reason:
                self.retries[reason] += 1
            self.jobs_sent += jobs
            self.images_sent += images


class JobRunner:
    def __init__(
        self,
        client: ApiClient,
        policy: RetryPolicy,
        stop: threading.Event,
        *,
        adapter: str | None = None,
        top_k: int = 1,
        op: str = "predict",
        fields: dict[str, Any] | None = None,
        counters: Counters | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client, self.policy, self.stop = client, policy, stop
        self.adapter, self.top_k, self.op, self.fields = adapter, top_k, op, fields
        self.counters = counters or Counters()
        self.rng = rng or random.Random()
        self.clock = clock

    def run(self, items: list[Item]) -> list[dict[str, Any]]:
        """Records for the job's images; fewer than the images only when stopped (Ctrl-C):
        the missing ones are sent by the next run."""
        records: list[dict[str, Any]] = []
        queue = collections.deque([list(items)])  # groups still to send (a job splits on an unnamed image error)
        attempt = 1
        while queue and not self.stop.is_set():
            group = queue.popleft()
            images, group = self._payloads(group, records, attempt)
            if not group:
                continue
            outcome = self._execute(job_input(images, self.adapter, self.top_k, self.op, self.fields), len(group))
            if outcome.kind == "stopped":
                break
            if outcome.kind == "done":
                records += records_from_output(group, outcome.output, self.adapter, outcome.job_id, attempt)
                continue
            code = outcome.code or LOST
            index = failed_index(outcome.message, len(group)) if outcome.kind == "failed" else None
            if outcome.kind == "failed" and (code in ITEM_CODES or (code == INVALID_INPUT and index is not None)):
                if index is not None:
                    records.append(failure(group[index], code, outcome.message, self.adapter, outcome.job_id, attempt))
                    rest = group[:index] + group[index + 1 :]
                    if rest:
                        queue.appendleft(rest)
                else:  # the error names no image: send them one by one to find it
                    queue.extendleft([item] for item in reversed(group))
                continue
            if outcome.kind == "failed" and code not in RETRYABLE_WORKER_CODES:
                message = f"{code}: {outcome.message}"
                records += [failure(i, code, message, self.adapter, outcome.job_id, attempt) for i in group]
                continue
            # transient: retry the group after a backoff, or give up on it
            if attempt >= self.policy.max_attempts:
                message = f"{code} after {attempt} attempts: {outcome.message}"
                records += [failure(i, code, message, self.adapter, outcome.job_id, attempt) for i in group]
                continue
            self.counters.add(code)
            if self.stop.wait(self.policy.delay(attempt, self.rng)):
                break
            attempt += 1
            queue.appendleft(group)
        return records

    def _payloads(self, group: list[Item], records: list, attempt: int) -> tuple[list[Any], list[Item]]:
        images, kept = [], []
        for item in group:
            try:
                images.append(item.payload())
                kept.append(item)
            except OSError as exc:
                records.append(
                    failure(item, UNREADABLE, f"cannot read {item.file}: {exc}", self.adapter, None, attempt)
                )
        return images, kept

    # -- one submission, followed to its end ------------------------------------------------
    def _execute(self, job: dict[str, Any], count: int) -> _Outcome:
        body = encode_job(job)
        try:
            check_request_size(len(body), Mode.ASYNC)
        except PayloadTooLarge as exc:
            return _Outcome("failed", code=NOT_SENT, message=str(exc))
        started = self.clock()
        http, answer = self._request("POST", "/run", body)
        self.counters.add(jobs=1, images=count)
        if http is None or http == 429 or http >= 500:
            return _Outcome("retry", code=NETWORK if http is None else f"HTTP_{http}", message=str(answer)[:300])
        if http in FATAL_HTTP:
            raise BatchAborted(f"{self.client.target.label} answered HTTP {http} on /run: {FATAL_HTTP[http]}")
        if http >= 400:
            return _Outcome("failed", code=f"HTTP_{http}", message=str(answer.get("error") or answer)[:300])
        job_id = answer.get("id")
        if not job_id and answer.get("status") not in ("COMPLETED", "FAILED"):
            return _Outcome("retry", code=LOST, message="accepted without a job id")
        interval, polls = self.policy.poll_interval_s, 0
        while True:
            status = answer.get("status")
            if status == "COMPLETED":
                return _Outcome("done", job_id, answer.get("output"))
            if status == "FAILED":
                code, message = parse_error(str(answer.get("error") or ""))
                return _Outcome("failed" if code else "retry", job_id, code=code or LOST, message=message[:500])
            if status in ("CANCELLED", "TIMED_OUT"):
                return _Outcome("retry", job_id, code=CANCELLED, message=f"RunPod says {status}")
            if self.clock() - started > self.policy.job_timeout_s:
                self._cancel(job_id)
                return _Outcome(
                    "retry", job_id, code=TIMEOUT, message=f"{status} after {self.policy.job_timeout_s:g} s"
                )
            if polls:
                self.stop.wait(interval)
                interval = min(interval * 1.5, self.policy.max_poll_interval_s)
            if self.stop.is_set():
                self._cancel(job_id)  # an abandoned job still runs (and bills) on RunPod
                return _Outcome("stopped", job_id)
            polls += 1
            http, fresh = self._request(self.client.target.status_method, f"/status/{job_id}", self._status_body())
            if http == 404:
                return _Outcome("retry", job_id, code=LOST, message="the API no longer knows the job")
            if http is not None and http < 400:
                answer = fresh  # on 429/5xx/network errors keep polling, within the job timeout

    def _cancel(self, job_id: str) -> bool:
        """Cancel on RunPod, a few tries: a job left running still bills, and may answer later."""
        if not self.client.target.can_cancel:
            return False
        for attempt in range(1, 4):
            http, _ = self._request("POST", f"/cancel/{job_id}", b"{}")
            if http is not None and http < 400:
                return True
            if http is not None and http != 429 and http < 500:
                return False
            time.sleep(self.policy.delay(attempt, self.rng))  # not stop.wait: Ctrl-C must still cancel
        return False

    def _status_body(self) -> bytes | None:
        return b"{}" if self.client.target.status_method == "POST" else None

    def _request(self, method: str, path: str, body: bytes | None) -> tuple[int | None, dict[str, Any]]:
        try:
            return self.client.request(method, path, body)
        except ClientError as exc:
            return None, {"error": str(exc)}
