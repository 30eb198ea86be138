"""Integration: the generated handler under RunPod's own local tooling, in real processes."""

from __future__ import annotations

import json

import pytest
from conftest import ADAPTER_EXAMPLES, digit

from fastbackend.local import run_test_input


@pytest.fixture(scope="module")
def env(models_dir):
    return {
        "FASTBACKEND_BASE_MODEL": str(models_dir / "base"),
        "FASTBACKEND_ADAPTERS_DIR": str(models_dir / "adapters"),
    }


@pytest.fixture(scope="module")
def api(local_api):
    return local_api


@pytest.fixture(scope="module")
def inverted_job():
    image, label = digit("inverted", ADAPTER_EXAMPLES[1])
    return {"input": {"images": image, "adapter": "inverted", "top_k": 3}}, str(label)


@pytest.fixture(scope="module")
def inverted_test_input(root, env, inverted_job):
    """One `--test_input` run of the inverted job (a process start each), read by two tests."""
    return run_test_input(inverted_job[0], root, env)


def test_runsync_answers_with_the_prediction(api, inverted_job):
    job, label = inverted_job
    answer = api.runsync(job)
    assert answer["status"] == "COMPLETED"
    assert answer["output"]["predictions"][0]["label"] == label
    assert answer["output"]["adapter"] == "inverted"


def test_run_then_status_answers_with_the_prediction(api, inverted_job):
    job, label = inverted_job
    answer = api.run_and_wait(job)
    assert answer["status"] == "COMPLETED" and answer["output"]["predictions"][0]["label"] == label


def test_a_bad_job_fails_with_a_coded_string_and_the_server_stays_healthy(api, inverted_job):
    answer = api.runsync({"input": {"images": "x", "adapter": "../secrets"}})
    assert answer["status"] == "FAILED" and answer["error"].startswith("INVALID_INPUT: adapter")
    assert api.runsync(inverted_job[0])["status"] == "COMPLETED"


def test_test_input_gives_the_same_output_as_the_local_api(api, inverted_job, inverted_test_input):
    job, label = inverted_job
    local = inverted_test_input
    assert local.returncode == 0, local.log[-3000:]
    served = api.runsync(job)["output"]
    assert local.output["predictions"] == served["predictions"]
    assert local.output["predictions"][0]["label"] == label


def test_committed_test_input_json_predicts_its_digit(root, env):
    local = run_test_input(None, root, env)
    assert local.returncode == 0, local.log[-3000:]
    assert local.output["predictions"][0]["label"] == "6"
    assert json.loads((root / "test_input.json").read_text())["input"]["images"].startswith("iVBORw0KGgo")


def test_log_lines_are_json_and_carry_no_image_data(inverted_job, inverted_test_input):
    job, _ = inverted_job
    local = inverted_test_input
    lines = [line for line in local.log.splitlines() if '"logger":"fastbackend"' in line]
    ours = [json.loads(line) for line in lines]
    events = [entry["event"] for entry in ours]
    # setup logs each adapter folder it found or skipped, then setup.done, then the job
    assert "setup.done" in events and "job.done" in events
    assert events.index("setup.done") < events.index("job.done")
    assert all(e.startswith("adapter") for e in events[: events.index("setup.done")]), events
    done = next(e for e in ours if e["event"] == "job.done")
    assert {"time", "level", "job_id", "op", "duration_ms", "rss_mb", "code"} <= set(done)
    assert not any(job["input"]["images"][:32] in line for line in lines)


def test_a_failed_test_input_job_exits_non_zero(root, env):
    local = run_test_input({"input": {"op": "nope"}}, root, env)
    assert local.returncode == 1 and "UNKNOWN_OP" in local.error
