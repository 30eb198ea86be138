"""Images by URL and by path through the real handler, against a loopback HTTP server this test starts.

The worker is allowed loopback (FASTBACKEND_URL_ALLOW_NETWORKS=127.0.0.0/8) and http for the test;
every fetch targets 127.0.0.1 only. Each refusal must come back as its code, naming the item, in
bounded time, and the worker must serve the next job.
"""

from __future__ import annotations

import base64
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import digit

from worker.errors import ErrorCode

CAP = 200_000  # the image byte cap of the test worker


class Site:
    """Routes of the loopback server: a digit PNG, redirects, an oversized body, a stall."""

    def __init__(self, png: bytes) -> None:
        self.png = png
        self.release = threading.Event()  # ends stalled responses at teardown
        self.hits: list[str] = []
        self.port = 0

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def respond(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path
        self.hits.append(path)
        if path.startswith("/digit.png"):
            self._send(handler, 200, self.png, {"Content-Type": "image/png"})
        elif path == "/to-allowed":
            self._send(handler, 302, b"", {"Location": "/digit.png"})
        elif path == "/to-other-host":
            self._send(handler, 302, b"", {"Location": self.url("/digit.png", host="localhost")})
        elif path == "/loop":
            self._send(handler, 302, b"", {"Location": "/loop"})
        elif path == "/declared-big":  # says so up front: refused before reading
            handler.send_response(200)
            handler.send_header("Content-Length", str(CAP + 1))
            handler.end_headers()
            handler.close_connection = True
        elif path == "/big":  # no length (the body ends when the connection closes), past the cap
            handler.send_response(200)
            handler.end_headers()
            try:
                for _ in range(CAP // 65536 + 3):
                    handler.wfile.write(b"\0" * 65536)
            except OSError:
                pass  # the worker hung up at the cap, as it should
            handler.close_connection = True
        elif path == "/stall":  # headers, then nothing
            handler.send_response(200)
            handler.send_header("Content-Length", "5000")
            handler.end_headers()
            handler.wfile.flush()
            self.release.wait(30)
        else:
            self._send(handler, 404, b"not found", {})

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, code: int, body: bytes, headers: dict[str, str]) -> None:
        handler.send_response(code)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(body)


@pytest.fixture(scope="module")
def image():
    encoded, label = digit("digits", 3)
    return base64.b64decode(encoded), str(label)


@pytest.fixture(scope="module")
def site(image):
    site = Site(image[0])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            site.respond(self)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    site.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield site
    site.release.set()
    server.shutdown()


@pytest.fixture(scope="module")
def volume(tmp_path_factory, image):
    base = tmp_path_factory.mktemp("sources")
    root = base / "volume"
    (root / "data").mkdir(parents=True)
    (root / "data" / "three.png").write_bytes(image[0])
    (base / "outside.png").write_bytes(image[0])
    (root / "data" / "escape.png").symlink_to(base / "outside.png")
    return root


@pytest.fixture(scope="module")
def open_worker(make_worker, volume):
    """Allows 127.0.0.1 over http on loopback, and paths under the test volume."""
    return make_worker(
        url_allowlist=("127.0.0.1",),
        url_allow_http=True,
        url_allow_networks=("127.0.0.0/8",),
        url_connect_timeout_ms=1000,
        url_timeout_ms=1500,
        max_image_bytes=CAP,
        input_root=str(volume),
    )


def predict(worker, *images) -> tuple[dict, float]:
    start = time.monotonic()
    answer = worker.handle({"id": "src", "input": {"images": list(images), "top_k": 1}})
    return answer, time.monotonic() - start


def assert_refused(answer: dict, code: ErrorCode, field: str, fragment: str) -> None:
    assert answer["status"] == "error" and answer["code"] == code.value, answer
    assert answer["field"] == field and answer["error"].startswith(f"{code.value}: {field}: "), answer
    assert fragment in answer["message"], answer["message"]


def test_an_allowed_url_and_a_path_predict_like_base64(open_worker, site, image):
    b64 = base64.b64encode(image[0]).decode()
    answer, _ = predict(open_worker, b64, {"url": site.url("/digit.png?sig=1")}, {"path": "data/three.png"})
    assert answer["status"] == "success", answer
    labels = [p["label"] for p in answer["predictions"]]
    assert labels == [image[1]] * 3
    assert len({p["score"] for p in answer["predictions"]}) == 1  # the same bytes, the same scores


def test_a_redirect_to_an_allowed_url_is_followed(open_worker, site, image):
    answer, _ = predict(open_worker, {"url": site.url("/to-allowed")})
    assert answer["status"] == "success" and answer["predictions"][0]["label"] == image[1]


@pytest.mark.parametrize(
    "path_or_url, code, fragment",
    [
        ("http://localhost:{port}/digit.png", ErrorCode.IMAGE_SOURCE_NOT_ALLOWED, "'localhost' is not in"),
        ("/to-other-host", ErrorCode.IMAGE_SOURCE_NOT_ALLOWED, "'localhost' is not in"),
        ("/loop", ErrorCode.IMAGE_FETCH_FAILED, "more than 3 redirects"),
        ("/big", ErrorCode.IMAGE_TOO_LARGE, f"over {CAP:,} bytes"),
        ("/declared-big", ErrorCode.IMAGE_TOO_LARGE, f"over {CAP:,} bytes"),
        ("/stall", ErrorCode.IMAGE_FETCH_FAILED, "timed out (limit 1.5 s)"),
        ("/missing.png", ErrorCode.IMAGE_FETCH_FAILED, "answered HTTP 404"),
        ("http://10.255.255.1/x.png", ErrorCode.IMAGE_SOURCE_NOT_ALLOWED, "not in"),
        ("https://127.0.0.1:{port}/digit.png", ErrorCode.IMAGE_FETCH_FAILED, "SSL"),  # the server speaks no TLS
    ],
)
def test_refused_urls_answer_their_code_in_bounded_time(open_worker, site, image, path_or_url, code, fragment):
    url = path_or_url.format(port=site.port) if "://" in path_or_url else site.url(path_or_url)
    answer, elapsed = predict(open_worker, base64.b64encode(image[0]).decode(), {"url": url})
    assert_refused(answer, code, "images[1]", fragment)
    assert "sig=" not in answer["message"]
    assert elapsed < 5, f"{path_or_url}: answered after {elapsed:.1f} s"
    after = predict(open_worker, {"url": site.url("/digit.png")})[0]
    assert after["status"] == "success", after


def test_private_and_loopback_addresses_are_refused_unless_allowed(make_worker, site):
    strict = make_worker(url_allowlist=("127.0.0.1", "10.255.255.1"), url_allow_http=True, url_connect_timeout_ms=500)
    for url, reason in ((site.url("/digit.png"), "loopback"), ("http://10.255.255.1/x.png", "private")):
        hits = len(site.hits)
        answer, elapsed = predict(strict, {"url": url})
        assert_refused(answer, ErrorCode.IMAGE_SOURCE_NOT_ALLOWED, "images[0]", f"a {reason} address")
        assert elapsed < 2 and len(site.hits) == hits, "refused before connecting"


def test_https_only_and_sources_off_by_default(make_worker, worker, site, volume):
    https_only = make_worker(url_allowlist=("127.0.0.1",), url_allow_networks=("127.0.0.0/8",))
    assert_refused(
        predict(https_only, {"url": site.url("/digit.png")})[0],
        ErrorCode.IMAGE_SOURCE_NOT_ALLOWED,
        "images[0]",
        "'http' refused (https only)",
    )
    assert_refused(
        predict(worker, {"url": site.url("/digit.png")})[0],
        ErrorCode.IMAGE_SOURCE_NOT_ALLOWED,
        "images[0]",
        "url sources are off",
    )
    assert_refused(
        predict(worker, {"path": str(volume / "data" / "three.png")})[0],
        ErrorCode.IMAGE_SOURCE_NOT_ALLOWED,
        "images[0]",
        "path sources are off",
    )


@pytest.mark.parametrize(
    "path, code, fragment",
    [
        ("../outside.png", ErrorCode.IMAGE_SOURCE_NOT_ALLOWED, "'..' is not allowed"),
        ("data/escape.png", ErrorCode.IMAGE_SOURCE_NOT_ALLOWED, "(a symlink)"),
        ("/etc/hostname", ErrorCode.IMAGE_SOURCE_NOT_ALLOWED, "outside the input root"),
        ("data/nope.png", ErrorCode.IMAGE_FETCH_FAILED, "no such file"),
    ],
)
def test_paths_outside_the_root_are_refused(open_worker, path, code, fragment):
    answer, _ = predict(open_worker, {"path": "data/three.png"}, {"path": path})
    assert_refused(answer, code, "images[1]", fragment)


def test_a_path_file_over_the_cap_is_too_large(open_worker, volume):
    (volume / "data" / "huge.png").write_bytes(b"\x89PNG" + bytes(CAP))
    assert_refused(predict(open_worker, {"path": "data/huge.png"})[0], ErrorCode.IMAGE_TOO_LARGE, "images[0]", "over")
