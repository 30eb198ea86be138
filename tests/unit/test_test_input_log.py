"""Reading --test_input's answer from the log the RunPod SDK's own logger writes (invoke, check --run)."""

from __future__ import annotations

import contextlib
import io

import pytest
from runpod.serverless.modules.rp_logger import RunPodLogger

from fastbackend.local import TestInputRun, parse_test_input


def sdk_log(*lines: tuple[str, str]) -> str:
    """Lines as the SDK prints them, at its default DEBUG level."""
    logger, out = RunPodLogger(), io.StringIO()
    before = logger.level
    logger.level = "DEBUG"
    try:
        with contextlib.redirect_stdout(out):
            for level, message in lines:
                logger.log(message, level)
    finally:
        logger.level = before
    return out.getvalue()


def read(log: str) -> TestInputRun:
    return parse_test_input(0, 0.0, log)


def test_a_large_input_cut_in_the_sdks_echo_does_not_hide_the_result():
    job = {"id": "local", "input": {"images": "iVBORw0KGgo" + "A" * 6000}}  # a 4.5 KB image
    result = {"output": {"status": "success", "predictions": [{"label": "6", "score": 0.9}]}}
    log = sdk_log(("DEBUG", f"Retrieved local job: {job}"), ("INFO", f"Job result: {result}"))
    assert "...TRUNCATED" in log
    assert read(log).output == result["output"]


def test_a_cut_result_is_reported_as_such():
    result = {"output": {"pixels": [[0.5] * 2000]}}
    with pytest.raises(ValueError, match="cut the job result"):
        _ = read(sdk_log(("INFO", f"Job result: {result}"))).output


def test_a_failed_job_gives_its_error():
    run = read(sdk_log(("ERROR", "Job local failed with error: INVALID_INPUT: top_k: bad")))
    assert run.error == "INVALID_INPUT: top_k: bad" and run.output is None
