"""Image sources besides base64: `{"url": ...}` fetched under the operator's rules and
`{"path": ...}` read under FASTBACKEND_INPUT_ROOT. Both are off until the operator opts in.

What comes out is the file's bytes, which then go through the same decoding and caps as a
base64 image. The rules (worker/source_rules.py, pure functions, unit-tested):

- URL: https only (http where FASTBACKEND_URL_ALLOW_HTTP), the host in
  FASTBACKEND_URL_ALLOWLIST (exact name or `*.suffix`), no credentials in the URL, no raw space,
  control or non-ASCII character in it (INVALID_INPUT: percent-encode it). Every address the name
  resolves to must be public (private, loopback, link-local, multicast, reserved refused) unless
  inside FASTBACKEND_URL_ALLOW_NETWORKS; the connection then goes to one of those checked
  addresses (no second lookup to rebind). Redirects are followed by hand, each hop checked again.
  The body is counted while it streams and cut at the image byte cap (Content-Length is a hint,
  never trusted).
- Time (worker/fetch.py): each fetch has a monotonic deadline (FASTBACKEND_URL_TIMEOUT_MS) that
  every wait checks, the name lookup included; a job's fetches together have one more
  (FASTBACKEND_URL_JOB_TIMEOUT_MS). The first failing image fails the job, so the job's other
  fetches are stopped then (within worker.fetch.SLICE_S), and the job answers at once.
- Path: relative to the input root, or absolute under it; `..` refused; the real path (after
  symlinks) must stay under the root; opened without following a symlink and without blocking (a
  FIFO swapped in after the check is refused, never waited on); a regular file, read up to the
  byte cap.
- Bytes: what url/path images bring is counted per job as it arrives
  (FASTBACKEND_MAX_JOB_SOURCE_BYTES, IMAGE_TOO_LARGE); before its first read a job reserves the
  most its items can bring in the worker's budget (FASTBACKEND_MAX_WORKER_SOURCE_BYTES), waiting
  for room like admission does. Waiting on the network or the disk gives the job's CPU slot back.

Messages name the item (`images[3]`) and never echo a URL's query string (it may be a signature).
See docs/reference/sources.md.
"""

from __future__ import annotations

import contextlib
import contextvars
import http.client
import os
import re
import stat
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from worker.batching import off_cpu
from worker.config import ENV_VARS, WorkerConfig
from worker.errors import ErrorCode, WorkerError
from worker.fetch import FetchClock, open_response, resolve_in_time
from worker.limits import SourceBytes
from worker.source_rules import (
    FetchFailed,
    Resolver,
    UrlPolicy,
    UrlTarget,
    check_url,
    checked_addresses,
    parse_host_pattern,
    parse_network,
    redact,
    resolve_input_path,
    system_resolver,
    url_syntax_problem,
)
from worker.telemetry import report

MAX_REDIRECTS = 3
MAX_PARALLEL_FETCHES = 8  # URLs of one job fetched at once
_CHUNK = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_QUERY = re.compile(r"\?[^\s'\"]*")


def too_large(field: str, max_bytes: int) -> WorkerError:
    return WorkerError(ErrorCode.IMAGE_TOO_LARGE, f"{field}: over {max_bytes:,} bytes", field=field)


class JobSources:
    """One job's url/path reads: the deadline of its fetches together, the flag that stops them,
    and the source bytes it holds (its own budget, and the worker's SourceBytes)."""

    def __init__(self, fetch_limit_s: float, max_bytes: int, worker_bytes: SourceBytes | None = None) -> None:
        self.fetch_limit_s, self.max_bytes, self.worker_bytes = fetch_limit_s, max_bytes, worker_bytes
        self.cancel = threading.Event()
        self.held = 0  # bytes read
        self.reserved = 0  # bytes reserved in the worker's budget
        self._end: float | None = None  # set when the job's first fetch starts
        self._lock = threading.Lock()

    def clock(self, timeout_s: float) -> FetchClock:
        """A new fetch's clock: its own limit, or what is left of the job's, whichever ends first."""
        now = time.monotonic()
        with self._lock:
            if self._end is None:
                self._end = now + self.fetch_limit_s
        if now + timeout_s <= self._end:
            return FetchClock(now + timeout_s, f"limit {timeout_s:g} s", self.cancel)
        limit = f"the job's limit of {self.fetch_limit_s:g} s for its fetches, {ENV_VARS['url_job_timeout_ms']}"
        return FetchClock(self._end, limit, self.cancel)

    def reserve(self, items: int, max_image_bytes: int) -> None:
        """Reserve in the worker's budget the most `items` url/path images can bring, before any is
        read (SourceBytes: all at once, so jobs never wait on each other)."""
        size = min(items * max_image_bytes, self.max_bytes)
        if self.worker_bytes is not None:
            self.worker_bytes.reserve(size)
        with self._lock:
            self.reserved += size

    def take(self, size: int) -> None:
        """Count `size` more bytes read for this job.

        Raises:
            WorkerError: IMAGE_TOO_LARGE over the job's budget.
        """
        with self._lock:
            if self.held + size > self.max_bytes:
                raise WorkerError(
                    ErrorCode.IMAGE_TOO_LARGE,
                    f"the job's url/path images are over {self.max_bytes:,} bytes together "
                    f"({ENV_VARS['max_job_source_bytes']}); send fewer or smaller images per job",
                    field="images",
                )
            self.held += size

    def release(self) -> None:
        with self._lock:
            if self.worker_bytes is not None:
                self.worker_bytes.give_back(self.reserved)
            self.held = self.reserved = 0


_JOB: contextvars.ContextVar[JobSources | None] = contextvars.ContextVar("fastbackend_job_sources", default=None)


@contextlib.contextmanager
def holding_sources(config: WorkerConfig, worker_bytes: SourceBytes | None) -> Iterator[JobSources]:
    """The job's url/path reads for the duration of the block (the job): what it reserves in
    `worker_bytes` is held until the block ends; its fetches still running then stop."""
    job = JobSources(config.url_job_timeout_ms / 1000, config.max_job_source_bytes, worker_bytes)
    token = _JOB.set(job)
    try:
        yield job
    finally:
        _JOB.reset(token)
        job.cancel.set()
        job.release()


def read_path(raw: str, root: str, max_bytes: int, field: str, job: JobSources) -> bytes:
    """The bytes of a `{"path": ...}` item, at most `max_bytes`."""
    return read_checked_file(resolve_input_path(raw, root, field), raw, max_bytes, field, job)


def read_checked_file(real: Path, raw: str, max_bytes: int, field: str, job: JobSources) -> bytes:
    """The bytes of a path that passed the rules. It may have changed since: it is opened without
    following a symlink (O_NOFOLLOW) and without blocking (O_NONBLOCK: a FIFO swapped in would
    wait for a writer forever), and fstat of what was opened decides."""
    try:
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise FetchFailed(field, f"cannot read {raw!r} ({type(exc).__name__})") from None
    with os.fdopen(fd, "rb") as handle:
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise FetchFailed(field, f"{raw!r} is not a regular file")
            if info.st_size > max_bytes:
                raise too_large(field, max_bytes)
            job.take(info.st_size)  # before reading: the budget refuses before the memory is spent
            data = handle.read(max_bytes + 1)
        except OSError as exc:
            raise FetchFailed(field, f"cannot read {raw!r} ({type(exc).__name__})") from None
    if len(data) > max_bytes:
        raise too_large(field, max_bytes)
    if len(data) > info.st_size:  # it grew since fstat
        job.take(len(data) - info.st_size)
    return data


def describe(exc: BaseException) -> str:
    """An exception as a message may show it: no query string (a signature) from any URL in it."""
    return _QUERY.sub("?...", f"{type(exc).__name__}: {exc}")[:200]


def fetch_url(url: str, policy: UrlPolicy, field: str, job: JobSources, resolve: Resolver = system_resolver) -> bytes:
    """The body of a `{"url": ...}` item under the policy, every redirect hop checked again.

    Raises:
        InvalidSource (INVALID_INPUT: the URL cannot be sent as it is), SourceRefused, FetchFailed,
        WorkerError IMAGE_TOO_LARGE (the body passed the cap, or the job's bytes their budget),
        FetchCancelled (the job gave up on it).
    """
    clock = job.clock(policy.timeout_s)
    resolve = resolve_in_time(clock, resolve)
    first = url
    for hop in range(MAX_REDIRECTS + 1):
        if hop and (problem := url_syntax_problem(url)):  # the server's Location, not the client's URL
            reason = problem.split(";")[0]
            raise FetchFailed(field, f"{redact(first)} redirected to a URL that cannot be sent: {reason}")
        target = check_url(url, policy, field)
        try:
            addresses = checked_addresses(target, policy, field, resolve)
            status, location, body = _get(target, addresses, policy, clock, field, job)
        except TimeoutError:
            raise FetchFailed(field, f"{redact(url)} timed out ({clock.limit})") from None
        except (OSError, http.client.HTTPException) as exc:
            raise FetchFailed(field, f"{redact(url)} failed: {describe(exc)}") from None
        if status in _REDIRECTS:
            if not location:
                raise FetchFailed(field, f"{redact(url)} answered {status} without a Location")
            try:
                url = urllib.parse.urljoin(url, location)
            except ValueError:
                raise FetchFailed(field, f"{redact(url)} answered {status} with an unusable Location") from None
            continue
        if status != 200:
            raise FetchFailed(field, f"{redact(url)} answered HTTP {status}")
        return body
    raise FetchFailed(field, f"more than {MAX_REDIRECTS} redirects")


def _get(
    target: UrlTarget, addresses: list[str], policy: UrlPolicy, clock: FetchClock, field: str, job: JobSources
) -> tuple[int, str | None, bytes]:
    response, close = open_response(target, addresses, policy.connect_timeout_s, clock)
    try:
        if response.status != 200:
            return response.status, response.getheader("Location"), b""
        declared = response.getheader("Content-Length")
        if declared and declared.isdigit() and int(declared) > policy.max_bytes:
            raise too_large(field, policy.max_bytes)
        chunks, size = [], 0
        while chunk := response.read1(_CHUNK):  # Content-Length is not trusted: count what arrives
            size += len(chunk)
            if size > policy.max_bytes:
                raise too_large(field, policy.max_bytes)
            job.take(len(chunk))
            chunks.append(chunk)
        return 200, None, b"".join(chunks)
    finally:
        response.close()
        close()


def url_policy(config: WorkerConfig) -> UrlPolicy:
    """The URL rules of this worker's config (validated when the config was built)."""
    return UrlPolicy(
        tuple(parse_host_pattern(p) for p in config.url_allowlist),
        config.url_allow_http,
        tuple(parse_network(n) for n in config.url_allow_networks),
        config.url_connect_timeout_ms / 1000,
        config.url_timeout_ms / 1000,
        config.max_image_bytes,
    )


def read_source(item: Any, field: str, config: WorkerConfig, job: JobSources) -> bytes:
    """The bytes of one `{"url"}` or `{"path"}` item (a schema.UrlImage or schema.PathImage)."""
    url = getattr(item, "url", None)
    if url is not None:
        return fetch_url(url, url_policy(config), field, job)
    return read_path(item.path, config.input_root, config.max_image_bytes, field, job)


def read_sources(items: Sequence[Any], fields: Sequence[str], config: WorkerConfig) -> list[Any]:
    """Each item's bytes for url/path items (fetched in parallel), base64 strings unchanged.

    The bytes count against the job's budgets (holding_sources; a job run without it gets its own
    for this call). The job's CPU slot is given back while it waits.

    Raises:
        WorkerError: the error of the item that failed first; the others are stopped then.
    """
    wanted = [i for i, item in enumerate(items) if not isinstance(item, str)]
    if not wanted:
        return list(items)
    job = _JOB.get()
    if job is None:
        with holding_sources(config, None) as job:
            return _read_all(items, fields, config, wanted, job)
    return _read_all(items, fields, config, wanted, job)


def _read_all(
    items: Sequence[Any], fields: Sequence[str], config: WorkerConfig, wanted: list[int], job: JobSources
) -> list[Any]:
    out = list(items)
    job.reserve(len(wanted), config.max_image_bytes)  # waits (if it must) without the CPU slot itself
    with off_cpu():
        if len(wanted) == 1:
            out[wanted[0]] = read_source(items[wanted[0]], fields[wanted[0]], config, job)
            return out
        pool = ThreadPoolExecutor(min(MAX_PARALLEL_FETCHES, len(wanted)), thread_name_prefix="fastbackend-fetch")
        futures = {pool.submit(read_source, items[i], fields[i], config, job): i for i in wanted}
        try:
            for done, future in enumerate(as_completed(futures), start=1):
                out[futures[future]] = future.result()
                report(done, "fetch")  # from this (the job's) thread: the reporter is the job's
        except BaseException:
            job.cancel.set()  # the job fails with this error: its other fetches stop within a slice
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return out
