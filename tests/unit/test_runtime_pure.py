"""The runtime's pure parts, with no model loaded: input parsing, image headers, payload sizing,
config and the error shape (STYLE 2 and 14: the parser is tested with no model)."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest
from conftest import png_header_only

from worker.config import ENV_VARS, ConfigError, WorkerConfig
from worker.decoding import Header, read_header
from worker.errors import ErrorCode, WorkerError, classify, error_response
from worker.limits import check_payload, payload_size
from worker.schema import parse_input


@pytest.mark.parametrize(
    ("raw", "code", "field"),
    [
        ("not an object", ErrorCode.INVALID_INPUT, "input"),
        ({"op": 3}, ErrorCode.INVALID_INPUT, "op"),
        ({"op": "nope"}, ErrorCode.UNKNOWN_OP, "op"),
        ({"op": "predict", "images": "x", "surprise": 1}, ErrorCode.INVALID_INPUT, "surprise"),
    ],
)
def test_bad_input_gets_a_code_and_names_the_field(raw, code, field):
    with pytest.raises(WorkerError) as caught:
        parse_input(raw)
    assert caught.value.code == code and caught.value.field == field


def test_op_defaults_to_predict_and_ping_needs_nothing():
    assert type(parse_input({"images": "aGk="})).__name__ == "PredictInput"
    assert type(parse_input({"op": "ping"})).__name__ == "PingInput"


def test_read_header_reads_sizes_without_decoding():
    assert read_header(png_header_only(700, 600), limits=WorkerConfig()) == Header("PNG", 700, 600)
    for bad in (b"GIF89a", b"\x89PNG\r\n\x1a\n" + b"\x00" * 4, b"\xff\xd8\xff\xd9"):
        with pytest.raises(WorkerError) as caught:
            read_header(bad, limits=WorkerConfig())
        assert caught.value.code is ErrorCode.IMAGE_DECODE_FAILED


def test_payload_size_bounds_the_json_size_and_stops_past_the_limit():
    body = {"images": ["a" * 1000, "b" * 500], "top_k": 3, "adapter": None}
    assert payload_size(body, 10**9) >= len(json.dumps(body))
    assert payload_size({"x": "é" * 10}, 10**9) >= len(json.dumps({"x": "é" * 10}, ensure_ascii=False).encode())
    check_payload(body, 10_000)
    with pytest.raises(WorkerError) as caught:
        check_payload(body, 1_000)
    assert caught.value.code == ErrorCode.PAYLOAD_TOO_LARGE
    deep: list = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(WorkerError, match="nested"):
        payload_size(deep, 10**9)


def test_config_from_env_uses_defaults_and_names_a_bad_variable():
    assert WorkerConfig.from_env({}) == WorkerConfig()
    ints = [f.name for f in fields(WorkerConfig) if f.type == "int"]
    with pytest.raises(ConfigError, match=ENV_VARS[ints[0]]):
        WorkerConfig.from_env({ENV_VARS[ints[0]]: "many"})


def test_every_failure_has_one_shape_with_a_string_error():
    internal = error_response(classify(KeyError("secret input text")), "job-1")
    assert internal["code"] == "INTERNAL" and isinstance(internal["error"], str)
    assert "secret input text" not in json.dumps(internal)  # internal errors do not echo input
    oom = error_response(classify(MemoryError()), None)
    assert oom["code"] == "OUT_OF_MEMORY" and oom["refresh_worker"] is True
    bad = error_response(WorkerError(ErrorCode.INVALID_INPUT, "top_k must be positive", field="top_k"), "j")
    assert bad["field"] == "top_k" and "refresh_worker" not in bad
