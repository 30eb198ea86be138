"""The rules for image sources besides base64 (worker/sources.py reads them): which URLs, hosts,
addresses and paths the operator allows. Pure functions (no network), unit-tested in tests/unit/.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from worker.errors import ErrorCode, WorkerError

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


class InvalidSource(WorkerError):
    """The item itself is malformed (a URL with a space, a path that is not text): the client's
    mistake, the same on every worker, so never worth a retry."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(ErrorCode.INVALID_INPUT, f"{field}: {message}", field=field)


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
    """The operator's URL rules (sources.url_policy builds them from the worker config)."""

    allowlist: tuple[str, ...] = ()
    allow_http: bool = False
    allowed_networks: tuple[IpNetwork, ...] = ()
    connect_timeout_s: float = 3.0
    timeout_s: float = 15.0
    max_bytes: int = 8_000_000


_UNSENDABLE = re.compile(r"[\x00-\x20\x7f]")  # controls, space, DEL: never raw in a request line
_CHARACTER_NAMES = {" ": "a space", "\r": "a carriage return", "\n": "a line feed", "\t": "a tab", "\x7f": "a DEL"}


def redact(url: str) -> str:
    """A URL as it may appear in messages: no credentials, no query or fragment, no raw control
    characters, short."""
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    # The query goes before anything parses the URL; raw controls are shown escaped (urlsplit drops some).
    visible = _UNSENDABLE.sub(lambda m: "%20" if m.group() == " " else repr(m.group())[1:-1], url[:cut])
    try:
        parts = urllib.parse.urlsplit(visible)
        host = parts.hostname or "?"
        shown = f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"
    except ValueError:
        shown = "(unparsable URL)"
    return shown if len(shown) <= 120 else shown[:117] + "..."


def url_syntax_problem(url: str) -> str | None:
    """What makes `url` unsendable as it is (None when nothing): a character a request line cannot
    hold raw. Says where (path, query string) without echoing any of it: the query may be a
    signature."""
    position, what = None, ""
    if not url.isascii():
        position = next(i for i, ch in enumerate(url) if not ch.isascii())
        what = "a non-ASCII character"
        advice = "percent-encode its UTF-8 bytes (é is %C3%A9)"
    if (match := _UNSENDABLE.search(url)) is not None and (position is None or match.start() < position):
        character = match.group()
        position, what = match.start(), _CHARACTER_NAMES.get(character, f"control character {ord(character):#04x}")
        advice = "percent-encode it (a space is %20)"
    if position is None:
        return None
    head = url[:position]
    in_path = "/" in head.partition("://")[2]
    part = "fragment" if "#" in head else "query string" if "?" in head else "path" if in_path else "host"
    return f"the URL holds {what} in its {part} (character {position + 1}); {advice}"


def check_url(url: str, policy: UrlPolicy, field: str) -> UrlTarget:
    """The scheme, host and port rules for one URL (no network).

    Raises:
        SourceRefused: URL sources are off, or the URL breaks a rule.
    """
    if not policy.allowlist:
        raise SourceRefused(field, "url sources are off on this worker (the operator lists hosts in URL_ALLOWLIST)")
    problem = url_syntax_problem(url)
    if problem:  # checked on the raw text: urlsplit silently drops tabs and line breaks
        raise InvalidSource(field, problem)
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


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def checked_addresses(
    target: UrlTarget, policy: UrlPolicy, field: str, resolve: Resolver = system_resolver
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
        except TimeoutError:  # the fetch's deadline, which its caller reports
            raise
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
    except UnicodeError:  # a lone surrogate from JSON: no file system name can hold it
        raise InvalidSource(field, "the path is not valid text (a lone UTF-16 surrogate)") from None
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise FetchFailed(field, f"cannot read {raw!r} ({type(exc).__name__})") from None
    if not real.is_relative_to(root_path.resolve()):
        raise SourceRefused(field, f"{raw!r} leads outside the input root (a symlink); refused")
    if not real.is_file():
        raise FetchFailed(field, f"{raw!r} is not a regular file")
    return real
