"""A URL fetch ends at its deadline whatever the server does: trickling its status line, its
headers, `100 Continue` answers, chunk-size lines or its body a byte a second, staying silent in
the TLS handshake, or a name lookup that does not answer. Real loopback servers
(tests/fixtures/trickle.py), the real fetch code, no model."""

from __future__ import annotations

import time

import pytest
from fixtures.trickle import TrickleServer

from worker.errors import ErrorCode, WorkerError
from worker.source_rules import UrlPolicy, parse_network
from worker.sources import JobSources, fetch_url

LIMIT_S = 2.0
TOLERANCE_S = 0.5  # the bound: cut at the configured limit, plus or minus half a second
POLICY = UrlPolicy(
    allowlist=("127.0.0.1", "slow-dns.test"),
    allow_http=True,
    allowed_networks=(parse_network("127.0.0.0/8"),),
    connect_timeout_s=1.0,
    timeout_s=LIMIT_S,
    max_bytes=1_000_000,
)
OK = b"HTTP/1.1 200 OK\r\n"
PAD = b"x" * 40  # at a byte a second, far longer than the limit

TRICKLES = {
    "status line": (b"", OK + b"Content-Length: 1\r\n\r\nx"),
    "headers": (OK, b"X-Pad: " + PAD + b"\r\n\r\n"),
    "100 Continue": (b"", b"HTTP/1.1 100 Continue\r\n\r\n" * 4),
    "chunk-size lines": (OK + b"Transfer-Encoding: chunked\r\n\r\n", b"1\r\nx\r\n" * 10),
    "body": (OK + b"Content-Length: 100\r\n\r\n", PAD),
}


def timed_fetch(url: str, policy: UrlPolicy = POLICY, **kwargs) -> tuple[WorkerError, float]:
    start = time.monotonic()
    with pytest.raises(WorkerError) as caught:
        fetch_url(url, policy, "images[0]", JobSources(60, 10**8), **kwargs)
    return caught.value, time.monotonic() - start


def assert_cut_at_the_limit(error: WorkerError, elapsed: float) -> None:
    print(f"cut after {elapsed:.3f} s under a {LIMIT_S:g} s limit")
    assert error.code is ErrorCode.IMAGE_FETCH_FAILED, error
    assert f"timed out (limit {LIMIT_S:g} s)" in error.message, error.message
    assert abs(elapsed - LIMIT_S) <= TOLERANCE_S, f"cut after {elapsed:.2f} s under a {LIMIT_S:g} s limit"


@pytest.mark.parametrize("where", list(TRICKLES))
def test_a_byte_a_second_is_cut_at_the_limit(where):
    fast, slow = TRICKLES[where]
    server = TrickleServer(fast, slow, interval_s=1.0)
    try:
        assert_cut_at_the_limit(*timed_fetch(server.url("/x.png?X-Amz-Signature=SECRET")))
    finally:
        server.close()


def test_a_silent_tls_handshake_is_cut_at_the_limit():
    server = TrickleServer(b"", b"")
    try:
        assert_cut_at_the_limit(*timed_fetch(server.url(scheme="https")))
    finally:
        server.close()


def test_a_name_lookup_that_does_not_answer_is_cut_at_the_limit():
    def stuck_resolver(host: str, port: int) -> list[str]:
        time.sleep(LIMIT_S + 2)  # a resolver whose server never answers: getaddrinfo blocks this long
        return ["127.0.0.1"]

    assert_cut_at_the_limit(*timed_fetch("http://slow-dns.test/x.png", resolve=stuck_resolver))


def test_a_fast_server_is_not_cut():
    server = TrickleServer(OK + b"Content-Length: 3\r\n\r\n", b"abc", interval_s=0.3)
    try:
        assert fetch_url(server.url(), POLICY, "images[0]", JobSources(60, 10**8)) == b"abc"
    finally:
        server.close()
