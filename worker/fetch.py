"""One HTTP(S) GET under a real deadline, for worker/sources.py.

A socket timeout bounds one wait, not a fetch: a server sending a byte a second on its status
line, its headers, a `100 Continue` or its chunk-size lines restarts it on every byte. Here every
wait (name lookup, connect, TLS handshake, each read of status line, headers and body) is cut into
slices of at most SLICE_S, and before each slice the fetch's monotonic deadline and its job's
cancel flag are checked: a fetch ends at its deadline (within one slice), and within one slice of
its job giving up on it (another image of the job failed).

The connection goes to an address the caller has already checked (worker/source_rules.py), with
TLS (SNI, certificate checks) against the URL's host, so there is no second lookup to rebind.
"""

from __future__ import annotations

import errno
import http.client
import io
import os
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from worker.source_rules import Resolver, UrlTarget, system_resolver

SLICE_S = 0.1  # the longest one wait lasts before the deadline and the cancel flag are checked again
_DNS_THREADS = 8  # name lookups in flight at once (getaddrinfo cannot be interrupted)
_T = TypeVar("_T")


class FetchCancelled(Exception):
    """The job gave up on this fetch: another of its images failed, so its answer is known."""


class ConnectTimedOut(OSError):
    """One address did not accept within the connect timeout (the next one is tried)."""


@dataclass(frozen=True)
class FetchClock:
    """When one fetch must end (time.monotonic()), what limit that is, and its job's cancel flag."""

    end: float
    limit: str  # how messages name the limit: "limit 5 s", "the job's fetch limit 30 s"
    cancel: threading.Event = field(default_factory=threading.Event)

    def next_wait(self) -> float:
        """The length of the next wait: at most SLICE_S and what is left.

        Raises:
            FetchCancelled: the job has given up. TimeoutError: the deadline has passed.
        """
        if self.cancel.is_set():
            raise FetchCancelled
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return min(left, SLICE_S)

    def left(self) -> float:
        """Seconds until the deadline (raises as next_wait does)."""
        self.next_wait()
        return self.end - time.monotonic()


def in_slices(clock: FetchClock, sock: socket.socket, step: Callable[[], _T]) -> _T:
    """`step()` (a blocking call on `sock` that is safe to repeat after a timeout: recv, a TLS
    handshake), one slice at a time, until it completes or the clock says stop."""
    while True:
        sock.settimeout(clock.next_wait())
        try:
            return step()
        except TimeoutError:  # socket.timeout: nothing arrived in this slice; check the clock again
            continue


_resolvers: ThreadPoolExecutor | None = None
_resolvers_lock = threading.Lock()


def resolve_in_time(clock: FetchClock, resolve: Resolver = system_resolver) -> Resolver:
    """`resolve` bounded by the clock: the lookup runs on a small pool (getaddrinfo has no timeout
    and cannot be interrupted; a stuck one keeps its pool thread, never the job)."""

    def bounded(host: str, port: int) -> list[str]:
        global _resolvers
        with _resolvers_lock:
            if _resolvers is None:
                _resolvers = ThreadPoolExecutor(_DNS_THREADS, thread_name_prefix="fastbackend-dns")
        future = _resolvers.submit(resolve, host, port)
        try:
            while True:
                wait = clock.next_wait()  # raises at the deadline (or the job's cancel)
                try:
                    return future.result(timeout=wait)
                except TimeoutError:
                    if future.done():  # the resolver's own TimeoutError, not the wait's
                        raise
        finally:
            future.cancel()  # not started yet: never starts

    return bounded


def _connect(address: str, port: int, clock: FetchClock, connect_end: float) -> socket.socket:
    """A TCP connection to `address`, a non-blocking connect polled slice by slice.

    Raises:
        ConnectTimedOut at `connect_end`; TimeoutError or FetchCancelled from the clock; OSError.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        error = sock.connect_ex((address, port))
        if error not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
            raise OSError(error, os.strerror(error))
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_WRITE)
            while error:
                wait = min(clock.next_wait(), connect_end - time.monotonic())
                if wait <= 0:
                    raise ConnectTimedOut(f"no connection to {address} within the connect timeout")
                if selector.select(wait):
                    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if error:
                        raise OSError(error, os.strerror(error))
                    break
        sock.setblocking(True)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    except BaseException:
        sock.close()
        raise


_tls_context: ssl.SSLContext | None = None


def _tls(sock: socket.socket, host: str, clock: FetchClock) -> ssl.SSLSocket:
    global _tls_context
    if _tls_context is None:  # loading the system's CA store costs milliseconds: once per process
        _tls_context = ssl.create_default_context()
    tls = _tls_context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
    in_slices(clock, tls, tls.do_handshake)
    return tls


class _ClockedReader(io.RawIOBase):
    """The response side of the socket: every read waits in slices, under the fetch's clock."""

    def __init__(self, sock: socket.socket, clock: FetchClock) -> None:
        self._sock, self._clock = sock, clock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return in_slices(self._clock, self._sock, lambda: self._sock.recv_into(buffer))


class _ClockedSocket:
    """What http.client is given as its connection's socket: reads through _ClockedReader, the
    (small) request sent with what is left of the deadline."""

    def __init__(self, sock: socket.socket, clock: FetchClock) -> None:
        self._sock, self._clock = sock, clock

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_ClockedReader(self._sock, self._clock))

    def sendall(self, data: bytes) -> None:
        self._sock.settimeout(self._clock.left())
        self._sock.sendall(data)

    def close(self) -> None:
        """Nothing: http.client closes its connection as soon as a response says it will close,
        while the body still streams through this socket; open_response's caller closes it."""


def open_response(
    target: UrlTarget, addresses: list[str], connect_timeout_s: float, clock: FetchClock
) -> tuple[http.client.HTTPResponse, Callable[[], None]]:
    """Send the GET to the first of `addresses` that accepts; the response (headers read) and a
    function that closes the connection. Every read of the response, body included, is clocked.

    Raises:
        TimeoutError, FetchCancelled, OSError, http.client.HTTPException.
    """
    error: OSError | None = None
    for address in addresses:  # the first that accepts; all of them were checked
        try:
            sock = _connect(address, target.port, clock, time.monotonic() + connect_timeout_s)
            break
        except TimeoutError:  # the fetch's own deadline (ConnectTimedOut is not one)
            raise
        except OSError as exc:
            error = exc
    else:
        raise error or OSError("no address to connect to")
    try:
        if target.scheme == "https":
            sock = _tls(sock, target.host, clock)
        connection_class = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
        conn = connection_class(target.host, target.port)  # its Host header; never its own connect
        conn.sock = _ClockedSocket(sock, clock)
        conn.request(
            "GET",
            target.request_path,
            headers={"User-Agent": "fastbackend-worker", "Accept": "image/*", "Accept-Encoding": "identity"},
        )
        response = conn.getresponse()
    except BaseException:
        sock.close()
        raise
    # http.client drops conn.sock once the response says it will close; the body still streams
    # through the response's clocked reader, and this closes the socket itself.
    return response, sock.close
