"""The endpoint client: RunPod's request limits, its URL layout, polling, and a local round trip."""

from __future__ import annotations

import base64
import io
import json

import pytest
from conftest import ADAPTER_EXAMPLES, digit
from fixtures.fake_runpod import API_KEY, ENDPOINT, FakeRunPod, serve

from fastbackend.cli import main
from fastbackend.client import ApiClient, ClientError, Mode, PayloadTooLarge, Target, check_request_size, encode_job
from fastbackend.display import ProgressLine, answer_table
from worker.config import RUN_LIMIT_BYTES, RUNSYNC_LIMIT_BYTES

_OVERHEAD = len(encode_job({"input": {"images": ""}}))


def job_of_size(size: int) -> dict:
    """A job whose encoded body is exactly `size` bytes."""
    job = {"input": {"images": "A" * (size - _OVERHEAD)}}
    assert len(encode_job(job)) == size
    return job


@pytest.fixture
def fake():
    fake = FakeRunPod()
    server = serve(fake)
    yield fake
    server.shutdown()


@pytest.fixture
def endpoint_env(fake, monkeypatch):
    monkeypatch.setenv("RUNPOD_API_KEY", API_KEY)
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", fake.url)


def client_for(fake: FakeRunPod) -> ApiClient:
    return ApiClient(Target.endpoint(ENDPOINT, API_KEY, fake.url), poll_interval=0.01)


# -- RunPod's limits: 10 MB on /run, 20 MB on /runsync --------------------------------------
@pytest.mark.parametrize(
    "mode, size, allowed",
    [
        (Mode.ASYNC, RUN_LIMIT_BYTES, True),
        (Mode.ASYNC, RUN_LIMIT_BYTES + 1, False),
        (Mode.SYNC, RUN_LIMIT_BYTES + 1, True),
        (Mode.SYNC, RUNSYNC_LIMIT_BYTES, True),
        (Mode.SYNC, RUNSYNC_LIMIT_BYTES + 1, False),
        (Mode.ASYNC, RUNSYNC_LIMIT_BYTES + 1, False),
    ],
)
def test_size_check_at_each_boundary(mode, size, allowed):
    if allowed:
        check_request_size(size, mode)
    else:
        with pytest.raises(PayloadTooLarge):
            check_request_size(size, mode)


def test_over_10mb_async_is_refused_with_advice_to_use_sync():
    with pytest.raises(PayloadTooLarge, match=r"10,000,000 byte limit on /run: use --sync"):
        check_request_size(RUN_LIMIT_BYTES + 1, Mode.ASYNC)


@pytest.mark.parametrize("mode", [Mode.SYNC, Mode.ASYNC])
def test_over_20mb_is_refused_on_both_routes_with_advice_to_keep_inputs_out(mode):
    with pytest.raises(PayloadTooLarge) as refused:
        check_request_size(RUNSYNC_LIMIT_BYTES + 1, mode)
    assert "network volume" in str(refused.value) and "fewer or smaller images" in str(refused.value)
    assert "--sync" not in str(refused.value)


@pytest.mark.parametrize("mode", [Mode.ASYNC, Mode.SYNC])
def test_a_body_exactly_at_the_limit_is_sent_and_one_byte_more_is_not(fake, mode):
    client = client_for(fake)
    result = client.invoke(job_of_size(mode.limit), mode)
    assert result.ok and result.request_bytes == mode.limit
    assert fake.seen[0].path == f"/v2/{ENDPOINT}{mode.route}" and fake.seen[0].size == mode.limit
    sent = len(fake.seen)
    with pytest.raises(PayloadTooLarge):
        client.invoke(job_of_size(mode.limit + 1), mode)
    assert len(fake.seen) == sent, "a refused body must not reach the network"


def _image_file(tmp_path, name, payload_bytes):
    """A file whose base64 makes the invoke body a little over `payload_bytes`."""
    path = tmp_path / name
    path.write_bytes(b"\x89PNG" + bytes(int(payload_bytes * 3 / 4) + 1000))
    return path


def test_cli_refuses_async_over_10mb_without_sending(fake, endpoint_env, tmp_path, capsys):
    image = _image_file(tmp_path, "big.png", RUN_LIMIT_BYTES)
    assert main(["invoke", str(image), "--endpoint", ENDPOINT, "--async"]) == 2
    err = capsys.readouterr().err
    assert "refused, nothing sent" in err and "use --sync" in err and fake.seen == []


def test_cli_refuses_over_20mb_even_with_sync(fake, endpoint_env, tmp_path, capsys):
    image = _image_file(tmp_path, "huge.png", RUNSYNC_LIMIT_BYTES)
    assert main(["invoke", str(image), "--endpoint", ENDPOINT, "--sync"]) == 2
    assert "network volume" in capsys.readouterr().err and fake.seen == []


# -- a deployed endpoint: URL layout, auth, polling with progress ---------------------------
def test_endpoint_urls_follow_the_runpod_sdk_layout(monkeypatch):
    monkeypatch.delenv("RUNPOD_ENDPOINT_BASE_URL", raising=False)
    import runpod

    target = Target.endpoint(ENDPOINT, API_KEY)
    assert target.base_url + "/runsync" == f"{runpod.endpoint_url_base}/{ENDPOINT}/runsync"
    assert target.status_method == "GET" and Target.local("http://x:1/").status_method == "POST"


@pytest.mark.parametrize("endpoint_id, key", [("", API_KEY), ("a/b", API_KEY), (ENDPOINT, ""), (ENDPOINT, "  ")])
def test_an_endpoint_needs_an_id_and_a_key(endpoint_id, key):
    with pytest.raises(ClientError):
        Target.endpoint(endpoint_id, key)


def test_async_invoke_polls_status_shows_progress_and_prints_the_table(fake, endpoint_env, tmp_path, capsys):
    image = tmp_path / "seven.png"
    image.write_bytes(base64.b64decode(digit("inverted", 7)[0]))
    code = main(["invoke", str(image), "--endpoint", ENDPOINT, "--async", "--adapter", "inverted"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert [(s.method, s.path) for s in fake.seen] == [("POST", f"/v2/{ENDPOINT}/run")] + [
        ("GET", f"/v2/{ENDPOINT}/status/job-1")
    ] * 3
    assert all(s.auth == f"Bearer {API_KEY}" for s in fake.seen)
    progress = [line for line in err.splitlines() if line.startswith("job job-1 on endpoint")]
    assert [line.split(": ")[1].split()[0] for line in progress] == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    assert "via /run" in err and "queued 1.20 s" in err
    row = next(line for line in out.splitlines() if line.startswith(str(image)))
    assert row.split()[1:3] == ["7", "0.930"] and "adapter: inverted" in out


def test_a_runsync_answered_before_the_job_ends_is_followed_on_status(fake):
    fake.runsync_status, fake.polls = "IN_PROGRESS", ["COMPLETED"]
    result = client_for(fake).invoke({"input": {"op": "ping"}}, Mode.SYNC)
    assert result.ok and [s.path.rsplit("/", 2)[-2:] for s in fake.seen] == [[ENDPOINT, "runsync"], ["status", "job-1"]]


def test_a_failed_job_prints_its_coded_error_and_exits_1(fake, endpoint_env, tmp_path, capsys):
    fake.runsync_status, fake.error = "FAILED", "UNKNOWN_ADAPTER: no adapter 'x'"
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG")
    assert main(["invoke", str(image), "--endpoint", ENDPOINT]) == 1
    assert "error: UNKNOWN_ADAPTER: no adapter 'x'" in capsys.readouterr().err


def test_a_worker_refusing_a_body_runpod_took_gets_a_hint(fake, endpoint_env, tmp_path, capsys):
    fake.runsync_status, fake.error = "FAILED", "PAYLOAD_TOO_LARGE: input is over 10,000,000 bytes"
    image = _image_file(tmp_path, "big.png", RUN_LIMIT_BYTES)
    assert main(["invoke", str(image), "--endpoint", ENDPOINT, "--sync"]) == 1
    assert "set FASTBACKEND_MAX_PAYLOAD_BYTES (up to 20000000)" in capsys.readouterr().err


def test_a_wrong_api_key_is_explained(fake, endpoint_env, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("RUNPOD_API_KEY", "wrong")
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG")
    assert main(["invoke", str(image), "--endpoint", ENDPOINT]) == 1
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "check RUNPOD_API_KEY" in err


def test_a_job_past_the_timeout_is_cancelled(fake):
    fake.polls = ["IN_QUEUE"]
    with pytest.raises(ClientError, match="still IN_QUEUE after 0 s; cancelled it"):
        client_for(fake).invoke({"input": {"op": "ping"}}, Mode.ASYNC, max_wait=0.05)
    assert fake.seen[-1].method == "POST" and fake.seen[-1].path == f"/v2/{ENDPOINT}/cancel/job-1"


# -- what the user sees ------------------------------------------------------------------
class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_redraws_one_line_on_a_terminal_and_logs_only_changes_elsewhere():
    log, tty = io.StringIO(), _Tty()
    for stream in (log, tty):
        line = ProgressLine(stream)
        for status, t in [("IN_QUEUE", 0.1), ("IN_QUEUE", 0.6), ("IN_PROGRESS", 1.2), ("COMPLETED", 1.5)]:
            line("j1", status, t)
        line.close()
    assert log.getvalue().count("\n") == 3 and "\r" not in log.getvalue()
    assert tty.getvalue().count("\r") == 4 and tty.getvalue().endswith("\n")


def test_answer_table_has_a_row_per_image_and_a_summary():
    output = {
        "adapter": None,
        "timings": {"total_ms": 3.25},
        "predictions": [
            {"label": "6", "score": 0.9876, "top_k": [{"label": "6", "score": 0.9876}, {"label": "5", "score": 0.01}]},
            {"label": "1", "score": 0.5, "top_k": [{"label": "1", "score": 0.5}]},
        ],
    }
    lines = answer_table(["a.png", "dir/b.png"], output).splitlines()
    assert lines[0].split() == ["image", "label", "score", "top-k"] and set(lines[1]) <= {"-", " "}
    assert lines[2].split()[:3] == ["a.png", "6", "0.988"] and lines[2].endswith("6 0.988, 5 0.010")
    assert lines[3].split()[:3] == ["dir/b.png", "1", "0.500"]
    assert lines[4] == "adapter: none (base model) | 2 image(s) | 3.2 ms on the worker"


# -- the same client against RunPod's local API (conftest's shared local_api) ---------------
@pytest.mark.parametrize("mode", ["--sync", "--async"])
def test_local_round_trip_through_the_cli(local_api, tmp_path, capsys, mode):
    files, labels = [], []
    for index in ADAPTER_EXAMPLES:
        image, label = digit("inverted", index)
        path = tmp_path / f"inverted-{index}.png"
        path.write_bytes(base64.b64decode(image))
        files.append(str(path))
        labels.append(str(label))
    code = main(["invoke", *files, "--adapter", "inverted", "--local", local_api.url, mode])
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = [line.split() for line in out.splitlines() if line.startswith(str(tmp_path))]
    assert [row[1] for row in rows] == labels
    assert f"via /run{'sync' if mode == '--sync' else ''} " in err


def test_local_round_trip_json_and_a_refused_job(local_api, tmp_path, capsys):
    path = tmp_path / "six.png"
    image, label = digit("digits", 0)
    path.write_bytes(base64.b64decode(image))
    assert main(["invoke", str(path), "--local", local_api.url, "--json", "--top-k", "2"]) == 0
    output = json.loads(capsys.readouterr().out)
    assert output["predictions"][0]["label"] == str(label) and len(output["predictions"][0]["top_k"]) == 2
    assert main(["invoke", str(path), "--local", local_api.url, "--adapter", "nope"]) == 1
    assert "UNKNOWN_ADAPTER" in capsys.readouterr().err


def test_the_api_key_is_not_sent_to_another_host_on_redirect():
    import http.server
    import threading
    import urllib.request

    from fastbackend.client import open_url

    seen: dict[str, str | None] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.path.startswith("/away"):  # the API host sends the client elsewhere
                self.send_response(302)
                self.send_header("Location", f"http://localhost:{self.server.server_port}/landed")
            elif self.path.startswith("/here"):
                self.send_response(302)
                self.send_header("Location", "/landed-here")
            else:
                seen[self.path] = self.headers.get("Authorization")
                self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        for path in ("/away", "/here"):
            request = urllib.request.Request(base + path, headers={"Authorization": "Bearer secret"})
            with open_url(request, 10) as response:
                assert response.status == 200
    finally:
        server.shutdown()
    assert seen == {"/landed": None, "/landed-here": "Bearer secret"}


def test_local_invoke_of_embed_and_of_a_task_field(local_api, tmp_path, capsys):
    path = tmp_path / "six.png"
    path.write_bytes(base64.b64decode(digit("digits", 0)[0]))
    assert main(["invoke", str(path), "--local", local_api.url, "--op", "embed", "--normalize", "--json"]) == 0
    output = json.loads(capsys.readouterr().out)
    assert output["op"] == "embed" and output["normalized"] is True and len(output["embeddings"]) == 1
    assert abs(sum(v * v for v in output["embeddings"][0]) - 1) < 1e-5
    assert main(["invoke", str(path), "--local", local_api.url, "--op", "embed", "--encoding-format", "base64"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(str(path)))
    assert row.split()[1:3] == [str(output["dimensions"]), "base64"]
    # a field the served task (image-classification) does not take is refused, naming it
    assert main(["invoke", str(path), "--local", local_api.url, "--threshold", "0.5"]) == 1
    assert "INVALID_INPUT: unknown key 'threshold'" in capsys.readouterr().err
