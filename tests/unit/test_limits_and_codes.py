"""Codes in the right order and of the right kind, and no error answer over the output limit (model-free)."""

from __future__ import annotations

import json

import pytest

from worker.config import ConfigError, WorkerConfig
from worker.errors import ERROR_BODY_MAX_BYTES, ErrorCode, WorkerError, error_response
from worker.limits import check_payload
from worker.schema import parse_input


@pytest.mark.parametrize(
    "overrides",
    [
        {"max_queued_images": 10, "max_batch": 64},
        {"max_worker_pixels": 1000, "max_job_pixels": 2000},
        {"max_output_bytes": 100},
    ],
)
def test_contradictory_limits_are_refused_at_startup(overrides):
    with pytest.raises(ConfigError):
        WorkerConfig(**overrides)


def test_contradictory_limits_from_the_environment_name_the_setting():
    with pytest.raises(ConfigError, match="max_queued_images"):
        WorkerConfig.from_env({"FASTBACKEND_MAX_QUEUED_IMAGES": "10"})


@pytest.mark.parametrize(
    "job_input", [{"op": "echo", "payload": float("nan")}, {"op": "echo", "payload": [float("-inf")]}]
)
def test_what_json_cannot_carry_is_invalid_input(job_input):
    with pytest.raises(WorkerError) as caught:
        check_payload(job_input, 10_000_000)
    assert caught.value.code is ErrorCode.INVALID_INPUT


def test_a_4301_digit_integer_is_invalid_input_not_internal():
    with pytest.raises(WorkerError) as caught:
        check_payload({"op": "echo", "payload": 10**4300}, 10_000_000)
    assert caught.value.code is ErrorCode.INVALID_INPUT
    check_payload({"op": "echo", "payload": 10**300}, 10_000_000)  # large but printable: fine


def test_an_error_quoting_a_huge_key_stays_small():
    key = "k" * 9_900_000
    with pytest.raises(WorkerError) as caught:
        parse_input({"images": "x", key: 1})
    body = error_response(caught.value, "j" * 1_000_000)
    size = len(json.dumps(body))
    assert size < ERROR_BODY_MAX_BYTES and body["error"].startswith("INVALID_INPUT: ")
    assert body["message"].endswith("...") and body["field"].endswith("...")


def test_escapes_count_towards_the_clip():
    body = error_response(WorkerError(ErrorCode.INVALID_INPUT, "\x00" * 50_000, field="\u2603" * 9999), None)
    assert len(json.dumps(body)) < ERROR_BODY_MAX_BYTES
