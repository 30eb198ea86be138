"""Image sources besides base64: `{"url": ...}` fetched under the operator's rules and
`{"path": ...}` read under FASTBACKEND_INPUT_ROOT. Both are off until the operator opts in.

What comes out is the file's bytes, which then go through the same decoding and caps as a
base64 image. The rules (worker/source_rules.py, pure functions, unit-tested):

- URL: https only (http where FASTBACKEND_URL_ALLOW_HTTP), the host in
  FASTBACKEND_URL_ALLOWLIST (exact name or `*.suffix`), no credentials in the URL. Every
  address the name resolves to must be public (private, loopback, link-local, multicast,
  reserved refused) unless inside FASTBACKEND_URL_ALLOW_NETWORKS; the connection then goes to
  one of those checked addresses (no second lookup to rebind). Redirects are followed by hand,
  each hop checked again. The body is counted while it streams and cut at the image byte cap
  (Content-Length is a hint, never trusted); connect and whole-fetch timeouts bound the time.
- Path: relative to the input root, or absolute under it; `..` refused; the real path (after
  symlinks) must stay under the root; a regular file, read up to the byte cap.

Messages name the item (`images[3]`) and never echo a URL's query string (it may be a signature).
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from worker.errors import ErrorCode, WorkerError
from worker.progress import report
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
)

if TYPE_CHECKING:
    from worker.config import WorkerConfig

MAX_REDIRECTS = 3
MAX_PARALLEL_FETCHES = 8  # URLs of one job fetched at once
_CHUNK = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def too_large(field: str, max_bytes: int) -> WorkerError:
    return WorkerError(ErrorCode.IMAGE_TOO_LARGE, f"{field}: over {max_bytes:,} bytes", field=field)


def read_path(raw: str, root: str, max_bytes: int, field: str) -> bytes:
    """The bytes of a `{"path": ...}` item, at most `max_bytes`."""
    real = resolve_input_path(raw, root, field)
    try:
        # O_NOFOLLOW: the checked path must not have become a symlink since it was resolved.
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise FetchFailed(field, f"cannot read {raw!r} ({type(exc).__name__})") from None
    if len(data) > max_bytes:
        raise too_large(field, max_bytes)
    return data


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to a checked address while speaking HTTP to the URL's host."""

    def __init__(self, target: UrlTarget, address: str, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """The same for https: TLS with SNI and certificate checks against the URL's host."""

    def __init__(self, target: UrlTarget, address: str, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def fetch_url(url: str, policy: UrlPolicy, field: str, resolve: Resolver = system_resolver) -> bytes:
    """The body of a `{"url": ...}` item under the policy, every redirect hop checked again.

    Raises:
        SourceRefused, FetchFailed, or WorkerError IMAGE_TOO_LARGE (the body passed the cap).
    """
    deadline = time.monotonic() + policy.timeout_s
    for _hop in range(MAX_REDIRECTS + 1):
        target = check_url(url, policy, field)
        addresses = checked_addresses(target, policy, field, resolve)
        try:
            status, location, body = _get(target, addresses, policy, deadline, field)
        except TimeoutError:
            raise FetchFailed(field, f"{redact(url)} timed out (limit {policy.timeout_s:g} s)") from None
        except (OSError, http.client.HTTPException) as exc:
            raise FetchFailed(field, f"{redact(url)} failed: {type(exc).__name__} {exc}"[:300]) from None
        if status in _REDIRECTS:
            if not location:
                raise FetchFailed(field, f"{redact(url)} answered {status} without a Location")
            url = urllib.parse.urljoin(url, location)
            continue
        if status != 200:
            raise FetchFailed(field, f"{redact(url)} answered HTTP {status}")
        return body
    raise FetchFailed(field, f"more than {MAX_REDIRECTS} redirects")


def _get(
    target: UrlTarget, addresses: list[str], policy: UrlPolicy, deadline: float, field: str
) -> tuple[int, str | None, bytes]:
    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        return remaining

    connection_class = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    error: OSError | None = None
    for address in addresses:  # the first that accepts; all of them were checked
        conn = connection_class(target, address, min(policy.connect_timeout_s, left()))
        try:
            conn.connect()
            break
        except OSError as exc:
            conn.close()
            error = exc
    else:
        raise error or OSError("no address to connect to")
    # http.client drops conn.sock once the response says it will close; the body still streams
    # through this socket, whose timeout bounds every read.
    sock = conn.sock
    try:
        sock.settimeout(left())
        conn.request(
            "GET",
            target.request_path,
            headers={"User-Agent": "fastbackend-worker", "Accept": "image/*", "Accept-Encoding": "identity"},
        )
        response = conn.getresponse()
        if response.status != 200:
            return response.status, response.getheader("Location"), b""
        declared = response.getheader("Content-Length")
        if declared and declared.isdigit() and int(declared) > policy.max_bytes:
            raise too_large(field, policy.max_bytes)
        chunks, size = [], 0
        while True:
            sock.settimeout(left())
            chunk = response.read1(_CHUNK)  # Content-Length is not trusted: count what arrives
            if not chunk:
                break
            size += len(chunk)
            if size > policy.max_bytes:
                raise too_large(field, policy.max_bytes)
            chunks.append(chunk)
        return 200, None, b"".join(chunks)
    finally:
        conn.close()


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


def read_source(item: Any, field: str, config: WorkerConfig) -> bytes:
    """The bytes of one `{"url"}` or `{"path"}` item (a schema.UrlImage or schema.PathImage)."""
    url = getattr(item, "url", None)
    if url is not None:
        return fetch_url(url, url_policy(config), field)
    return read_path(item.path, config.input_root, config.max_image_bytes, field)


def read_sources(items: Sequence[Any], fields: Sequence[str], config: WorkerConfig) -> list[Any]:
    """Each item's bytes for url/path items (fetched in parallel), base64 strings unchanged.

    Raises:
        WorkerError: the first failing item's error, in item order.
    """
    wanted = [i for i, item in enumerate(items) if not isinstance(item, str)]
    if not wanted:
        return list(items)
    out = list(items)
    if len(wanted) == 1:
        out[wanted[0]] = read_source(items[wanted[0]], fields[wanted[0]], config)
        return out
    with ThreadPoolExecutor(min(MAX_PARALLEL_FETCHES, len(wanted)), thread_name_prefix="fastbackend-fetch") as pool:
        futures = {i: pool.submit(read_source, items[i], fields[i], config) for i in wanted}
        for done, i in enumerate(wanted, start=1):
            out[i] = futures[i].result()
            report(done, "fetch")  # from this (the job's) thread: the reporter is the job's
    return out
