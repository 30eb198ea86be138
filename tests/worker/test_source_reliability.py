"""Issue 24's URL and path reproducers through the real handler, against a loopback server:
secrets never in an answer, a client's malformed URL or path coded INVALID_INPUT (never
INTERNAL), a job's fetches bounded and stopped together, source bytes budgeted, a FIFO never
waited on, and waiting on the network holding no CPU slot."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import digit

from worker.errors import ErrorCode
from worker.sources import JobSources, read_checked_file

SECRET = "X-Amz-Signature=SECRET0123"


class Site:
    """/digit.png, /missing (404), /stall (headers, then nothing), /slow (the digit after 1 s),
    /half (half a declared body, then nothing), /bad-location/<kind> (a redirect the client cannot send)."""

    LOCATIONS = {
        "space": f"/a b.png?{SECRET}",
        "crlf": f"/a\r\nb.png?{SECRET}",
        "del": f"/a\x7fb.png?{SECRET}",
        "non-ascii": f"/d\xe9.png?{SECRET}",
    }

    def __init__(self, png: bytes) -> None:
        self.png = png
        self.release = threading.Event()
        self.failed_at: list[float] = []  # time.monotonic() of each 404 sent
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def respond(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path
        if path.startswith("/digit.png"):
            self._send(handler, 200, self.png)
        elif path.startswith("/slow"):
            self.release.wait(1.0)
            self._send(handler, 200, self.png)
        elif path.startswith("/stall"):
            handler.send_response(200)
            handler.send_header("Content-Length", "5000")
            handler.end_headers()
            handler.wfile.flush()
            self.release.wait(30)
        elif path.startswith("/half"):
            handler.send_response(200)
            handler.send_header("Content-Length", "190000")
            handler.end_headers()
            handler.wfile.write(b"\0" * 150_000)
            handler.wfile.flush()
            self.release.wait(30)
        elif path.startswith("/bad-location/"):
            handler.send_response(302)
            handler.send_header("Location", self.LOCATIONS[path.split("?")[0].rsplit("/", 1)[1]])
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        else:
            self._send(handler, 404, b"not found")
            self.failed_at.append(time.monotonic())

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, code: int, body: bytes) -> None:
        handler.send_response(code)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


@pytest.fixture(scope="module")
def png() -> bytes:
    return base64.b64decode(digit("digits", 3)[0])


@pytest.fixture(scope="module")
def site(png):
    site = Site(png)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            site.respond(self)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 128  # a job opens 8 connections at once: the default backlog of 5 drops some

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    site.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield site
    site.release.set()
    server.shutdown()


@pytest.fixture(scope="module")
def volume(tmp_path_factory, png):
    root = tmp_path_factory.mktemp("reliability")
    (root / "d\xe9.png").write_bytes(png)
    (root / "three.png").write_bytes(png)
    (root / "junk.bin").write_bytes(b"\0" * 100_000)
    os.mkfifo(root / "pipe.png")
    return root


SOURCES = dict(
    url_allowlist=("127.0.0.1",),
    url_allow_http=True,
    url_allow_networks=("127.0.0.0/8",),
    url_connect_timeout_ms=3000,  # not under test here: a loaded machine accepts late
    url_timeout_ms=1500,
    max_image_bytes=200_000,
)


@pytest.fixture(scope="module")
def open_worker(make_worker, volume):
    return make_worker(**SOURCES, input_root=str(volume), max_job_source_bytes=200_000, max_worker_source_bytes=200_000)


def predict(worker, *images) -> tuple[dict, float]:
    start = time.monotonic()
    answer = worker.handle({"id": "rel", "input": {"images": list(images), "top_k": 1}})
    return answer, time.monotonic() - start


def assert_error(answer: dict, code: ErrorCode, field: str, fragment: str) -> None:
    assert answer["status"] == "error" and answer["code"] == code.value, answer
    assert answer.get("field") == field, answer
    assert fragment in answer["message"], answer["message"]
    assert "SECRET" not in json.dumps(answer), answer


# -- 2 and 8: a client's malformed URL or path is INVALID_INPUT, its secret never shown -------------
@pytest.mark.parametrize(
    "path, fragment",
    [
        (f"/a b.png?{SECRET}", "a space in its path (character 25)"),
        (f"/a\r\nb.png?{SECRET}", "a carriage return in its path"),
        (f"/a\tb.png?{SECRET}", "a tab in its path"),
        (f"/a\x7fb.png?{SECRET}", "a DEL in its path"),
        (f"/d\xe9.png?{SECRET}", "a non-ASCII character in its path"),
        (f"/digit.png?{SECRET}&x=a b", "a space in its query string"),
        (f"/digit.png?{SECRET}&x=\xe9", "a non-ASCII character in its query string"),
    ],
)
def test_an_unsendable_url_is_the_clients_mistake_and_keeps_its_secret(open_worker, site, path, fragment):
    answer, _ = predict(open_worker, {"url": site.url("/digit.png")}, {"url": site.url(path)})
    assert_error(answer, ErrorCode.INVALID_INPUT, "images[1]", fragment)
    assert "percent-encode" in answer["message"]


@pytest.mark.parametrize("kind", list(Site.LOCATIONS))
def test_a_redirect_to_an_unsendable_url_is_a_fetch_failure_and_keeps_its_secret(open_worker, site, kind):
    answer, _ = predict(open_worker, {"url": site.url(f"/bad-location/{kind}?{SECRET}")})
    assert answer["code"] != ErrorCode.INTERNAL.value
    assert_error(answer, ErrorCode(answer["code"]), "images[0]", "")
    if kind != "crlf":  # a raw line break ends the header: http.client reads Location as "/a"
        assert_error(answer, ErrorCode.IMAGE_FETCH_FAILED, "images[0]", "redirected to a URL that cannot be sent")


def test_a_non_ascii_file_name_is_read_and_a_lone_surrogate_is_invalid_input(open_worker):
    answer, _ = predict(open_worker, {"path": "d\xe9.png"})
    assert answer["status"] == "success", answer
    answer, _ = predict(open_worker, {"path": "d\ud800.png"})
    assert_error(answer, ErrorCode.INVALID_INPUT, "images[0].path", "valid string")


# -- 9: a FIFO is never waited on -------------------------------------------------------------------
def test_a_fifo_is_refused_at_open_without_blocking(open_worker, volume):
    """read_checked_file is what runs after the path rules passed: a path swapped for a FIFO in
    between reaches it. On a thread, so that a blocking open fails the test instead of hanging it."""
    outcome: list[Any] = []

    def read() -> None:
        try:
            read_checked_file(volume / "pipe.png", "pipe.png", 200_000, "images[0]", JobSources(5, 10**6))
        except Exception as exc:  # the outcome under test
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(2)
    if reader.is_alive():
        with open(volume / "pipe.png", "wb"):  # let the blocked open return, so the thread can end
            pass
        pytest.fail("opening a FIFO blocked")
    assert outcome and getattr(outcome[0], "code", None) is ErrorCode.IMAGE_FETCH_FAILED, outcome
    assert "not a regular file" in outcome[0].message
    assert_error(predict(open_worker, {"path": "pipe.png"})[0], ErrorCode.IMAGE_FETCH_FAILED, "images[0]", "regular")


# -- 5: a job's fetches are bounded together, and stopped at its first failure --------------------
def test_a_64_url_job_whose_first_url_fails_answers_at_once(open_worker, site):
    images = [{"url": site.url("/missing.png")}] + [{"url": site.url(f"/stall?{i}")} for i in range(63)]
    answer, elapsed = predict(open_worker, *images)
    answered = time.monotonic()
    assert_error(answer, ErrorCode.IMAGE_FETCH_FAILED, "images[0]", "answered HTTP 404")
    latency = answered - site.failed_at[-1]
    print(f"64-URL job: answered {latency * 1000:.0f} ms after its first URL's 404 (job {elapsed:.2f} s)")
    assert latency < 1.0, f"answered {latency:.2f} s after the first failure"


def test_a_jobs_fetches_share_one_deadline(make_worker, site):
    worker = make_worker(**{**SOURCES, "url_timeout_ms": 4000}, url_job_timeout_ms=1500)
    # 16 fetches of 1 s each (each under its own 4 s limit), 8 at a time: the second eight would end
    # at 2 s, past the job's 1.5 s.
    answer, elapsed = predict(worker, *[{"url": site.url(f"/slow?{i}")} for i in range(16)])
    assert_error(answer, ErrorCode.IMAGE_FETCH_FAILED, answer.get("field", ""), "the job's limit of 1.5 s")
    assert abs(elapsed - 1.5) <= 0.5, f"answered after {elapsed:.2f} s under a 1.5 s job limit"


# -- 7: source bytes are budgeted per job and per worker -------------------------------------------
def test_a_jobs_source_bytes_are_budgeted(make_worker, volume, png):
    worker = make_worker(
        **{**SOURCES, "max_image_bytes": len(png)}, input_root=str(volume), max_job_source_bytes=len(png) * 2
    )
    assert predict(worker, {"path": "three.png"}, {"path": "three.png"})[0]["status"] == "success"
    answer, _ = predict(worker, *[{"path": "three.png"}] * 3)
    assert_error(answer, ErrorCode.IMAGE_TOO_LARGE, "images", "FASTBACKEND_MAX_JOB_SOURCE_BYTES")
    assert worker.source_bytes.in_use == 0


def test_the_workers_source_bytes_are_reserved_and_a_job_waits_for_room(open_worker, make_worker, volume, site):
    """A job reserves the most its items can bring (here 200,000 bytes: the whole worker budget)
    before reading; the next job waits for room instead of failing, or is refused after the wait."""
    impatient = make_worker(
        **SOURCES,
        input_root=str(volume),
        max_job_source_bytes=200_000,
        max_worker_source_bytes=200_000,
        max_admission_wait_ms=300,
    )
    for worker, patient in ((open_worker, True), (impatient, False)):
        holder = threading.Thread(target=predict, args=(worker, {"url": site.url("/half")}))
        holder.start()  # reads 150,000 bytes, then its server stalls until the fetch's 1.5 s limit
        try:
            deadline = time.monotonic() + 1.0
            while worker.source_bytes.in_use < 200_000 and time.monotonic() < deadline:
                time.sleep(0.02)
            state = worker.handle({"input": {"op": "health"}})["decoding"]
            assert state["source_bytes_in_flight"] == 200_000, state
            answer, waited = predict(worker, {"path": "three.png"})
            if patient:
                assert answer["status"] == "success" and waited > 0.5, (answer, waited)
            else:
                assert_error(answer, ErrorCode.RATE_LIMITED, None, "FASTBACKEND_MAX_WORKER_SOURCE_BYTES")
        finally:
            holder.join(5)
        assert worker.source_bytes.in_use == 0


# -- 4: waiting on the network holds no CPU slot -----------------------------------------------------
def test_slow_url_jobs_do_not_hold_ping_health_or_a_base64_predict(open_worker, site):
    slots = max(2, os.cpu_count() or 1)  # the batcher's CPU slots (worker/batching.py)
    b64 = digit("digits", 3)[0]

    async def main() -> dict[str, float]:
        slow = [
            asyncio.ensure_future(
                open_worker.handle_async({"id": f"s{i}", "input": {"images": [{"url": site.url(f"/stall?{i}")}]}})
            )
            for i in range(slots + 1)
        ]
        await asyncio.sleep(0.3)  # every slow job is waiting on its server
        times = {}
        for name, job in (("ping", {"op": "ping"}), ("health", {"op": "health"}), ("predict", {"images": [b64]})):
            start = time.monotonic()
            answer = await open_worker.handle_async({"id": name, "input": job})
            times[name] = time.monotonic() - start
            assert answer["status"] == "success", answer
        assert not any(job.done() for job in slow), "the slow jobs were still waiting"
        await asyncio.gather(*slow)
        return times

    times = asyncio.run(main())
    assert max(times.values()) < 0.5, times
