"""Image sources besides base64: `{"url": ...}` fetched under the operator's rules and
`{"path": ...}` read under FASTBACKEND_INPUT_ROOT. Both are off until the operator opts in.

What comes out is the file's bytes, which then go through the same decoding and caps as a
base64 image. The rules, each checked where it can be (pure functions, unit-tested):

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
import ipaddress
import os
import re
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from worker.errors import ErrorCode, WorkerError
from worker.progress import report

if TYPE_CHECKING:
    from worker.config import WorkerConfig

MAX_REDIRECTS = 3
MAX_PARALLEL_FETCHES = 8  # URLs of one job fetched at once
_CHUNK = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$"
)
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class SourceRefused(WorkerError):
    """The operator's rules refuse this source (host, scheme, address, path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(ErrorCode.IMAGE_SOURCE_NOT_ALLOWED, f"{field}: {message}", field=field)


class FetchFailed(WorkerError):
    """The source is allowed but could not be read (network, HTTP status, timeout, missing file)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(ErrorCode.IMAGE_FETCH_FAILED, f"{field}: {message}", field=field)


# -- pure rules --------------------------------------------------------------------------
def parse_host_pattern(raw: str) -> str:
    """An allowlist entry, normalised: `images.example.com`, `*.example.com` or an IP literal.

    Raises:
        ValueError: anything else (a bare `*`, a URL, a port, a path); names the entry.
    """
    pattern = raw.strip().lower().rstrip(".")
    name = pattern[2:] if pattern.startswith("*.") else pattern
    try:
        literal = str(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        literal = None
    if literal is not None and not pattern.startswith("*."):
        return literal
    if literal is not None or not _HOSTNAME.match(name) or (pattern.startswith("*.") and "." not in name):
        raise ValueError(
            f"url_allowlist entry {raw!r} is not a host name or *.suffix (e.g. images.example.com, *.example.com)"
        )
    return pattern


def parse_network(raw: str) -> IpNetwork:
    """An allowed network such as `127.0.0.0/8` or `10.1.2.3` (one address).

    Raises:
        ValueError: not an address or CIDR; names the entry.
    """
    try:
        return ipaddress.ip_network(raw.strip(), strict=False)
    except ValueError:
        raise ValueError(f"url_allow_networks entry {raw!r} is not an IP network (e.g. 127.0.0.0/8)") from None


def host_allowed(host: str, allowlist: Sequence[str]) -> bool:
    """True when `host` is an allowlist entry or a subdomain of a `*.suffix` entry."""
    host = host.lower().rstrip(".")
    for entry in allowlist:
        pattern = parse_host_pattern(entry)
        if pattern.startswith("*.") and host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
            return True
        if host == pattern:
            return True
    return False


def address_refusal(address: str | IpAddress, allowed: Sequence[IpNetwork] = ()) -> str | None:
    """Why `address` may not be fetched from (None when it may): a non-public address
    outside the explicitly allowed networks."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if any(ip.version == net.version and ip in net for net in allowed):
        return None
    for kind in ("loopback", "link_local", "multicast", "unspecified", "private", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if ip.is_global else "not public"


@dataclass(frozen=True)
class UrlTarget:
    scheme: str
    host: str
    port: int
    request_path: str  # path and query, as sent


@dataclass(frozen=True)
class UrlPolicy:
    """The operator's URL rules, from the worker config."""

    allowlist: tuple[str, ...] = ()
    allow_http: bool = False
    allowed_networks: tuple[IpNetwork, ...] = ()
    connect_timeout_s: float = 3.0
    timeout_s: float = 15.0
    max_bytes: int = 8_000_000

    @classmethod
    def from_config(cls, config: WorkerConfig) -> UrlPolicy:
        return cls(
            tuple(parse_host_pattern(p) for p in config.url_allowlist),
            config.url_allow_http,
            tuple(parse_network(n) for n in config.url_allow_networks),
            config.url_connect_timeout_ms / 1000,
            config.url_timeout_ms / 1000,
            config.max_image_bytes,
        )


def redact(url: str) -> str:
    """A URL as it may appear in messages: no credentials, no query or fragment, short."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "?"
        shown = f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"
    except ValueError:
        shown = "(unparsable URL)"
    return shown if len(shown) <= 120 else shown[:117] + "..."


def check_url(url: str, policy: UrlPolicy, field: str) -> UrlTarget:
    """The scheme, host and port rules for one URL (no network).

    Raises:
        SourceRefused: URL sources are off, or the URL breaks a rule.
    """
    if not policy.allowlist:
        raise SourceRefused(field, "url sources are off on this worker (the operator lists hosts in URL_ALLOWLIST)")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise SourceRefused(field, "not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or (scheme == "http" and not policy.allow_http):
        allowed = "https or http" if policy.allow_http else "https only"
        raise SourceRefused(field, f"scheme {scheme or '(none)'!r} refused ({allowed})")
    if parts.username is not None or parts.password is not None:
        raise SourceRefused(field, "credentials in the URL are refused")
    host = (parts.hostname or "").lower()
    if not host:
        raise SourceRefused(field, "URL has no host")
    if not host_allowed(host, policy.allowlist):
        raise SourceRefused(field, f"host {host!r} is not in the worker's URL allowlist")
    path = parts.path or "/"
    return UrlTarget(
        scheme, host, port or (443 if scheme == "https" else 80), path + (f"?{parts.query}" if parts.query else "")
    )


Resolver = Callable[[str, int], list[str]]


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def checked_addresses(
    target: UrlTarget, policy: UrlPolicy, field: str, resolve: Resolver = _system_resolver
) -> list[str]:
    """Every address the host resolves to, each allowed; the connection uses only these.

    Raises:
        SourceRefused: one of the addresses is refused (so a name cannot mix a public and a
            private answer). FetchFailed: the name does not resolve.
    """
    try:
        addresses = [str(ipaddress.ip_address(target.host))]
    except ValueError:
        try:
            addresses = resolve(target.host, target.port)
        except (OSError, UnicodeError) as exc:
            raise FetchFailed(field, f"cannot resolve {target.host!r} ({exc})") from None
    if not addresses:
        raise FetchFailed(field, f"{target.host!r} has no address")
    for address in addresses:
        reason = address_refusal(address, policy.allowed_networks)
        if reason:
            raise SourceRefused(field, f"host {target.host!r} resolves to a {reason} address ({address}); refused")
    return addresses


def resolve_input_path(raw: str, root: str, field: str) -> Path:
    """The real path of a `{"path": ...}` item: under the input root, after symlinks.

    Raises:
        SourceRefused: path sources are off, `..` appears, or the path (or a symlink in it)
            leads outside the root. FetchFailed: no such file, or not a regular file.
    """
    if not root:
        raise SourceRefused(field, "path sources are off on this worker (the operator sets INPUT_ROOT)")
    if "\x00" in raw or not raw.strip():
        raise SourceRefused(field, "not a valid path")
    pure = PurePosixPath(raw)
    if ".." in pure.parts:
        raise SourceRefused(field, "'..' is not allowed in a path")
    root_path = Path(os.path.abspath(root))
    candidate = Path(os.path.abspath(pure)) if pure.is_absolute() else root_path / pure
    if not candidate.is_relative_to(root_path):
        raise SourceRefused(field, f"{raw!r} is outside the input root {root_path}")
    try:
        real = candidate.resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise FetchFailed(field, f"no such file {raw!r} under the input root") from None
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise FetchFailed(field, f"cannot read {raw!r} ({type(exc).__name__})") from None
    if not real.is_relative_to(root_path.resolve()):
        raise SourceRefused(field, f"{raw!r} leads outside the input root (a symlink); refused")
    if not real.is_file():
        raise FetchFailed(field, f"{raw!r} is not a regular file")
    return real


# -- reading -------------------------------------------------------------------------------
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


def fetch_url(url: str, policy: UrlPolicy, field: str, resolve: Resolver = _system_resolver) -> bytes:
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


def read_source(item: Any, field: str, config: WorkerConfig) -> bytes:
    """The bytes of one `{"url"}` or `{"path"}` item (a schema.UrlImage or schema.PathImage)."""
    url = getattr(item, "url", None)
    if url is not None:
        return fetch_url(url, UrlPolicy.from_config(config), field)
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
